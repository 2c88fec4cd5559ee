"""One full evaluation (matching + accumulation) in COCO or ultralytics semantics (numpy only).

See ``parallel_map_calculator`` for the rules and their sources. COCO semantics run through
``coco_core.run_coco``, the same core as ``evaluate_coco``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smartcash.model.training.core.coco_core import ALL_AREAS, IOU_THRESHOLDS, CocoInput, run_coco
from smartcash.model.training.core.map_accumulation import (
    CONFIDENCE_GRID,
    RECALL_POINTS,
    best_f1,
    confidence_curves,
    yolo_class_ap,
)
from smartcash.model.training.core.map_matching import greedy_match
from smartcash.model.training.core.map_pairs import overlapping_pairs, xyxy_to_xywh, yolo_pair_iou
from smartcash.model.training.core.map_result import MapResult

# ultralytics: torch.linspace(0.5, 0.95, 10) in float32; equal to this cast (checked in the tests).
IOU_THRESHOLDS_FLOAT32 = IOU_THRESHOLDS.astype(np.float32)
COCO_MAX_DETECTIONS = 100  # COCOeval maxDets[-1], per image and class


@dataclass(frozen=True)
class Detections:
    """Everything one evaluation needs, concatenated over images in update order.

    prediction_boxes: (N, 4) float64 xyxy; prediction_scores: (N,); prediction_classes: (N,) int64;
    prediction_images: (N,) int64 image index; truth_boxes: (M, 4); truth_classes, truth_images: (M,);
    predictions_per_image: (num_images,) int64.
    """

    prediction_boxes: np.ndarray
    prediction_scores: np.ndarray
    prediction_classes: np.ndarray
    prediction_images: np.ndarray
    truth_boxes: np.ndarray
    truth_classes: np.ndarray
    truth_images: np.ndarray
    predictions_per_image: np.ndarray


@dataclass(frozen=True)
class ClassEvaluation:
    """Per-class outcome of an accumulation.

    ap (C, 10); pr_curve (C, 101); precision_curve, recall_curve (C, 1000); NaN rows for classes
    without ground truth. coco_precision: COCOeval's eval["precision"][:, :, :, area all, 100 dets]
    (10, 101, C) with -1 for classes without ground truth (coco mode only).
    """

    ap: np.ndarray
    pr_curve: np.ndarray
    precision_curve: np.ndarray
    recall_curve: np.ndarray
    coco_precision: np.ndarray


def _accumulate(
    true_positive: np.ndarray,
    confidence: np.ndarray,
    classes: np.ndarray,
    truth_counts: np.ndarray,
    coco_precision: np.ndarray | None,
) -> ClassEvaluation:
    """Per-class AP and curves.

    true_positive (D, T), confidence (D,), classes (D,): sorted by class, then in the reference's
    score order. truth_counts: (C,) ground truths per class. coco_precision: COCOeval's
    (T, 101, C) precision (AP from it), or None for ultralytics' AP.
    """
    num_classes, num_thresholds = len(truth_counts), true_positive.shape[1]
    grid = len(CONFIDENCE_GRID)
    result = ClassEvaluation(
        ap=np.full((num_classes, num_thresholds), np.nan),
        pr_curve=np.full((num_classes, len(RECALL_POINTS)), np.nan),
        precision_curve=np.full((num_classes, grid), np.nan),
        recall_curve=np.full((num_classes, grid), np.nan),
        coco_precision=np.full((num_thresholds, len(RECALL_POINTS), num_classes), -1.0)
        if coco_precision is None else coco_precision,
    )
    bounds = np.searchsorted(classes, np.arange(num_classes + 1))  # (C + 1,) class segments
    for cls in np.flatnonzero(truth_counts):  # vectorized over detections and thresholds inside
        segment = slice(bounds[cls], bounds[cls + 1])
        hits, num_truths = true_positive[segment], int(truth_counts[cls])
        if coco_precision is not None:
            result.ap[cls] = coco_precision[:, :, cls].mean(axis=1)
            result.pr_curve[cls] = coco_precision[0, :, cls]
        elif len(hits):
            result.ap[cls], sampled = yolo_class_ap(hits, num_truths)
            result.pr_curve[cls] = sampled[0]
        else:  # ultralytics: a class with labels and no predictions has AP 0
            result.ap[cls], result.pr_curve[cls] = 0.0, 0.0
        if len(hits):
            curves = confidence_curves(hits[:, 0], confidence[segment], num_truths)
            result.precision_curve[cls], result.recall_curve[cls] = curves.precision, curves.recall
        else:
            result.precision_curve[cls], result.recall_curve[cls] = 0.0, 0.0
    return result


def _group_order(data: Detections, scores: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Predictions sorted by (image, class), score descending, ties in input order: (order, group)."""
    group = data.prediction_images * num_classes + data.prediction_classes
    order = np.lexsort((-scores, group))  # lexsort is stable
    return order, group[order]


