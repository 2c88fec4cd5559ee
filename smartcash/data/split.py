"""Split a folder of images + YOLO labels into train/val(/test), stratified by denomination.

Each image's stratum is the denomination (main class) of its largest layer-1/2 box; for a
dataset with its own class names it is the class of its largest box. Images without boxes form
their own stratum, as do images with only authentication-feature boxes. The split is
stratified when every denomination stratum has at least ``ceil(1 / min ratio)`` images (so each
split gets one), else it is a plain random split and a log line says why. Seeded and
deterministic. Source files are copied (default) or linked, never moved. Refused: a labels folder
with no label for any image, an images folder holding an earlier split's output (a ``data.yaml``),
an output folder inside the images folder.

    python -m smartcash.data.split --images DIR --labels DIR --out DIR [--ratios 0.8 0.1 0.1]
        [--seed 0] [--copy|--link|--symlink] [--names ...|--data data.yaml]
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from smartcash.data.checks import shared_labels
from smartcash.data.dataset_config import duplicate_names, load_dataset_config
from smartcash.data.image_files import IMAGE_SUFFIXES, images_in_tree
from smartcash.cli import write_into_folder
from smartcash.data.errors import DatasetError
from smartcash.data.labels import BAD_CLASS, parse_label_file
from smartcash.data.yolo_writer import (SPLIT_ORDER, TransferMode, YoloLayoutWriter, check_output_folder,
                                        flat_name)
from smartcash.taxonomy import Taxonomy, load_taxonomy

logger = logging.getLogger(__name__)

BACKGROUND = "background"  # stratum of images with no boxes
FEATURES_ONLY = "features-only"  # stratum of images with only layer-3 boxes
_UNGATED = (BACKGROUND, FEATURES_ONLY)  # strata too small for every split do not block stratifying
_EPSILON = 1e-9


@dataclass(frozen=True)
class SplitPlan:
    """Which split each image goes to, and whether the split was stratified (and if not, why)."""

    assignment: tuple[tuple[str, str], ...]  # (image key, split), sorted by key
    stratified: bool
    note: str

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, split in self.assignment:
            counts[split] = counts.get(split, 0) + 1
        return counts


@dataclass(frozen=True)
class SplitResult:
    """A written split: its plan, the output folder and its ``data.yaml``."""

    plan: SplitPlan
    out_dir: Path
    data_yaml: Path


def split_names(ratios: Sequence[float]) -> tuple[str, ...]:
    """Split names for 2 (train, val) or 3 (train, val, test) ratios; checks they sum to 1."""
    if len(ratios) not in (2, 3):
        raise DatasetError(f"--ratios: give 2 (train val) or 3 (train val test) numbers, got {list(ratios)}")
    if not all(math.isfinite(r) and r > 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise DatasetError(f"--ratios: {list(ratios)} must be positive and sum to 1 (e.g. 0.8 0.1 0.1)")
    return SPLIT_ORDER[: len(ratios)]


def _allocate(count: int, ratios: Sequence[float]) -> list[int]:
    """Images per split: floors of count * ratio, the remainder to the largest fractional parts."""
    exact = [count * r for r in ratios]
    sizes = [math.floor(e + _EPSILON) for e in exact]
    order = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in order[: count - sum(sizes)]:
        sizes[i] += 1
    return sizes


def plan_split(strata: Mapping[str, str], ratios: Sequence[float], seed: int) -> SplitPlan:
    """Assign images (key -> stratum) to splits with the given ratios; deterministic for a seed."""
    names = split_names(ratios)
    needed = math.ceil(1 / min(ratios) - _EPSILON)
    groups: dict[str, list[str]] = {}
    for key in sorted(strata):
        groups.setdefault(strata[key], []).append(key)
    small = {s: len(keys) for s, keys in sorted(groups.items()) if s not in _UNGATED and len(keys) < needed}
    if not any(s not in _UNGATED for s in groups):
        stratified, note = False, "no image has a denomination box; random split"
    elif small:
        stratified = False
        note = (f"strata {small} have fewer than {needed} images (1 per split at ratio {min(ratios):g});"
                " random split instead of stratified")
    else:
        stratified, note = True, f"stratified over {len(groups)} strata"
    rng = np.random.default_rng(seed)
    pools = [groups[s] for s in sorted(groups)] if stratified else [sorted(strata)]
    assignment: list[tuple[str, str]] = []
    for pool in pools:
        shuffled = [pool[i] for i in rng.permutation(len(pool))]
        start = 0
        for name, size in zip(names, _allocate(len(shuffled), ratios)):
            assignment.extend((key, name) for key in shuffled[start:start + size])
            start += size
    return SplitPlan(tuple(sorted(assignment)), stratified, note)


def image_stratum(boxes: np.ndarray, class_index: Sequence[int], taxonomy: Taxonomy) -> str:
    """Stratum of one image from its boxes (n, 5) [dataset class, cx, cy, w, h]."""
    if len(boxes) == 0:
        return BACKGROUND
    areas = boxes[:, 3] * boxes[:, 4]
    classes = [class_index[int(c)] for c in boxes[:, 0]]
    if not taxonomy.is_smartcash:
        return f"class:{taxonomy.names[classes[int(np.argmax(areas))]]}"
    candidates = [i for i, c in enumerate(classes) if taxonomy.layers[c] in taxonomy.denomination_layers]
    if not candidates:
        return FEATURES_ONLY
    largest = max(candidates, key=lambda i: (areas[i], -i))
    return f"denomination:{taxonomy.main_names[taxonomy.fine_to_main[classes[largest]]]}"


def _class_mapping(names: Sequence[str] | None, data: Path | None) -> tuple[tuple[str, ...], tuple[int, ...],
                                                                              Taxonomy, dict[str, object]]:
    """(dataset names, dataset id -> taxonomy id, taxonomy, extra data.yaml keys) for the labels."""
    if data is not None:
        config = load_dataset_config(data)
        extra = {"class_map": dict(config.class_map)} if config.class_map else {}  # as written (001 stays 001)
        return config.source_names, config.class_index, config.taxonomy, extra
    taxonomy = load_taxonomy()
    if not names:
        logger.info("no --names/--data: labels are taken to use the SmartCash class ids (%d classes)",
                    taxonomy.num_classes)
        return taxonomy.names, tuple(range(taxonomy.num_classes)), taxonomy, {}
    repeated = duplicate_names([str(n) for n in names])
    if repeated:
        raise DatasetError(f"--names: {repeated}: each class needs its own name (nothing was written)")
    ids = [taxonomy.lookup(n) for n in names]
    if all(i is not None for i in ids):
        return tuple(names), tuple(int(i) for i in ids if i is not None), taxonomy, {}
    logger.info("names %s are not all SmartCash classes: stratifying by the dataset's own class ids",
                [n for n, i in zip(names, ids) if i is None])
    return tuple(names), tuple(range(len(names))), Taxonomy.identity(list(names)), {}


def split_dataset(images_dir: Path, labels_dir: Path, out_dir: Path,
                  ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0, mode: TransferMode = "copy",
                  names: Sequence[str] | None = None, data: Path | None = None) -> SplitResult:
    """Split ``images_dir`` (+ matching ``labels_dir/<relative path>.txt``) into ``out_dir``.

    Args:
        images_dir: images, searched recursively; an image without a label file is a background.
        labels_dir: YOLO label files mirroring ``images_dir``'s relative paths.
        out_dir: a new (or empty) folder for ``images/<split>``, ``labels/<split>``, ``data.yaml``.
        ratios: 2 or 3 positive numbers summing to 1 (train, val[, test]).
        seed: the same seed gives the same assignment.
        mode: ``copy`` (default), ``hardlink`` or ``symlink`` for images; labels are always copied.
        names: the dataset's class names (default: the SmartCash taxonomy's), or
        data: a dataset yaml to read them (and its ``class_map``) from.

    Raises:
        DatasetError: missing folders, a non-empty ``out_dir``, bad ratios, class ids beyond names.
    """
    images_dir, labels_dir, out_dir = Path(images_dir), Path(labels_dir), Path(out_dir)
    for folder, flag in ((images_dir, "--images"), (labels_dir, "--labels")):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: {flag} folder not found")
    check_output_folder(out_dir)
    if out_dir.resolve().is_relative_to(images_dir.resolve()):
        raise DatasetError(f"{out_dir}: --out is inside --images {images_dir}; a later split of that folder would "
                           "take these copies as more images (choose an --out outside it)")
    earlier = sorted(str(path.parent) for path in images_dir.rglob("data.yaml"))
    if earlier:
        more = " ..." if len(earlier) > 1 else ""
        raise DatasetError(f"{images_dir}: holds an earlier dataset ({earlier[0]}/data.yaml{more}); its images would"
                           " be split again, twice over and across splits (point --images at the original images only)")
    split_names(ratios)
    if not 0 <= seed < 2**63:
        raise DatasetError(f"--seed {seed}: must be an integer from 0 to 2**63 - 1 (nothing was written)")
    source_names, class_index, taxonomy, extra = _class_mapping(names, data)

    images = images_in_tree(images_dir)
    if not images:
        raise DatasetError(f"{images_dir}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    strata: dict[str, str] = {}
    labels: dict[str, Path | None] = {}
    bad_lines = 0
    for image in images:
        key = image.relative_to(images_dir).as_posix()
        label = labels_dir / Path(key).with_suffix(".txt")
        labels[key] = label if label.is_file() else None
        if labels[key] is None:
            strata[key] = BACKGROUND
            continue
        parsed = parse_label_file(label, len(source_names))
        wrong_class = [p for p in parsed.problems if p.kind == BAD_CLASS]
        if wrong_class:
            raise DatasetError(f"{wrong_class[0]} (the labels use more classes than the {len(source_names)}"
                               " names; pass --names or --data with the dataset's class names)")
        bad_lines += len(parsed.problems)
        strata[key] = image_stratum(parsed.boxes, class_index, taxonomy)
    keys = list(labels)
    shared = shared_labels(images, [labels[k] or Path() for k in keys], [labels[k] is not None for k in keys])
    if shared:  # the copies would each get the boxes, and the checker could no longer tell
        raise DatasetError(f"{shared[0].path}: {shared[0].reason} (nothing was written)")
    if all(label is None for label in labels.values()):
        raise DatasetError(f"{labels_dir}: no label file for any of the {len(images)} images (looked for"
                           f" {labels_dir / Path(next(iter(labels))).with_suffix('.txt')} ...); is --labels the"
                           " folder holding their .txt files, with the same relative paths?")
    if bad_lines:
        logger.warning("%d bad label lines ignored for stratifying (labels are copied as they are; "
                       "run python -m smartcash.data.check for the list)", bad_lines)

    plan = plan_split(strata, ratios, seed)
    logger.info("%s", plan.note)
    writer = YoloLayoutWriter(out_dir, source_names, mode)
    for key, split in plan.assignment:
        writer.add_label_file(split, images_dir / key, labels[key], name=flat_name(Path(key)))
    return SplitResult(plan, out_dir, writer.finish(extra))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 0 on success, 2 on a dataset error."""
    parser = argparse.ArgumentParser(description="Split images + YOLO labels into train/val/test.")
    parser.add_argument("--images", type=Path, required=True, help="images folder (searched recursively)")
    parser.add_argument("--labels", type=Path, required=True, help="YOLO labels folder (same relative paths)")
    parser.add_argument("--out", type=Path, required=True, help="new output folder")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.8, 0.1, 0.1], help="train val [test]")
    parser.add_argument("--seed", type=int, default=0)
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--copy", dest="mode", action="store_const", const="copy", help="copy images (default)")
    how.add_argument("--link", dest="mode", action="store_const", const="hardlink", help="hard-link images")
    how.add_argument("--symlink", dest="mode", action="store_const", const="symlink", help="symlink images")
    classes = parser.add_mutually_exclusive_group()
    classes.add_argument("--names", nargs="+", help="class names in class-id order")
    classes.add_argument("--data", type=Path, help="dataset yaml to read class names from")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    result, code = write_into_folder(lambda: split_dataset(args.images, args.labels, args.out, args.ratios, args.seed,
                                                          args.mode or "copy", args.names, args.data), args.out)
    if result is None:
        return code
    counts = result.plan.counts()
    summary = ", ".join(f"{split} {counts[split]}" for split in SPLIT_ORDER if split in counts)
    print(f"{summary} ({'stratified' if result.plan.stratified else 'random'}): {result.data_yaml}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
