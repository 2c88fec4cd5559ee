"""A built-in synthetic Rupiah dataset, generated deterministically on first use and then reused.

``ensure_synthetic_dataset()`` returns the ``data.yaml`` of a YOLO layout in the cache
(``$SMARTCASH_CACHE``, default ``~/.cache/smartcash``). Each image holds 0-3 notes of the 7
denominations, each labelled with its whole-note box, its nominal-area box (the printed numeral)
and its three authentication features, so all 17 taxonomy classes appear. Class ids and names
come from ``load_taxonomy()``. Image ``i`` of a split depends only on ``(seed, split, i, imgsz)``.

Occlusion rule: a labelled region (a note or one of its features) keeps its full box when at
least ``MIN_VISIBLE_FRACTION`` of its area is still visible (not covered by a later note or an
occluder) and is dropped otherwise; when a whole note is dropped, all its feature boxes go too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from smartcash.data import synthetic_draw as draw
from smartcash.data.errors import DatasetError
from smartcash.data.label_cache import cache_root
from smartcash.data.yolo_writer import YoloLayoutWriter
from smartcash.taxonomy import Taxonomy, load_taxonomy

logger = logging.getLogger(__name__)

VERSION = "v1"  # bump when the drawing changes, so old caches are not reused
MARKER = ".complete"  # written last; a folder without it is never used
MIN_VISIBLE_FRACTION = 0.5
BACKGROUND_PROBABILITY = 0.08  # images with no note at all
JPEG_QUALITY = 92  # fixed, so the bytes are the same for the same seed
ABANDONED_AFTER_S = 3600  # a temporary folder this old belongs to a killed run, not a live one

#: Base note colours (BGR) by printed value, after the real Rupiah series.
NOTE_COLOURS: dict[int, tuple[int, int, int]] = {
    1000: (150, 170, 140),  # grey-green
    2000: (150, 150, 150),  # grey
    5000: (60, 100, 150),  # brown
    10000: (150, 70, 130),  # purple
    20000: (90, 160, 80),  # green
    50000: (190, 120, 40),  # blue
    100000: (70, 70, 200),  # red
}
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class NoteClasses:
    """The taxonomy ids a note of one denomination is labelled with."""

    denomination: int  # the printed value
    whole_id: int
    nominal_id: int


@dataclass(frozen=True)
class SyntheticClasses:
    """Which taxonomy ids the generator draws: 7 note kinds and the 3 authentication features."""

    notes: tuple[NoteClasses, ...]
    thread_id: int
    watermark_id: int
    sign_id: int


@dataclass(frozen=True)
class SyntheticSample:
    """One generated image (H, W, 3) BGR uint8 and its boxes (n, 5) [class, cx, cy, w, h]."""

    image: np.ndarray
    boxes: np.ndarray


def synthetic_classes(taxonomy: Taxonomy) -> SyntheticClasses:
    """Pair each whole-note class with its nominal-area class by main class; find the features.

    The layer-3 classes are taken in taxonomy order: security thread, watermark, special sign.
    """
    nominal_by_main = {taxonomy.fine_to_main[i]: i for i in taxonomy.ids_in_layer(2)}
    notes = []
    for whole in taxonomy.ids_in_layer(1):
        main = taxonomy.fine_to_main[whole]
        notes.append(NoteClasses(int(taxonomy.main_names[main]), whole, nominal_by_main[main]))
    features = taxonomy.ids_in_layer(3)
    if len(features) != 3 or not notes:
        raise ValueError(f"synthetic data needs the SmartCash taxonomy (3 layer-3 classes), got {features}")
    return SyntheticClasses(tuple(notes), *features)


def _note_colour(denomination: int) -> tuple[int, int, int]:
    if denomination in NOTE_COLOURS:
        return NOTE_COLOURS[denomination]
    generator = np.random.default_rng(denomination)  # a stable colour for a value not in the table
    return tuple(int(c) for c in generator.integers(40, 220, 3))


def _place(rng: np.random.Generator, imgsz: int, count: int, taken: list[draw.Box]) -> np.ndarray | None:
    """A placement matrix for a note that overlaps earlier notes' boxes by at most 15%, or None."""
    width_range = {1: (0.4, 0.85), 2: (0.32, 0.55), 3: (0.3, 0.45)}[count]
    for _ in range(20):
        angle = rng.uniform(-35, 35) + (180 if rng.random() < 0.2 else 0)
        scale = rng.uniform(*width_range) * imgsz / draw.NOTE_WIDTH
        extent_x, extent_y = draw.rotated_extent(angle, scale)
        shrink = min(1.0, 0.98 * imgsz / max(extent_x, extent_y))
        scale, extent_x, extent_y = scale * shrink, extent_x * shrink, extent_y * shrink
        centre = (rng.uniform(extent_x / 2, imgsz - extent_x / 2),
                  rng.uniform(extent_y / 2, imgsz - extent_y / 2))
        box = (centre[0] - extent_x / 2, centre[1] - extent_y / 2,
               centre[0] + extent_x / 2, centre[1] + extent_y / 2)
        if all(_overlap(box, other) <= 0.15 for other in taken):
            taken.append(box)
            return draw.placement_matrix(centre, angle, scale)
    return None


