"""Import COCO detection JSON (``images``, ``annotations`` with ``bbox`` xywh pixels, ``categories``).

Class names are the categories in category-id order (class id = position in that order).
Crowd annotations (``iscrowd: 1``) are skipped and counted, as YOLOv5 does. Bad annotations
(unknown image or category, malformed or empty bbox, box outside the image) and bad images
(missing on disk, unreadable, another aspect ratio than declared) are reported as
``file: annotations[i] (id N): reason`` or ``file: images[i] (id N): reason`` and skipped.
Images with no annotation are kept as backgrounds; an image whose annotations were ALL skipped is
left out (reported), not made a background. An annotation without a ``bbox`` gets the extent of
its polygon ``segmentation``. Boxes up to 1 px outside the image are clipped. Writes a YOLO
layout + data.yaml.

    python -m smartcash.data.import_coco --json FILE --images DIR --out DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smartcash.cli import add_layout_arguments, write_into_folder
from smartcash.data.errors import DatasetError, not_utf8
from smartcash.data.yolo_writer import (ImportProblem, ImportSummary, TransferMode, YoloLayoutWriter,
                                        check_output_folder, check_split_name, declared_size_problem, flat_name,
                                        pixel_box_to_yolo)
from smartcash.taxonomy import name_key

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CocoImage:
    """One usable COCO image entry with its file found on disk."""

    id: int
    file_name: str
    path: Path
    width: float
    height: float


def _load(json_path: Path) -> dict[str, Any]:
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except OSError as error:
        raise DatasetError(f"{json_path}: cannot read the COCO JSON ({error})") from error
    except UnicodeDecodeError as error:
        raise DatasetError(f"{json_path}: {not_utf8(error)}") from error
    except json.JSONDecodeError as error:
        raise DatasetError(f"{json_path}:{error.lineno}: invalid JSON ({error.msg})") from error
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{json_path}: not a COCO detection file "
                           "(needs `images`, `annotations`, `categories`)")
    if not isinstance(data.get("categories"), list) or not data["categories"]:
        raise DatasetError(f"{json_path}: `categories` must be a non-empty list of {{id, name}}")
    return data


def category_names(json_path: Path, categories: list[Any]) -> tuple[tuple[str, ...], dict[int, int]]:
    """(names in category-id order, category id -> class id)."""
    entries: dict[int, str] = {}
    for position, category in enumerate(categories):
        try:
            category_id, name = int(category["id"]), str(category["name"])
        except (KeyError, TypeError, ValueError) as error:
            raise DatasetError(f"{json_path}: categories[{position}] needs an integer id and a name"
                               ) from error
        if category_id in entries:
            raise DatasetError(f"{json_path}: categories[{position}]: id {category_id} used twice")
        entries[category_id] = name
    ordered = sorted(entries)
    named: dict[str, int] = {}  # by name_key: names compare without case, as everywhere
    for category_id in ordered:
        first = named.setdefault(name_key(entries[category_id]), category_id)
        if first != category_id:
            raise DatasetError(f"{json_path}: categories: ids {first} and {category_id} are both named "
                               f"{entries[category_id]!r}; each class needs its own name")
    class_of = {category_id: index for index, category_id in enumerate(ordered)}
    return tuple(entries[i] for i in ordered), class_of


def _without_dataset_category(json_path: Path, categories: list[Any], annotations: Any) -> list[Any]:
    """The categories less Roboflow's dataset entry: a category no annotation uses whose name is the
    ``supercategory`` of the others (id 0 ``rupiah`` over ``001``, ``002`` ...). Kept, it would be a
    class with no box and a name that maps to no SmartCash class."""
    used = {str(annotation.get("category_id")) for annotation in annotations or [] if isinstance(annotation, dict)}
    parents = {str(c.get("supercategory")) for c in categories if isinstance(c, dict) and c.get("supercategory")}
    dropped = [c for c in categories if isinstance(c, dict) and str(c.get("id")) not in used
               and str(c.get("name")) in parents and c.get("supercategory") in (None, "", "none")]
    for category in dropped:
        logger.info("%s: category %s %r left out: no annotation uses it and it names the others' supercategory "
                    "(a Roboflow export's dataset entry)", json_path, category.get("id"), category.get("name"))
    return [c for c in categories if not any(c is d for d in dropped)]


def _is_crowd(value: Any) -> bool:
    """COCO's ``iscrowd`` as written: 0 / 1, also as text ("0" is not a crowd) or a bool."""
    try:
        return float(value) != 0
    except (TypeError, ValueError):
        return bool(value)


