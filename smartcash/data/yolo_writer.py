"""Writes a YOLO dataset layout (``images/<split>``, ``labels/<split>``, ``data.yaml``).

One writer shared by the CSV and COCO importers, the splitter and the synthetic generator, so
every dataset SmartCash produces has the same shape: relative paths in ``data.yaml``, one label
line ``class cx cy w h`` (normalised, 6 decimals) per box, and source files copied or linked but
never moved.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np
import yaml

logger = logging.getLogger(__name__)

#: How a source image reaches the new layout. The user's file is never moved.
TransferMode = Literal["copy", "hardlink", "symlink"]
TRANSFER_MODES: tuple[str, ...] = ("copy", "hardlink", "symlink")

#: Split names in the order ``data.yaml`` lists them.
SPLIT_ORDER: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class ImportProblem:
    """One skipped input record: where it is (file, line or record) and why it was skipped."""

    path: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class ImportSummary:
    """What an importer wrote: counts, the class names, the skipped records and ``data.yaml``."""

    images: int
    boxes: int
    skipped: int  # input records (CSV rows, COCO annotations) not imported
    names: tuple[str, ...]
    problems: tuple[ImportProblem, ...]
    data_yaml: Path

    def report(self, limit: int = 20) -> str:
        """A printable summary: the counts, then up to ``limit`` problems."""
        lines = [f"{self.images} images, {self.boxes} boxes, {len(self.names)} classes, "
                 f"{self.skipped} records skipped -> {self.data_yaml}"]
        lines += [str(p) for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more problems")
        return "\n".join(lines)


def transfer_file(source: Path, destination: Path, mode: TransferMode = "copy") -> None:
    """Copy, hard-link or symlink ``source`` to ``destination`` (the source is never moved).

    A hard link that cannot be made (another filesystem, no permission) falls back to a copy,
    with a debug log line; a symlink points at the absolute source path.
    """
    if mode not in TRANSFER_MODES:
        raise ValueError(f"transfer mode {mode!r} not one of {TRANSFER_MODES}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    if mode == "symlink":
        destination.symlink_to(Path(source).resolve())
        return
    if mode == "hardlink":
        try:
            os.link(source, destination)
            return
        except OSError as error:
            logger.debug("hard link %s -> %s failed (%s); copying instead", source, destination, error)
    shutil.copy2(source, destination)


def format_label_lines(boxes: np.ndarray) -> str:
    """YOLO label text for boxes (n, 5) [class, cx, cy, w, h] normalised; '' for no boxes."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    lines = [f"{int(round(b[0]))} {b[1]:.6f} {b[2]:.6f} {b[3]:.6f} {b[4]:.6f}" for b in boxes]
    return "".join(line + "\n" for line in lines)


def pixel_box_to_yolo(xmin: float, ymin: float, xmax: float, ymax: float, width: float, height: float,
                      tolerance: float = 1.0) -> tuple[tuple[float, float, float, float] | None, str]:
    """Normalised (cx, cy, w, h) of a pixel xyxy box, or (None, reason) when it is unusable.

    Corners up to ``tolerance`` pixels outside the image are clipped (exporters round boxes
    outwards); anything further out, or an empty box, is rejected with a reason.
    """
    if not (width > 0 and height > 0):
        return None, f"image size {width}x{height} must be positive"
    if not xmax > xmin:
        return None, f"xmax {xmax:g} <= xmin {xmin:g}"
    if not ymax > ymin:
        return None, f"ymax {ymax:g} <= ymin {ymin:g}"
    if xmin < -tolerance or ymin < -tolerance or xmax > width + tolerance or ymax > height + tolerance:
        return None, (f"box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) outside the "
                      f"{width:g}x{height:g} image")
    xmin, xmax = max(xmin, 0.0), min(xmax, float(width))
    ymin, ymax = max(ymin, 0.0), min(ymax, float(height))
    if xmax <= xmin or ymax <= ymin:
        return None, "box is empty after clipping to the image"
    return ((xmin + xmax) / 2 / width, (ymin + ymax) / 2 / height,
            (xmax - xmin) / width, (ymax - ymin) / height), ""


