"""COCO ground truth and detections -> checked numpy arrays: the edge of ``evaluate_coco``.

Ground truth: a COCO dataset dict or a JSON path. Detections: a list of COCO result dicts, an
(N, 7) array [image_id, x, y, w, h, score, category_id] (as ``COCO.loadRes`` takes) or a JSON
path. Every problem raises ValueError naming the entry, where pycocotools asserts, crashes with a
KeyError, or silently evaluates something else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from smartcash.model.training.core.coco_json import Records, read_ground_truth, read_records

DETECTION_LAYOUT = "(N, 7) [image_id, x, y, w, h, score, category_id]"
_LARGEST_ID = 2**53  # ids beyond it would not survive float64


@dataclass(frozen=True)
class CocoGroundTruth:
    """A COCO dataset's images, categories and annotations.

    image_ids: (I,) int64 sorted, unique; category_ids: (K,) int64 sorted, unique;
    category_names: {id: name}; annotation_ids, images, categories: (G,) int64 (raw ids);
    boxes: (G, 4) float64 [x, y, w, h]; areas: (G,) the ``area`` fields; crowd: (G,) bool.
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    category_names: dict[int, str]
    annotation_ids: np.ndarray
    images: np.ndarray
    categories: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    crowd: np.ndarray


@dataclass(frozen=True)
class CocoDetections:
    """Detections: images, categories (N,) int64 raw ids; boxes (N, 4) [x, y, w, h]; scores (N,)."""

    images: np.ndarray
    categories: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray


def _fail(name: str, index: int, what: str) -> ValueError:
    return ValueError(f"{name}[{index}]: {what}")


def _first(bad: np.ndarray) -> int | None:
    return int(np.argmax(bad)) if bad.any() else None


def _field(items: Sequence[Any], key: str, name: str) -> list:
    """One key of every entry; ValueError naming the first entry that is no dict or lacks it."""
    try:
        return list(map(itemgetter(key), items))
    except (KeyError, TypeError, IndexError):
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise _fail(name, index, f"expected a dict, got {type(item).__name__}") from None
            if key not in item:
                raise _fail(name, index, f"missing key {key!r}") from None
        raise


def _numbers(values: list, name: str, key: str, width: int = 0, booleans: bool = False) -> np.ndarray:
    """Numbers (or lists of `width` numbers) -> float64 array; ValueError naming a bad entry.
    Strings are refused even when numeric ("3"): pycocotools would compare them as strings."""
    shape = (len(values), width) if width else (len(values),)
    if not values:
        return np.zeros(shape)
    try:
        array = np.asarray(values)
        if array.shape == shape and (array.dtype.kind in "iuf" or (booleans and array.dtype.kind == "b")):
            return array.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        pass
    kinds = (int, float, np.number)
    for index, value in enumerate(values):
        if width:
            ok = isinstance(value, (list, tuple, np.ndarray)) and len(value) == width and all(
                isinstance(item, kinds) and not isinstance(item, (bool, np.bool_)) for item in value)
        else:
            ok = isinstance(value, kinds) and (booleans or not isinstance(value, (bool, np.bool_)))
        if not ok:
            expected = "a number" if not width else f"a list of {width} numbers"
            raise _fail(name, index, f"{key} must be {expected}, got {value!r}")
    raise ValueError(f"{name}: {key} values are not numbers (or are integers too large for int64)")


def _check_finite(values: np.ndarray, name: str, key: str) -> None:
    finite = np.isfinite(values)
    if finite.all():  # (a row-wise reduction over (N, 4) costs more than the check itself)
        return
    bad = _first(~(finite.all(axis=1) if finite.ndim > 1 else finite))
    if bad is not None:
        raise _fail(name, bad, f"{key} must be finite, got {values[bad].tolist()}")


