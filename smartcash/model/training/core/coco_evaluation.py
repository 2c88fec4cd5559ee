"""``evaluate_coco``: pycocotools' ``COCOeval`` (iouType "bbox") as one function call, numpy only.

    result = evaluate_coco("instances_val2017.json", "detections.json")
    result.stats            # the 12 numbers of COCOeval.stats, same order, equal to 1e-12
    result.eval["precision"]  # (T, R, K, A, M), COCOeval's array and -1 convention

Every rule of COCOeval that changes a number is followed (see ``coco_core``): crowds, area
ranges from the annotations' ``area`` fields, per-category top-maxDets, images without ground
truth, categories without ground truth (-1, out of the means), score ties (stable order),
``use_categories=False`` (pycocotools' useCats=0). An annotation's own ``ignore`` field is not
read: pycocotools overwrites it with ``iscrowd``, and so do we.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from smartcash.model.training.core.coco_accumulation import RECALL_THRESHOLDS, CocoCurves
from smartcash.model.training.core.coco_core import IOU_THRESHOLDS, CocoInput, run_coco
from smartcash.model.training.core.coco_inputs import (
    CocoDetections,
    CocoGroundTruth,
    id_positions,
    load_detections,
    load_ground_truth,
)

logger = logging.getLogger(__name__)

COCO_AREA_RANGES = {"all": (0, 1e5**2), "small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, 1e5**2)}
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# COCOeval.summarize: (average precision?, IoU, area label, maxDets: index into maxDets, or None
# for the literal 100 that stats[0] uses as _summarize's default).
_SUMMARY = (
    (True, None, "all", None), (True, 0.5, "all", 2), (True, 0.75, "all", 2),
    (True, None, "small", 2), (True, None, "medium", 2), (True, None, "large", 2),
    (False, None, "all", 0), (False, None, "all", 1), (False, None, "all", 2),
    (False, None, "small", 2), (False, None, "medium", 2), (False, None, "large", 2),
)
_LINE = " {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>3d} ] = {:0.3f}"  # COCOeval's iStr


@dataclass(frozen=True, eq=False)
class CocoEvaluation:
    """What COCOeval's evaluate / accumulate / summarize leave behind.

    stats: (12,) in COCOeval.stats order (STAT_NAMES); -1 where nothing was measurable.
    precision: (T, R, K, A, M); recall: (T, K, A, M); scores: (T, R, K, A, M): COCOeval.eval's
    arrays, -1 for a category without (non-ignored) ground truth in that area range (curves:
    the object that computes them; precision and scores for maxDets values the summary does not
    read are computed on first access).
    iou_thresholds (T,), recall_thresholds (R,); category_ids (K,) ([-1] when categories were not
    used), category_names (K,); area_labels, area_ranges (A, 2); max_detections (M,) ascending;
    image_ids (I,) evaluated; num_truths (K, A) non-ignored ground truths; num_detections (K,).
    """

    stats: np.ndarray
    curves: CocoCurves
    iou_thresholds: np.ndarray
    recall_thresholds: np.ndarray
    category_ids: np.ndarray
    category_names: tuple[str, ...]
    area_labels: tuple[str, ...]
    area_ranges: np.ndarray
    max_detections: tuple[int, ...]
    image_ids: np.ndarray
    num_truths: np.ndarray
    num_detections: np.ndarray

    @property
    def precision(self) -> np.ndarray:
        return self.curves.precision

    @property
    def recall(self) -> np.ndarray:
        return self.curves.recall

    @property
    def scores(self) -> np.ndarray:
        return self.curves.scores

    @property
    def eval(self) -> dict[str, Any]:
        """COCOeval.eval's keys: counts [T, R, K, A, M], precision, recall, scores."""
        precision = self.precision
        return {"counts": list(precision.shape), "precision": precision, "recall": self.recall, "scores": self.scores}

    @property
    def truths_per_category(self) -> np.ndarray:
        """(K,) non-crowd ground truths of each category in the "all" area range (or the first)."""
        area = self.area_labels.index("all") if "all" in self.area_labels else 0
        return self.num_truths[:, area]

    def summary_lines(self) -> list[str]:
        """The 12 lines COCOeval.summarize prints."""
        return [line for line, _ in summarize(self)]

    @cached_property
    def category_stats(self) -> np.ndarray:
        """(K, 12): the 12 summary numbers of each category alone (-1 where not measurable)."""
        rows = [[value for _, value in summarize(self, k)] for k in range(len(self.category_ids))]
        return np.array(rows, dtype=np.float64).reshape(-1, len(STAT_NAMES))

    def per_category_table(self) -> str:
        """A text table: one row per category with its ground truths, detections and 12 numbers."""
        header = ["id", "name", "truths", "detections", *STAT_NAMES]
        rows = [header]
        for k, stats in enumerate(self.category_stats):
            cells = [f"{value:.3f}" if value > -1 else "-" for value in stats]  # -1: not measurable
            rows.append([str(int(self.category_ids[k])), self.category_names[k], str(int(self.truths_per_category[k])),
                         str(int(self.num_detections[k])), *cells])
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        return "\n".join("  ".join(cell.rjust(width) if i != 1 else cell.ljust(width)
                                   for i, (cell, width) in enumerate(zip(row, widths))) for row in rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: stats by name, the summary lines, per-category numbers, parameters."""
        per_category = [
            {"id": int(self.category_ids[k]), "name": self.category_names[k],
             "num_truths": int(self.truths_per_category[k]),
             "num_detections": int(self.num_detections[k]),
             **{name: float(value) for name, value in zip(STAT_NAMES, stats)}}
            for k, stats in enumerate(self.category_stats)
        ]
        return {
            "stats": {name: float(value) for name, value in zip(STAT_NAMES, self.stats)},
            "summary": self.summary_lines(),
            "per_category": per_category,
            "params": {
                "iou_type": "bbox",
                "iou_thresholds": self.iou_thresholds.tolist(),
                "area_ranges": {label: list(map(float, bounds)) for label, bounds in zip(self.area_labels, self.area_ranges)},
                "max_detections": list(self.max_detections),
                "num_images": len(self.image_ids),
            },
        }


def summarize(result: CocoEvaluation, category: int | None = None) -> list[tuple[str, float]]:
    """COCOeval._summarize for each of the 12 stats, over all categories or one: [(line, value)].

    Reads curves, iou_thresholds, area_labels and max_detections of `result`; precision only at
    the maxDets values it needs.
    """
    rows = []
    for average_precision, iou, area, index in _SUMMARY:
        max_dets = 100 if index is None else result.max_detections[index]
        area_index = [i for i, label in enumerate(result.area_labels) if label == area]
        max_index = [i for i, limit in enumerate(result.max_detections) if limit == max_dets]  # 0 or 1
        if max_index:  # as s[:, :, :, aind, mind]
            m = max_index[0]
            values = result.curves.at(m)[0] if average_precision else result.curves.recall[..., m]
            if iou is not None:
                values = values[np.where(iou == result.iou_thresholds)[0]]
            if category is not None:
                values = values[:, :, [category]] if average_precision else values[:, [category]]
            values = values[..., area_index]
        else:
            values = np.zeros(0)
        valid = values[values > -1]
        mean = float(np.mean(valid)) if len(valid) else -1.0
        iou_text = f"{result.iou_thresholds[0]:0.2f}:{result.iou_thresholds[-1]:0.2f}" if iou is None else f"{iou:0.2f}"
        title, kind = ("Average Precision", "(AP)") if average_precision else ("Average Recall", "(AR)")
        rows.append((_LINE.format(title, kind, iou_text, area, max_dets, mean), mean))
    return rows


def _check_max_detections(max_detections: Sequence[int]) -> tuple[int, ...]:
    values = sorted(max_detections) if isinstance(max_detections, (list, tuple, np.ndarray)) else None
    if (
        values is None or len(values) < 3 or len(set(values)) != len(values)
        or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in values)
    ):
        raise ValueError(f"max_detections: expected at least 3 distinct positive integers (COCOeval's summary "
                         f"reads maxDets[0], [1] and [2]), got {max_detections!r}")
    return tuple(int(v) for v in values)


def _check_area_ranges(area_ranges: Mapping[str, Sequence[float]]) -> tuple[tuple[str, ...], np.ndarray]:
    if not isinstance(area_ranges, Mapping) or not area_ranges:
        raise ValueError(f"area_ranges: expected a dict label -> (low, high), got {area_ranges!r}")
    bounds = []
    for label, value in area_ranges.items():
        pair = np.asarray(value, dtype=np.float64) if np.ndim(value) == 1 and len(value) == 2 else None
        if pair is None or not np.isfinite(pair).all() or pair[0] > pair[1]:
            raise ValueError(f"area_ranges[{label!r}]: expected (low, high) with low <= high, got {value!r}")
        bounds.append(pair)
    return tuple(str(label) for label in area_ranges), np.array(bounds)


def _select(requested: Sequence[int] | None, known: np.ndarray, what: str, keep_order: bool) -> np.ndarray:
    """The ids to evaluate: all known ones, or the requested ones (checked, deduplicated)."""
    if requested is None:
        return known
    values = np.asarray(list(requested))
    if values.ndim != 1 or not (np.issubdtype(values.dtype, np.integer) or len(values) == 0):
        raise ValueError(f"{what}: expected a sequence of integer ids, got {requested!r}")
    values = values.astype(np.int64)
    unknown = values[~np.isin(values, known)]
    if len(unknown):
        raise ValueError(f"{what}: {unknown[:10].tolist()} not in the ground truth")
    if keep_order:  # useCats=0 gathers categories in the order given
        return values[np.sort(np.unique(values, return_index=True)[1])]
    return np.unique(values)


def _positions(ids: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each id in `chosen` (unique, any order) and whether it is there at all."""
    if len(chosen) < 2 or (np.diff(chosen) > 0).all():
        index = id_positions(ids, chosen)
    else:  # useCats=0 keeps the caller's category order
        sorter = np.argsort(chosen)
        index = id_positions(ids, chosen[sorter])
        index = np.where(index >= 0, sorter[np.maximum(index, 0)], -1)
    return np.maximum(index, 0), index >= 0


def _core_input(truth: CocoGroundTruth, found: CocoDetections, images: np.ndarray, categories: np.ndarray,
                use_categories: bool) -> CocoInput:
    """Keep what COCOeval's _prepare keeps (selected images and categories), number images and
    categories, and order rows as COCOeval gathers them."""
    detection_image, on_image = _positions(found.images, images)
    detection_category, on_category = _positions(found.categories, categories)
    truth_image, truth_on_image = _positions(truth.images, images)
    truth_category, truth_on_category = _positions(truth.categories, categories)
    kept = np.flatnonzero(on_image & on_category)
    truth_kept = np.flatnonzero(truth_on_image & truth_on_category)
    num_categories = len(categories)
    if not use_categories:  # one pool per image, gathered category by category (p.catIds order)
        kept = kept[np.argsort(detection_category[kept], kind="stable")]
        truth_kept = truth_kept[np.argsort(truth_category[truth_kept], kind="stable")]
        detection_category, truth_category, num_categories = np.zeros_like(detection_category), np.zeros_like(truth_category), 1
    counted = truth.annotation_ids[truth_kept] != 0
    if not counted.all():
        logger.warning("%d annotation(s) with id 0: pycocotools counts detections matched to them as false "
                       "positives (it stores matched ids and 0 means none); evaluate_coco does the same for "
                       "parity. Number annotations from 1 to avoid it.", int((~counted).sum()))
    return CocoInput(
        detection_boxes=np.take(found.boxes, kept, axis=0), detection_scores=found.scores[kept],
        detection_images=detection_image[kept], detection_categories=detection_category[kept],
        truth_boxes=np.take(truth.boxes, truth_kept, axis=0), truth_areas=truth.areas[truth_kept],
        truth_crowd=truth.crowd[truth_kept],
        truth_counted=counted, truth_images=truth_image[truth_kept], truth_categories=truth_category[truth_kept],
        num_images=len(images), num_categories=num_categories,
    )


def evaluate_coco(
    ground_truth: Mapping | str | Any,
    detections: Sequence[Mapping] | np.ndarray | str | Any,
    iou_type: str = "bbox",
    category_ids: Sequence[int] | None = None,
    image_ids: Sequence[int] | None = None,
    max_detections: Sequence[int] = (1, 10, 100),
    area_ranges: Mapping[str, Sequence[float]] = COCO_AREA_RANGES,
    use_categories: bool = True,
) -> CocoEvaluation:
    """COCOeval(gt, gt.loadRes(dt), "bbox") with evaluate(), accumulate() and summarize().

    Args:
        ground_truth: a COCO dataset dict or the path of its JSON file.
        detections: COCO results: a list of dicts (image_id, category_id, bbox [x, y, w, h],
            score), an (N, 7) array [image_id, x, y, w, h, score, category_id], or a JSON path.
        iou_type: "bbox" (the only one; segm and keypoints need masks / keypoint models).
        category_ids, image_ids: evaluate these only (COCOeval params.catIds / imgIds); default all.
        max_detections: COCOeval params.maxDets (at least 3; sorted).
        area_ranges: label -> (low, high) on the annotations' ``area``; the summary reads the
            labels "all", "small", "medium" and "large".
        use_categories: False pools all categories, as COCOeval's params.useCats = 0.

    Raises:
        ValueError: naming the entry, for unknown image or category ids, missing keys, non-finite
            numbers, negative widths or heights or areas, repeated annotation ids, bad arguments.
    """
    if iou_type != "bbox":
        raise ValueError(f"iou_type: only 'bbox' is supported (numpy only, no mask decoding), got {iou_type!r}")
    limits = _check_max_detections(max_detections)
    labels, ranges = _check_area_ranges(area_ranges)
    truth = load_ground_truth(ground_truth)
    found = load_detections(detections, truth)
    images = _select(image_ids, truth.image_ids, "image_ids", keep_order=False)
    categories = _select(category_ids, truth.category_ids, "category_ids", keep_order=not use_categories)
    data = _core_input(truth, found, images, categories, use_categories)
    core = run_coco(data, IOU_THRESHOLDS, ranges, limits)
    evaluation = CocoEvaluation(
        stats=np.zeros(len(STAT_NAMES)),
        curves=core.curves,
        iou_thresholds=IOU_THRESHOLDS.copy(),
        recall_thresholds=RECALL_THRESHOLDS.copy(),
        category_ids=categories.copy() if use_categories else np.array([-1]),
        category_names=tuple(truth.category_names[int(c)] for c in categories) if use_categories else ("all",),
        area_labels=labels,
        area_ranges=ranges,
        max_detections=limits,
        image_ids=images.copy(),
        num_truths=core.truth_counts,
        num_detections=np.bincount(data.detection_categories, minlength=data.num_categories),
    )
    # stats need the finished arrays: summarize the evaluation, then store the 12 numbers in it.
    return replace(evaluation, stats=np.array([value for _, value in summarize(evaluation)]))