def _overlap(a: draw.Box, b: draw.Box) -> float:
    """Intersection area over the smaller box's area."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return width * height / smaller


def render_sample(seed: int, split: str, index: int, imgsz: int,
                  classes: SyntheticClasses) -> SyntheticSample:
    """Image ``index`` of ``split``: a function of (seed, split, index, imgsz) only."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES.get(split, 9), index]))
    scene = draw.draw_background(rng, imgsz)
    owner = np.full((imgsz, imgsz), -1, np.int32)  # which note each pixel shows (-1: none)
    count = 0 if rng.random() < BACKGROUND_PROBABILITY else int(rng.integers(1, 4))
    placed: list[tuple[NoteClasses, draw.NoteArt, np.ndarray]] = []
    taken: list[draw.Box] = []
    for _ in range(count):
        kind = classes.notes[int(rng.integers(len(classes.notes)))]
        art = draw.draw_note(rng, kind.denomination, _note_colour(kind.denomination))
        matrix = _place(rng, imgsz, count, taken)
        if matrix is None:
            continue
        scene = draw.paste_note(scene, owner, art, matrix, len(placed))
        placed.append((kind, art, matrix))
    if placed and rng.random() < 0.35:
        target = placed[int(rng.integers(len(placed)))]
        draw.draw_occluder(rng, scene, owner, draw.transformed_box(target[2], target[1].regions["note"]))
    scene = draw.apply_lighting(rng, scene)

    rows: list[list[float]] = []
    for index_in_scene, (kind, art, matrix) in enumerate(placed):
        region_classes = {"note": kind.whole_id, "nominal": kind.nominal_id, "thread": classes.thread_id,
                          "watermark": classes.watermark_id, "sign": classes.sign_id}
        for region in draw.REGIONS:
            box = art.regions[region]
            if draw.visible_fraction(owner, index_in_scene, matrix, box) < MIN_VISIBLE_FRACTION:
                if region == "note":
                    break  # a mostly hidden note is not labelled at all
                continue
            x1, y1, x2, y2 = np.clip(draw.transformed_box(matrix, box), 0, imgsz)
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            rows.append([region_classes[region], (x1 + x2) / 2 / imgsz, (y1 + y2) / 2 / imgsz,
                         (x2 - x1) / imgsz, (y2 - y1) / imgsz])
    return SyntheticSample(scene, np.asarray(rows, np.float64).reshape(-1, 5))


def default_cache_dir() -> Path:
    """``$SMARTCASH_CACHE``, else ``~/.cache/smartcash`` (``label_cache.cache_root``)."""
    return cache_root()


def is_builtin_synthetic(data_yaml: str | os.PathLike[str]) -> bool:
    """True for the data.yaml of a built-in synthetic dataset (generated into the cache folder)."""
    folder = Path(data_yaml).resolve().parent
    return folder.parent == default_cache_dir().resolve() and folder.name.startswith("synthetic-")


def dataset_dir_name(seed: int, num_train: int, num_val: int, imgsz: int) -> str:
    return f"synthetic-{VERSION}-seed{seed}-train{num_train}-val{num_val}-{imgsz}px"


_README = """# SmartCash synthetic Rupiah dataset (SYNTHETIC, not real banknotes)

Generated by `smartcash.data.synthetic` ({version}, seed {seed}): drawn with OpenCV, for smoke
tests and for training with no download. Notes of the 7 denominations with their nominal area
(the printed numeral) and the three authentication features, on random backgrounds, with
rotation, scale, lighting and partial occlusion. A region at least {visible:.0%} visible keeps
its full box; otherwise it is dropped (a dropped note takes its features with it).
{train} train and {val} val images of {imgsz}x{imgsz} px. Delete this folder to regenerate.
"""