def _integers(values: np.ndarray, name: str, key: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    bad = _first(~np.isfinite(values) | (values != np.round(values)) | (np.abs(values) >= _LARGEST_ID))
    if bad is not None:
        raise _fail(name, bad, f"{key} must be an integer (below 2**53 in size), got {values[bad]!r}")
    return values.astype(np.int64)


def _check_boxes(boxes: np.ndarray, name: str) -> None:
    _check_finite(boxes, name, "bbox")
    bad = _first((boxes[:, 2] < 0) | (boxes[:, 3] < 0))
    if bad is not None:
        raise _fail(name, bad, f"bbox {boxes[bad].tolist()} has a negative width or height "
                                "(COCO boxes are [x, y, width, height])")


def id_positions(ids: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Index of each id in `known` (sorted, unique), -1 where absent. (N,), (K,) -> (N,) int64.

    A lookup table when the ids span a small range (COCO's do), else a binary search.
    """
    if not len(known):
        return np.full(len(ids), -1, dtype=np.int64)
    low, high = int(known[0]), int(known[-1])
    if high - low <= 4 * (len(ids) + len(known)) + 4096:
        table = np.full(high - low + 3, -1, dtype=np.int64)  # a -1 on each side for ids outside
        table[known - low + 1] = np.arange(len(known))
        return table[np.clip(ids, low - 1, high + 1) - (low - 1)]
    position = np.minimum(np.searchsorted(known, ids), len(known) - 1)
    return np.where(known[position] == ids, position, -1)


def _check_known(ids: np.ndarray, known: np.ndarray, name: str, key: str, what: str) -> None:
    bad = _first(id_positions(ids, known) < 0)
    if bad is not None:
        raise _fail(name, bad, f"{key} {int(ids[bad])} is not {what}")


def _id_list(items: Any, name: str) -> list:
    if not isinstance(items, list):
        raise ValueError(f"{name}: expected a list, got {type(items).__name__}")
    return _field(items, "id", name)


def _dataset_parts(dataset: Mapping, where: str) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """(image ids, category ids, category names) of a dataset dict."""
    for key in ("images", "categories"):
        if key not in dataset:
            raise ValueError(f"{where}: missing key {key!r} (a COCO dataset has images, annotations and categories)")
    image_ids = _integers(_numbers(_id_list(dataset["images"], f"{where} images"), f"{where} images", "id"),
                          f"{where} images", "id")
    categories = dataset["categories"]
    category_ids = _integers(_numbers(_id_list(categories, f"{where} categories"), f"{where} categories", "id"),
                             f"{where} categories", "id")
    names = {int(i): str(category.get("name", i)) for i, category in zip(category_ids, categories)}
    return np.unique(image_ids), np.unique(category_ids), names


def _annotations(columns: Mapping[str, np.ndarray], count: int, parts: tuple, name: str) -> CocoGroundTruth:
    """Check annotation columns (numbers, any source) and build the ground truth."""
    image_ids, category_ids, names = parts
    ids = _integers(columns["id"], name, "id")
    images = _integers(columns["image_id"], name, "image_id")
    categories = _integers(columns["category_id"], name, "category_id")
    boxes, areas = columns["bbox"], columns["area"]
    _check_boxes(boxes, name)
    _check_finite(areas, name, "area")
    bad = _first(areas < 0)
    if bad is not None:
        raise _fail(name, bad, f"area {areas[bad]} is negative")
    crowd = _integers(columns.get("iscrowd", np.zeros(count)), name, "iscrowd") != 0
    _check_known(images, image_ids, name, "image_id", "in the dataset's images")
    _check_known(categories, category_ids, name, "category_id", "in the dataset's categories")
    order = np.argsort(ids, kind="stable")
    repeated = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if len(repeated):
        later = int(order[repeated + 1].min())
        raise _fail(name, later, f"id {int(ids[later])} is used by another annotation too (pycocotools "
                                 "would silently evaluate one of them twice); annotation ids must be unique")
    return CocoGroundTruth(image_ids, category_ids, names, ids, images, categories, boxes, areas, crowd)


def _annotation_columns(annotations: Any, name: str) -> dict[str, np.ndarray]:
    if not isinstance(annotations, list):
        raise ValueError(f"{name}: expected a list, got {type(annotations).__name__}")
    columns = {key: _numbers(_field(annotations, key, name), name, key) for key in ("id", "image_id", "category_id", "area")}
    columns["bbox"] = _numbers(_field(annotations, "bbox", name), name, "bbox", width=4)
    # pycocotools needs iscrowd (KeyError without it); faster-coco-eval reads a missing one as 0, as we do.
    columns["iscrowd"] = _numbers([item.get("iscrowd", 0) for item in annotations], name, "iscrowd", booleans=True)
    return columns


def ground_truth_from_dataset(dataset: Mapping, where: str = "ground_truth") -> CocoGroundTruth:
    """A COCO dataset dict -> CocoGroundTruth (checked)."""
    if not isinstance(dataset, Mapping):
        raise ValueError(f"{where}: expected a COCO dataset (a dict), got {type(dataset).__name__}")
    if "annotations" not in dataset:
        raise ValueError(f"{where}: missing key 'annotations' (a COCO dataset has images, annotations and categories)")
    parts = _dataset_parts(dataset, where)
    name = f"{where} annotations"
    annotations = dataset["annotations"]
    return _annotations(_annotation_columns(annotations, name), len(annotations), parts, name)


def _records_columns(records: Records, keys: tuple[str, ...], name: str, widths: Mapping[str, int]) -> dict:
    """Records from the fast reader -> columns, with the same checks as the dict path."""
    if records.count == 0:
        return {key: np.zeros((0, widths[key]) if key in widths else 0) for key in keys}
    for key in keys:
        if key not in records.columns:
            raise _fail(name, 0, f"missing key {key!r}")
        width = widths.get(key, 0)
        shape = records.columns[key].shape
        if (width and shape != (records.count, width)) or (not width and len(shape) != 1):
            raise _fail(name, 0, f"{key} must be {'a list of %d numbers' % width if width else 'a number'}")
    return dict(records.columns)


def load_ground_truth(source: Mapping | str | os.PathLike | CocoGroundTruth) -> CocoGroundTruth:
    """A COCO dataset dict, a JSON path, or an already loaded CocoGroundTruth."""
    if isinstance(source, CocoGroundTruth):
        return source
    if isinstance(source, Mapping):
        return ground_truth_from_dataset(source)
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"ground_truth: expected a COCO dataset dict or a JSON path, got {type(source).__name__}")
    path = Path(source)
    text = path.read_bytes()
    fast = read_ground_truth(text)
    if fast is None:
        return ground_truth_from_dataset(_load_json(text, path), str(path))
    dataset, records = fast
    name = f"{path} annotations"
    columns = _records_columns(records, ("id", "image_id", "category_id", "bbox", "area"), name, {"bbox": 4})
    return _annotations(columns, records.count, _dataset_parts(dataset, str(path)), name)


def _load_json(text: bytes, path: Path) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def _check_detections(found: CocoDetections, truth: CocoGroundTruth, name: str) -> CocoDetections:
    _check_boxes(found.boxes, name)
    _check_finite(found.scores, name, "score")
    # pycocotools asserts on unknown images and silently drops unknown categories.
    _check_known(found.images, truth.image_ids, name, "image_id", "an image of the ground truth")
    _check_known(found.categories, truth.category_ids, name, "category_id", "a category of the ground truth")
    return found


def load_detections(source: Any, truth: CocoGroundTruth) -> CocoDetections:
    """COCO results (list of dicts, (N, 7) array or JSON path) -> CocoDetections, checked against
    the ground truth's images and categories."""
    if isinstance(source, CocoDetections):
        return _check_detections(source, truth, "detections")
    if isinstance(source, np.ndarray):
        if source.ndim != 2 or source.shape[1] != 7 or not np.issubdtype(source.dtype, np.number):
            raise ValueError(f"detections: expected a numeric array {DETECTION_LAYOUT}, got shape {source.shape}")
        rows = source.astype(np.float64)
        _check_finite(rows, "detections", f"row ({DETECTION_LAYOUT})")
        found = CocoDetections(_integers(rows[:, 0], "detections", "image_id"),
                               _integers(rows[:, 6], "detections", "category_id"), rows[:, 1:5], rows[:, 5])
        return _check_detections(found, truth, "detections")
    name = "detections"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        text = path.read_bytes()
        records, name = read_records(text), str(path)
        if records is not None:
            columns = _records_columns(records, ("image_id", "category_id", "bbox", "score"), name, {"bbox": 4})
            return _detection_columns(columns, truth, name)
        source = _load_json(text, path)
    if not isinstance(source, list):
        raise ValueError(f"{name}: expected a list of COCO result dicts, an array {DETECTION_LAYOUT} "
                         f"or a JSON path, got {type(source).__name__}")
    columns = {key: _numbers(_field(source, key, name), name, key) for key in ("image_id", "category_id", "score")}
    columns["bbox"] = _numbers(_field(source, "bbox", name), name, "bbox", width=4)
    return _detection_columns(columns, truth, name)


def _detection_columns(columns: Mapping[str, np.ndarray], truth: CocoGroundTruth, name: str) -> CocoDetections:
    found = CocoDetections(
        images=_integers(columns["image_id"], name, "image_id"),
        categories=_integers(columns["category_id"], name, "category_id"),
        boxes=np.asarray(columns["bbox"], dtype=np.float64).reshape(-1, 4),
        scores=np.asarray(columns["score"], dtype=np.float64),
    )
    return _check_detections(found, truth, name)