def declared_size_problem(path: Path, width: float, height: float) -> str:
    """'' when an image is readable and has the annotated aspect ratio, else the reason it is not.

    A copy resized at the same aspect ratio is fine (normalised boxes do not change); another
    aspect ratio means the boxes were drawn on a rotated or cropped version of the image.
    """
    from smartcash.data.images import probe_image  # lazy: PIL is needed only here

    probe = probe_image(path)
    if not probe.ok:
        return probe.problem
    declared, actual = width / height, probe.width / max(probe.height, 1)
    if abs(actual - declared) > 0.01 * declared:
        return (f"image is {probe.width}x{probe.height} but annotated as {width:g}x{height:g} "
                "(another aspect ratio: rotated or cropped after annotation?)")
    return ""


def check_split_name(split: str) -> None:
    """A split is a folder under ``images/`` and ``labels/``: one plain name, so nothing is
    written outside the output folder (``--split ../x`` replaced the files of ``x``).

    Raises:
        DatasetError: '', '.', '..', a name with '/' in it, or one too long for a file system.
    """
    from smartcash.cli import PLAIN_FOLDER_NAME_RULE, is_plain_folder_name
    from smartcash.data.errors import DatasetError

    if not is_plain_folder_name(str(split)):
        raise DatasetError(f"--split {split!r}: {PLAIN_FOLDER_NAME_RULE} (nothing was written)")


def check_output_folder(out_dir: Path) -> None:
    """An importer's or splitter's ``--out``: new, or an empty writable folder.

    Raises:
        DatasetError: a file, a non-empty folder, or a folder that cannot be written.
    """
    from smartcash.data.errors import DatasetError

    if out_dir.is_symlink() and not out_dir.exists():
        raise DatasetError(f"{out_dir}: --out is a link to {os.readlink(out_dir)}, which does not exist; give a new "
                           "folder (nothing was written)")
    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetError(f"{out_dir}: --out is a file; give a new folder (nothing was written)")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise DatasetError(f"{out_dir}: output folder is not empty (choose a new --out; nothing was written)")
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not (os.access(existing, os.W_OK) and existing.stat().st_mode & 0o222):
        raise DatasetError(f"{out_dir}: cannot write in {existing} (read-only; choose another --out)")


def flat_name(relative: Path) -> str:
    """A plain file name for a nested source path: ``a/b/c.jpg`` -> ``a__b__c.jpg``.

    The root of an absolute path and ``.``/``..`` parts are dropped, so the name can never point
    outside the folder it is written to (``/data/x.jpg`` -> ``data__x.jpg``).
    """
    path = Path(relative)
    parts = [part for part in path.parts if part not in (path.anchor, "", ".", "..")]
    return "__".join(parts) or "image"


def write_data_yaml(root: Path, names: Sequence[str], splits: Sequence[str],
                    extra: Mapping[str, object] | None = None) -> Path:
    """Write ``root/data.yaml`` with split paths relative to it, ``nc`` and ``names``.

    ``splits`` lists the split folders written; when ``val`` is missing it points at ``train``
    (logged), so the dataset still trains; split it properly with ``smartcash.data.split``.
    """
    root = Path(root)
    content: dict[str, object] = {}
    ordered = [s for s in SPLIT_ORDER if s in splits] + [s for s in splits if s not in SPLIT_ORDER]
    for split in ordered:
        content[split] = f"images/{split}"
    if "val" not in content and "train" in content:
        logger.warning("%s: no val split; data.yaml points val at images/train "
                       "(make one with python -m smartcash.data.split)", root)
        content["val"] = "images/train"
    content["nc"] = len(names)
    content["names"] = [str(n) for n in names]
    content.update(extra or {})
    path = root / "data.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(content, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