def evaluate_coco_mode(data: Detections, num_classes: int) -> tuple[ClassEvaluation, float, float]:
    """COCOeval bbox, area "all", maxDets 100: (per-class evaluation, map50, map50_95).

    Image ids are the update order; boxes go to [x, y, w, h] as ``x2 - x1``, and a ground truth's
    area is w * h (what a COCO file written from these boxes holds); no crowds.
    """
    truth_boxes = xyxy_to_xywh(data.truth_boxes)
    core = run_coco(
        CocoInput(
            detection_boxes=xyxy_to_xywh(data.prediction_boxes),
            detection_scores=data.prediction_scores,
            detection_images=data.prediction_images,
            detection_categories=data.prediction_classes,
            truth_boxes=truth_boxes,
            truth_areas=truth_boxes[:, 2] * truth_boxes[:, 3],
            truth_crowd=np.zeros(len(truth_boxes), dtype=bool),
            truth_counted=np.ones(len(truth_boxes), dtype=bool),
            truth_images=data.truth_images,
            truth_categories=data.truth_classes,
            num_images=len(data.predictions_per_image),
            num_categories=num_classes,
        ),
        IOU_THRESHOLDS,
        np.array([ALL_AREAS]),
        (COCO_MAX_DETECTIONS,),
    )
    precision = core.curves.precision[:, :, :, 0, 0]  # (T, 101, C), -1 without ground truth
    order = core.detection_order  # kept detections: class, score descending, image, rank
    hits = core.true_positives(len(IOU_THRESHOLDS))  # (D, T) at area "all"
    truth_counts = np.bincount(data.truth_classes, minlength=num_classes)
    evaluation = _accumulate(hits, data.prediction_scores[order], data.prediction_classes[order], truth_counts, precision)
    # summarize: np.mean(s[s > -1]) over the (T, R, K) block, and over (R, K) at IoU 0.5.
    if not truth_counts.any():
        return evaluation, float("nan"), float("nan")
    at_50 = precision[:1]
    return evaluation, float(np.mean(at_50[at_50 > -1])), float(np.mean(precision[precision > -1]))


def _match_yolo(data: Detections, order: np.ndarray, group: np.ndarray, num_classes: int) -> np.ndarray:
    """True positives (len(order), 10) of the predictions `order`, which is sorted by `group`."""
    truth_group = data.truth_images * num_classes + data.truth_classes
    truth_order = np.argsort(truth_group, kind="stable")  # keeps each image's row order
    # The validator's boxes are float32: cast once, gather 16 bytes a pair instead of 32.
    predicted, truth = data.prediction_boxes[order].astype(np.float32), data.truth_boxes[truth_order].astype(np.float32)
    pairs, iou = overlapping_pairs(
        group, truth_group[truth_order],
        lambda pairs: yolo_pair_iou(np.take(predicted, pairs.prediction, axis=0), np.take(truth, pairs.ground_truth, axis=0)),
        float(IOU_THRESHOLDS_FLOAT32.min()),
    )
    matches = greedy_match(pairs, iou, IOU_THRESHOLDS_FLOAT32, group, ties_to_last=False)
    true_positive = np.zeros((len(order), len(IOU_THRESHOLDS)), dtype=bool)
    true_positive[matches.prediction, matches.column] = True
    return true_positive