def _images(json_path: Path, images: list[Any], images_dir: Path,
            problems: list[ImportProblem]) -> dict[int, CocoImage]:
    """The usable images by id. Raises DatasetError for an id given twice: annotations name their
    image by id, so the boxes of the two cannot be told apart (merged exports both start at 1)."""
    found: dict[int, CocoImage] = {}
    first_position: dict[int, int] = {}
    for position, entry in enumerate(images):
        where = f"images[{position}]"
        try:
            image_id, file_name = int(entry["id"]), str(entry["file_name"])
            width, height = float(entry["width"]), float(entry["height"])
        except (KeyError, TypeError, ValueError):
            problems.append(ImportProblem(str(json_path), None,
                                          f"{where}: needs id, file_name, width, height"))
            continue
        if image_id in first_position:
            raise DatasetError(f"{json_path}: {where}: image id {image_id} is also "
                               f"images[{first_position[image_id]}]'s; annotations refer to images by id, so their "
                               "boxes cannot be told apart (give each image its own id; nothing was written)")
        first_position[image_id] = position
        if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
            problems.append(ImportProblem(str(json_path), None,
                                          f"{where} (id {image_id}): size {width:g}x{height:g}"))
            continue
        candidates = (images_dir / file_name, images_dir / Path(file_name).name)
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            reason = f"{where} (id {image_id}): image {file_name!r} not found in {images_dir}"
            problems.append(ImportProblem(str(json_path), None, reason))
            continue
        size_problem = declared_size_problem(path, width, height)
        if size_problem:
            problems.append(ImportProblem(str(json_path), None, f"{where} (id {image_id}): {size_problem}"))
            continue
        found[image_id] = CocoImage(image_id, file_name, path, width, height)
    return found


def _annotation_row(annotation: Any, images: dict[int, CocoImage], class_of: dict[int, int],
                    known_image_ids: set[int]) -> tuple[int | None, list[float] | None, str]:
    """(image id, [class, cx, cy, w, h], '') for a good annotation, else (None, None, reason)."""
    try:
        image_id, category_id = int(annotation["image_id"]), int(annotation["category_id"])
        x, y, width, height = _bbox(annotation)
    except (KeyError, TypeError, ValueError):
        return None, None, "needs image_id, category_id and a bbox of 4 numbers (or a polygon segmentation)"
    if image_id not in images:
        reason = "its image was skipped" if image_id in known_image_ids else f"unknown image_id {image_id}"
        return None, None, reason
    if category_id not in class_of:
        return None, None, f"unknown category_id {category_id}"
    if not all(math.isfinite(v) for v in (x, y, width, height)):
        return None, None, "non-finite bbox"
    image = images[image_id]
    box, reason = pixel_box_to_yolo(x, y, x + width, y + height, image.width, image.height)
    if box is None:
        return None, None, f"bbox [{x:g}, {y:g}, {width:g}, {height:g}]: {reason}"
    return image_id, [class_of[category_id], *box], ""


def _bbox(annotation: dict[str, Any]) -> tuple[float, float, float, float]:
    """[x, y, w, h] pixels: the annotation's ``bbox``, else the extent of its polygon segmentation
    (some exporters leave ``bbox`` empty); ValueError/TypeError/KeyError when it has neither."""
    bbox = annotation.get("bbox")
    if bbox is not None and len(bbox) > 0:
        x, y, width, height = (float(v) for v in bbox)
        return x, y, width, height
    polygons = annotation["segmentation"]
    if not isinstance(polygons, list) or not polygons:  # RLE masks (a dict) are not read here
        raise ValueError("no polygon")
    points = np.asarray([float(v) for polygon in polygons for v in polygon], np.float64).reshape(-1, 2)
    if len(points) < 3:
        raise ValueError("polygon needs 3 points")
    (x1, y1), (x2, y2) = points.min(axis=0), points.max(axis=0)
    return float(x1), float(y1), float(x2 - x1), float(y2 - y1)