class YoloLayoutWriter:
    """Adds images and their boxes to a YOLO layout under ``root``; ``finish()`` writes data.yaml.

    File names are kept; a clash inside one split gets a ``_1``, ``_2`` ... suffix (logged),
    so nested source folders can be flattened without losing images. Names clash by STEM (case
    ignored): ``x.jpg`` and ``x.png`` would share the label file ``x.txt``. Every file is written
    under ``root``; a name with a folder in it is refused.
    """

    def __init__(self, root: Path, names: Sequence[str], mode: TransferMode = "copy") -> None:
        if mode not in TRANSFER_MODES:
            raise ValueError(f"transfer mode {mode!r} not one of {TRANSFER_MODES}")
        self.root = Path(root)
        self.names = tuple(str(n) for n in names)
        self.mode = mode
        self.counts: dict[str, int] = {}
        self._taken: dict[str, set[str]] = {}
        self._lock = threading.Lock()  # add_array may be called from a thread pool

    def _destination(self, split: str, name: str) -> Path:
        with self._lock:
            return self._reserve(split, name)

    def _reserve(self, split: str, name: str) -> Path:
        check_split_name(split)
        if not name or Path(name).name != name or name in (".", ".."):
            raise ValueError(f"{name!r}: not a plain file name (use flat_name); nothing is written outside "
                             f"{self.root}")
        taken = self._taken.setdefault(split, set())  # lower-cased stems: one label file per stem
        stem, suffix = Path(name).stem, Path(name).suffix
        candidate, number = name, 0
        while Path(candidate).stem.lower() in taken:
            number += 1
            candidate = f"{stem}_{number}{suffix}"
        if number:
            logger.info("%s: name %s already used in split %s; writing %s", self.root, name, split, candidate)
        taken.add(Path(candidate).stem.lower())
        self.counts[split] = self.counts.get(split, 0) + 1
        return self.root / "images" / split / candidate

    def _write_labels(self, split: str, image_path: Path, boxes: np.ndarray | None) -> None:
        label_path = self.root / "labels" / split / (image_path.stem + ".txt")
        label_path.parent.mkdir(parents=True, exist_ok=True)
        if boxes is not None:
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
            if len(boxes) and (boxes[:, 0].min() < 0 or boxes[:, 0].max() >= len(self.names)):
                raise ValueError(f"{label_path}: class id outside 0..{len(self.names) - 1}")
        label_path.write_text(format_label_lines(boxes if boxes is not None else np.zeros((0, 5))),
                              encoding="utf-8")

    def add_file(self, split: str, source: Path, boxes: np.ndarray | None, name: str | None = None) -> Path:
        """Copy/link an image file into ``split`` with its boxes (n, 5); returns the new path."""
        destination = self._destination(split, name or Path(source).name)
        transfer_file(Path(source), destination, self.mode)
        self._write_labels(split, destination, boxes)
        return destination

    def add_label_file(self, split: str, source: Path, label_source: Path | None,
                       name: str | None = None) -> Path:
        """Copy/link an image and copy its label file as it is (none: a background image)."""
        destination = self._destination(split, name or Path(source).name)
        transfer_file(Path(source), destination, self.mode)
        if label_source is not None:
            label_path = self.root / "labels" / split / (destination.stem + ".txt")
            label_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(label_source, label_path)  # labels are always copied, never linked
        return destination

    def add_array(self, split: str, name: str, image: np.ndarray, boxes: np.ndarray | None,
                  encode_params: Sequence[int] = ()) -> Path:
        """Encode an image array (H, W, 3) BGR uint8 under ``name`` with its boxes (n, 5).

        ``encode_params`` go to ``cv2.imwrite`` (e.g. ``[cv2.IMWRITE_JPEG_QUALITY, 92]``).
        """
        import cv2  # opencv is needed only for writers that encode arrays

        destination = self._destination(split, name)
        destination.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(destination), image, list(encode_params)):
            raise OSError(f"{destination}: cv2.imwrite failed (check the suffix and free space)")
        self._write_labels(split, destination, boxes)
        return destination

    def finish(self, extra: Mapping[str, object] | None = None) -> Path:
        """Write ``data.yaml`` for the splits added so far; returns its path."""
        for split in self.counts:
            (self.root / "labels" / split).mkdir(parents=True, exist_ok=True)
        return write_data_yaml(self.root, self.names, list(self.counts), extra)