def _generate(directory: Path, seed: int, num_train: int, num_val: int, imgsz: int, workers: int) -> Path:
    taxonomy = load_taxonomy()
    classes = synthetic_classes(taxonomy)
    writer = YoloLayoutWriter(directory, taxonomy.names)

    def make(job: tuple[str, int]) -> None:
        split, index = job
        sample = render_sample(seed, split, index, imgsz, classes)
        name = f"synthetic_{split}_{index:05d}.jpg"
        writer.add_array(split, name, sample.image, sample.boxes, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])

    jobs = [("train", i) for i in range(num_train)] + [("val", i) for i in range(num_val)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(make, jobs))  # list() re-raises the first worker error
    data_yaml = writer.finish()
    (directory / "README.md").write_text(
        _README.format(version=VERSION, seed=seed, visible=MIN_VISIBLE_FRACTION, train=num_train, val=num_val,
                       imgsz=imgsz), encoding="utf-8")
    return data_yaml


def _remove_abandoned(base: Path, name: str) -> None:
    """Delete temporary folders of ``name`` left by killed runs (untouched for ABANDONED_AFTER_S)."""
    for folder in base.glob(f".tmp-{name}-*"):
        try:
            if time.time() - folder.stat().st_mtime > ABANDONED_AFTER_S:
                logger.info("removing %s, left by an interrupted generation", folder)
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # removed meanwhile by another process: nothing to do
            continue


def ensure_synthetic_dataset(root: str | os.PathLike[str] | None = None, seed: int = 0, num_train: int = 300,
                             num_val: int = 100, imgsz: int = 320, workers: int | None = None) -> Path:
    """The synthetic dataset's ``data.yaml``, generating it on first use.

    Args:
        root: cache folder holding the dataset folder (default ``default_cache_dir()``).
        seed: the same seed gives the same label files and image bytes.
        num_train, num_val: image counts; imgsz: square image side in pixels.
        workers: generation threads (default: CPU count, at most 8).

    Generation happens in a temporary folder renamed into place once complete; a folder
    without the completion marker (an interrupted run) is never reused.
    """
    base = Path(root) if root is not None else default_cache_dir()
    directory = base / dataset_dir_name(seed, num_train, num_val, imgsz)
    if (directory / MARKER).is_file():
        return directory / "data.yaml"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:  # a file where the cache folder should be
        source = "--root" if root is not None else "the cache folder ($SMARTCASH_CACHE, default ~/.cache/smartcash)"
        raise DatasetError(f"{base}: {source} is not a folder ({error.strerror}); point it at a folder "
                           "to generate the built-in synthetic dataset in") from error
    if directory.exists():  # left without a marker by something else: set it aside, then rebuild
        stale = Path(tempfile.mkdtemp(prefix=f".stale-{directory.name}-", dir=base))
        directory.rename(stale / "old")
        shutil.rmtree(stale, ignore_errors=True)
    workers = workers or min(8, os.cpu_count() or 1)
    _remove_abandoned(base, directory.name)
    temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{directory.name}-", dir=base))
    started = time.perf_counter()
    try:
        _generate(temporary, seed, num_train, num_val, imgsz, workers)
        marker = {"version": VERSION, "seed": seed, "num_train": num_train, "num_val": num_val,
                  "imgsz": imgsz}
        (temporary / MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        try:
            temporary.rename(directory)
        except OSError:
            if not (directory / MARKER).is_file():  # not a concurrent winner: a real failure
                raise
            logger.info("%s: generated concurrently by another process; using that copy", directory)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    logger.info("synthetic dataset: %d train + %d val images at %d px in %.1f s -> %s",
                num_train, num_val, imgsz, time.perf_counter() - started, directory)
    return directory / "data.yaml"


def main(argv: list[str] | None = None) -> int:
    """``python -m smartcash.data.synthetic``: make (or find) the synthetic dataset; print its data.yaml."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None, help="cache folder (default $SMARTCASH_CACHE)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=300)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    data_yaml = ensure_synthetic_dataset(args.root, args.seed, args.num_train, args.num_val, args.imgsz,
                                         args.workers)
    print(data_yaml)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