def import_coco(json_path: Path, images_dir: Path, out_dir: Path, mode: TransferMode = "copy",
                split: str = "train") -> ImportSummary:
    """Convert a COCO detection JSON into a YOLO layout under ``out_dir`` (one split).

    Args:
        json_path: the COCO file. images_dir: where its ``file_name``s are (relative path or base name).
        out_dir: a new or empty folder; gets ``images/<split>``, ``labels/<split>``, ``data.yaml``.
        mode: ``copy``, ``hardlink`` or ``symlink`` for the images.
        split: the split folder to write (make train/val/test later with ``smartcash.data.split``).

    Raises:
        DatasetError: unreadable or non-COCO JSON, bad categories, a non-empty ``out_dir``.
    """
    json_path, images_dir, out_dir = Path(json_path), Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: --images folder not found")
    check_split_name(split)
    check_output_folder(out_dir)
    data = _load(json_path)
    categories = _without_dataset_category(json_path, data["categories"], data.get("annotations"))
    names, class_of = category_names(json_path, categories)
    problems: list[ImportProblem] = []
    images = _images(json_path, data["images"], images_dir, problems)
    known_image_ids = {e.get("id") for e in data["images"] if isinstance(e, dict) and isinstance(e.get("id"), int)}
    rows: dict[int, list[list[float]]] = {image_id: [] for image_id in images}
    rejected: set[int] = set()  # images with an annotation that could not be used
    crowd = skipped = 0
    seen: dict[tuple[int, tuple[float, ...]], int] = {}  # (image, class + box) -> first position
    for position, annotation in enumerate(data.get("annotations") or []):
        if isinstance(annotation, dict) and _is_crowd(annotation.get("iscrowd")):
            crowd += 1
            continue
        image_id, row, reason = _annotation_row(annotation, images, class_of, known_image_ids)
        if row is not None and image_id is not None:
            first = seen.setdefault((image_id, tuple(row)), position)
            if first != position:  # the same box twice: one object, not two (as the CSV importer)
                row, reason = None, f"duplicate of annotations[{first}]"
        if row is None or image_id is None:
            skipped += 1
            identifier = annotation.get("id") if isinstance(annotation, dict) else None
            problems.append(ImportProblem(str(json_path), None,
                                          f"annotations[{position}] (id {identifier}): {reason}"))
            with contextlib.suppress(KeyError, TypeError, ValueError):  # no usable image_id: no image to mark
                rejected.add(int(annotation["image_id"]))
            continue
        rows[image_id].append(row)
    if crowd:
        logger.info("%s: %d crowd annotations skipped (iscrowd: 1)", json_path, crowd)
    # An image whose every annotation was rejected is not a background: its objects are unlabelled.
    for image_id in sorted(rejected & set(images)):
        if not rows[image_id]:
            del rows[image_id]
            problems.append(ImportProblem(str(json_path), None, f"image id {image_id} "
                                          f"({images[image_id].file_name}): left out, none of its annotations "
                                          "could be used (it would have been a background)"))
            del images[image_id]
    if not images:
        first = f" (first: {problems[0]})" if problems else ""
        raise DatasetError(f"{json_path}: no usable image, {len(problems)} problems{first}; nothing was written")
    writer = YoloLayoutWriter(out_dir, names, mode)
    boxes = 0
    for image_id in sorted(images, key=lambda i: (images[i].file_name, i)):
        image = images[image_id]
        array = np.asarray(rows[image_id], np.float64).reshape(-1, 5)
        boxes += len(array)
        writer.add_file(split, image.path, array, name=flat_name(Path(image.file_name)))
    data_yaml = writer.finish()
    if problems:
        logger.warning("%s: %d problems, records skipped (first: %s)", json_path, len(problems), problems[0])
    return ImportSummary(len(images), boxes, skipped + crowd, names, tuple(problems), data_yaml)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 0 on success (bad annotations are reported, not fatal), 2 on an error."""
    parser = argparse.ArgumentParser(description="Import a COCO detection JSON into a YOLO dataset.")
    parser.add_argument("--json", type=Path, required=True, help="COCO annotations file")
    add_layout_arguments(parser, "folder holding its images")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    summary, code = write_into_folder(
        lambda: import_coco(args.json, args.images, args.out, args.mode or "copy", args.split), args.out)
    if summary is None:
        return code
    print(summary.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
