"""Import CSV box annotations (``filename,width,height,class,xmin,ymin,xmax,ymax``, pixels) to YOLO.

One row per box. Bad rows (missing or unreadable image, non-numeric value, box outside the image,
empty box, unknown class, size disagreeing with an earlier row of the same image or with the
image's aspect ratio, duplicate) are reported as ``file:line: reason`` and skipped; an image
keeps its good rows, and an image with none is left out. Boxes up to 1 px outside the image are clipped. Class names are the given ``--names``
or, collected from the file, in taxonomy order when all are SmartCash classes, else sorted.
Images are copied (or linked) into ``images/<split>``; the source is never moved.

    python -m smartcash.data.import_csv --csv FILE --images DIR --out DIR [--names ...]
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from smartcash.cli import add_layout_arguments, write_into_folder
from smartcash.data.dataset_config import duplicate_names
from smartcash.data.errors import DatasetError, not_utf8
from smartcash.data.yolo_writer import (ImportProblem, ImportSummary, TransferMode, YoloLayoutWriter,
                                        check_output_folder, check_split_name, declared_size_problem, flat_name,
                                        pixel_box_to_yolo)
from smartcash.taxonomy import load_taxonomy

logger = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")
_NUMERIC = ("width", "height", "xmin", "ymin", "xmax", "ymax")


@dataclass(frozen=True)
class CsvBox:
    """One good CSV row: its image (resolved), class name and normalised (cx, cy, w, h)."""

    image: Path
    filename: str
    class_name: str
    box: tuple[float, float, float, float]


def collected_names(found: Sequence[str]) -> tuple[str, ...]:
    """Class names in a stable order: taxonomy order when every name is a SmartCash class, else sorted."""
    unique = sorted(set(found))
    taxonomy = load_taxonomy()
    ids = {name: taxonomy.lookup(name) for name in unique}
    if unique and all(i is not None for i in ids.values()):
        return tuple(sorted(unique, key=lambda name: (ids[name], name)))
    return tuple(unique)


class _RowChecker:
    """Checks CSV rows one at a time, remembering image sizes and rows seen (for consistency)."""

    def __init__(self, csv_path: Path, images_dir: Path, names: Sequence[str] | None) -> None:
        self.csv_path, self.images_dir = csv_path, images_dir
        self.names = set(names) if names else None
        self._images: dict[str, Path | None] = {}
        self._sizes: dict[str, tuple[float, float, int]] = {}
        self._size_problems: dict[str, str] = {}
        self._seen: dict[tuple[object, ...], int] = {}

    def _image(self, filename: str) -> Path | None:
        if filename not in self._images:
            candidates = (self.images_dir / filename, self.images_dir / Path(filename).name)
            found = next((c for c in candidates if c.is_file()), None)
            # Normalised, links not followed: `a.jpg`, `./a.jpg` and `export/a.jpg` (found by base name)
            # are one image; two names linked to one stored file (git-annex, DVC) stay two images.
            self._images[filename] = Path(os.path.abspath(found)) if found is not None else None
        return self._images[filename]

    def check(self, row: dict[str, str | None], line: int) -> tuple[CsvBox | None, str]:
        """(CsvBox, '') for a good row, else (None, reason)."""
        text = {column: (row.get(column) or "").strip() for column in COLUMNS}
        empty = [column for column in COLUMNS if not text[column]]
        if empty:
            return None, f"empty {', '.join(empty)}"
        values: dict[str, float] = {}
        for column in _NUMERIC:
            try:
                values[column] = float(text[column])
            except ValueError:
                return None, f"non-numeric {column} {text[column][:20]!r}"
            if not math.isfinite(values[column]):
                return None, f"non-finite {column} {text[column]!r}"
        filename, class_name = text["filename"], text["class"]
        image = self._image(filename)
        if image is None:
            return None, f"image {filename!r} not found in {self.images_dir}"
        if self.names is not None and class_name not in self.names:
            return None, f"class {class_name!r} not in --names"
        width, height = values["width"], values["height"]
        first = self._sizes.setdefault(str(image), (width, height, line))
        if first[:2] != (width, height):
            return None, f"size {width:g}x{height:g} differs from line {first[2]} ({first[0]:g}x{first[1]:g})"
        if width > 0 and height > 0:
            if str(image) not in self._size_problems:
                self._size_problems[str(image)] = declared_size_problem(image, width, height)
            if self._size_problems[str(image)]:
                return None, self._size_problems[str(image)]
        box, reason = pixel_box_to_yolo(values["xmin"], values["ymin"], values["xmax"], values["ymax"],
                                        width, height)
        if box is None:
            return None, reason
        key = (str(image), class_name, values["xmin"], values["ymin"], values["xmax"], values["ymax"])
        if key in self._seen:
            return None, f"duplicate of line {self._seen[key]}"
        self._seen[key] = line
        return CsvBox(image, filename, class_name, box), ""


def read_csv(csv_path: Path, images_dir: Path,
             names: Sequence[str] | None = None) -> tuple[list[CsvBox], list[ImportProblem]]:
    """Good boxes and the problems of the skipped rows (line numbers as in the file, header = 1)."""
    try:
        handle = open(csv_path, encoding="utf-8-sig", newline="")
    except OSError as error:
        raise DatasetError(f"{csv_path}: cannot read the CSV ({error})") from error
    with handle:
        try:
            return _read_rows(csv_path, handle, images_dir, names)
        except UnicodeDecodeError as error:
            raise DatasetError(f"{csv_path}: {not_utf8(error)}") from error


def _read_rows(csv_path: Path, handle: Any, images_dir: Path,
               names: Sequence[str] | None) -> tuple[list[CsvBox], list[ImportProblem]]:
    """read_csv's rows from an open file."""
    reader = csv.DictReader(handle)
    header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DatasetError(f"{csv_path}:1: header lacks {', '.join(missing)} "
                           f"(expected the columns {','.join(COLUMNS)})")
    reader.fieldnames = header
    checker = _RowChecker(csv_path, images_dir, names)
    boxes: list[CsvBox] = []
    problems: list[ImportProblem] = []
    for row in reader:
        if row.get(None):  # DictReader puts surplus values under the key None
            problems.append(ImportProblem(str(csv_path), reader.line_num,
                                          "more values than header columns"))
            continue
        box, reason = checker.check(row, reader.line_num)
        if box is None:
            problems.append(ImportProblem(str(csv_path), reader.line_num, reason))
        else:
            boxes.append(box)
    return boxes, problems