def evaluate_yolo(data: Detections, num_classes: int) -> tuple[ClassEvaluation, float, float]:
    """ultralytics DetectionValidator + ap_per_class: (per-class evaluation, map50, map50_95)."""
    scores = data.prediction_scores.astype(np.float32)  # the validator's conf tensor is float32
    order, group = _group_order(data, scores, num_classes)
    true_positive = np.empty((len(order), len(IOU_THRESHOLDS)), dtype=bool)
    true_positive[order] = _match_yolo(data, order, group, num_classes)
    # The validator's stats: images in order, each in NMS order (score descending; ties: input order).
    validator_order = np.lexsort((-scores, data.prediction_images))
    # An image without predictions contributes np.zeros(0) (float64) to `conf`, which promotes the
    # concatenation to float64; the unstable argsort below may order ties differently per dtype.
    confidence = scores[validator_order]
    if (data.predictions_per_image == 0).any():
        confidence = confidence.astype(np.float64)
    by_score = np.argsort(-confidence)  # ap_per_class: default (unstable) kind, as ultralytics
    ranked = validator_order[by_score]
    by_class = np.argsort(data.prediction_classes[ranked], kind="stable")  # ap_per_class: pred_cls == c
    truth_counts = np.bincount(data.truth_classes, minlength=num_classes)
    evaluation = _accumulate(
        true_positive[ranked[by_class]],
        confidence[by_score][by_class],
        data.prediction_classes[ranked[by_class]],
        truth_counts,
        None,
    )
    present = truth_counts > 0
    if not present.any():
        return evaluation, float("nan"), float("nan")
    ap = evaluation.ap[present]
    return evaluation, float(ap[:, 0].mean()), float(ap.mean())


def evaluate(data: Detections, num_classes: int, mode: str, num_images: int) -> MapResult:
    """Match, accumulate and summarise into a MapResult (main=None)."""
    evaluator = evaluate_coco_mode if mode == "coco" else evaluate_yolo
    evaluation, map50, map50_95 = evaluator(data, num_classes)
    truth_counts = np.bincount(data.truth_classes, minlength=num_classes)
    present = truth_counts > 0
    per_class = np.full(num_classes, np.nan)
    precision, recall, f1 = per_class.copy(), per_class.copy(), per_class.copy()
    f1_curve = np.full_like(evaluation.precision_curve, np.nan)
    best_confidence = float("nan")
    if present.any():
        best = best_f1(evaluation.precision_curve[present], evaluation.recall_curve[present])
        precision[present], recall[present], f1[present] = best.precision, best.recall, best.f1
        f1_curve[present] = best.f1_curve
        best_confidence = best.confidence

    def mean(values: np.ndarray) -> float:
        return float(values[present].mean()) if present.any() else float("nan")

    return MapResult(
        mode=mode,
        num_images=num_images,
        num_targets_per_class=truth_counts,
        num_predictions_per_class=np.bincount(data.prediction_classes, minlength=num_classes),
        map50=map50,
        map50_95=map50_95,
        ap=evaluation.ap,
        precision=precision,
        recall=recall,
        f1=f1,
        mean_precision=mean(precision),
        mean_recall=mean(recall),
        mean_f1=mean(f1),
        best_confidence=best_confidence,
        iou_thresholds=IOU_THRESHOLDS.copy(),
        pr_recall=RECALL_POINTS.copy(),
        pr_curve=evaluation.pr_curve,
        confidence_grid=CONFIDENCE_GRID.copy(),
        precision_curve=evaluation.precision_curve,
        recall_curve=evaluation.recall_curve,
        f1_curve=f1_curve,
    )