def import_csv(csv_path: Path, images_dir: Path, out_dir: Path, names: Sequence[str] | None = None,
               mode: TransferMode = "copy", split: str = "train") -> ImportSummary:
    """Convert a CSV of pixel boxes into a YOLO layout under ``out_dir`` (one split).

    Args:
        csv_path: the CSV (header ``filename,width,height,class,xmin,ymin,xmax,ymax``).
        images_dir: where ``filename`` is found (as a relative path, else by its base name).
        out_dir: a new or empty folder; gets ``images/<split>``, ``labels/<split>``, ``data.yaml``.
        names: class names in class-id order (rows of other classes are skipped); default: collected.
        mode: ``copy``, ``hardlink`` or ``symlink`` for the images.
        split: the split folder to write (make train/val/test later with ``smartcash.data.split``).

    Raises:
        DatasetError: unreadable CSV, a header without the needed columns, a non-empty ``out_dir``.
    """
    csv_path, images_dir, out_dir = Path(csv_path), Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: --images folder not found")
    check_split_name(split)
    repeated = duplicate_names([str(n) for n in names or ()])
    if repeated:
        raise DatasetError(f"--names: {repeated}: each class needs its own name")
    check_output_folder(out_dir)
    boxes, problems = read_csv(csv_path, images_dir, names)
    if not boxes:
        first = f" (first: {problems[0]})" if problems else ""
        raise DatasetError(f"{csv_path}: no usable row, {len(problems)} skipped{first}; nothing was written")
    class_names = tuple(names) if names else collected_names([b.class_name for b in boxes])
    class_ids = {name: i for i, name in enumerate(class_names)}
    by_image: dict[Path, list[CsvBox]] = {}  # one image however its rows spell its path
    for box in boxes:
        by_image.setdefault(box.image, []).append(box)
    writer = YoloLayoutWriter(out_dir, class_names, mode)
    for rows in sorted(by_image.values(), key=lambda rows: rows[0].filename):
        array = np.array([[class_ids[b.class_name], *b.box] for b in rows], np.float64)
        writer.add_file(split, rows[0].image, array, name=flat_name(Path(rows[0].filename)))
    data_yaml = writer.finish()
    if problems:
        logger.warning("%s: %d bad rows skipped (first: %s)", csv_path, len(problems), problems[0])
    return ImportSummary(len(by_image), len(boxes), len(problems), class_names, tuple(problems), data_yaml)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 0 on success (bad rows are reported, not fatal), 2 on an error."""
    parser = argparse.ArgumentParser(description="Import CSV box annotations into a YOLO dataset.")
    parser.add_argument("--csv", type=Path, required=True, help=f"CSV with the header {','.join(COLUMNS)}")
    parser.add_argument("--names", nargs="+", help="class names in class-id order (default: collected)")
    add_layout_arguments(parser, "folder holding the CSV's images")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    summary, code = write_into_folder(
        lambda: import_csv(args.csv, args.images, args.out, args.names, args.mode or "copy", args.split), args.out)
    if summary is None:
        return code
    print(summary.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
