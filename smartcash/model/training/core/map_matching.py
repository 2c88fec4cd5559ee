"""Greedy prediction-to-ground-truth matching at many IoU thresholds, vectorized over all images.

Matching is sequential inside one (image, class) group: a prediction may only take a ground truth
that higher-scored predictions of the group left free. Groups are independent, so we iterate over
the *rank* inside a group and handle the k-th candidate prediction of every group, at every
threshold, with one set of numpy operations. The number of iterations is the largest number of
predictions that overlap some ground truth in one group, not the number of images or boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pairs:
    """(prediction, ground truth) pairs of the same (image, class) group.

    prediction: (P,) int64 index into the group-sorted predictions.
    ground_truth: (P,) int64 index into the group-sorted ground truths.
    """

    prediction: np.ndarray
    ground_truth: np.ndarray


def same_group_pairs(prediction_group: np.ndarray, truth_group: np.ndarray) -> Pairs:
    """All pairs sharing a group id. Both inputs are sorted ascending: (N,) and (M,) -> Pairs."""
    start = np.searchsorted(truth_group, prediction_group, side="left")  # (N,)
    count = np.searchsorted(truth_group, prediction_group, side="right") - start  # (N,)
    prediction = np.repeat(np.arange(len(prediction_group), dtype=np.int64), count)  # (P,)
    first_of_prediction = np.repeat(np.cumsum(count) - count, count)  # (P,)
    ground_truth = start[prediction] + (np.arange(len(prediction), dtype=np.int64) - first_of_prediction)
    return Pairs(prediction, ground_truth)


def coco_pair_iou(predicted_xyxy: np.ndarray, truth_xyxy: np.ndarray) -> np.ndarray:
    """IoU of paired boxes as pycocotools' ``maskUtils.iou`` computes it for bboxes (float64).

    pycocotools works on [x, y, w, h] with no +1 on widths (maskApi.c ``bbIou``): the right edge is
    ``w + x``, which can differ from x2 by rounding, so we go through xywh exactly as it does.
    predicted_xyxy, truth_xyxy: (P, 4) -> (P,).
    """
    px, py = predicted_xyxy[:, 0], predicted_xyxy[:, 1]
    pw, ph = predicted_xyxy[:, 2] - px, predicted_xyxy[:, 3] - py
    gx, gy = truth_xyxy[:, 0], truth_xyxy[:, 1]
    gw, gh = truth_xyxy[:, 2] - gx, truth_xyxy[:, 3] - gy
    width = np.minimum(pw + px, gw + gx) - np.maximum(px, gx)
    height = np.minimum(ph + py, gh + gy) - np.maximum(py, gy)
    overlap = (width > 0) & (height > 0)  # bbIou: `if (w <= 0) continue` -> IoU 0
    iou = np.zeros(len(px), dtype=np.float64)
    intersection = width[overlap] * height[overlap]
    union = pw[overlap] * ph[overlap] + gw[overlap] * gh[overlap] - intersection  # da + ga - i
    iou[overlap] = intersection / union
    return iou


def yolo_pair_iou(predicted_xyxy: np.ndarray, truth_xyxy: np.ndarray) -> np.ndarray:
    """IoU of paired boxes as ultralytics' ``box_iou(ground_truth, predictions)`` computes it.

    It casts to float32 (``.float()``), clamps the overlap at 0 and adds eps = 1e-7 to the union:
    inter / (area_truth + area_prediction - inter + eps), every step in float32.
    predicted_xyxy, truth_xyxy: (P, 4) -> (P,) float32.
    """
    prediction = predicted_xyxy.astype(np.float32)
    truth = truth_xyxy.astype(np.float32)
    overlap = np.maximum(np.minimum(truth[:, 2:], prediction[:, 2:]) - np.maximum(truth[:, :2], prediction[:, :2]), 0)
    intersection = overlap[:, 0] * overlap[:, 1]
    truth_size = truth[:, 2:] - truth[:, :2]
    prediction_size = prediction[:, 2:] - prediction[:, :2]
    union = truth_size[:, 0] * truth_size[:, 1] + prediction_size[:, 0] * prediction_size[:, 1] - intersection
    return intersection / (union + np.float32(1e-7))


def rank_in_group(group: np.ndarray) -> np.ndarray:
    """0, 1, 2 ... inside each run of equal values of a sorted array. (N,) -> (N,)."""
    index = np.arange(len(group))
    is_first = np.ones(len(group), dtype=bool)
    is_first[1:] = group[1:] != group[:-1]
    return index - np.maximum.accumulate(np.where(is_first, index, 0))


def greedy_match(
    pairs: Pairs,
    iou: np.ndarray,
    thresholds: np.ndarray,
    prediction_group: np.ndarray,
    num_predictions: int,
    num_truths: int,
    ties_to_last: bool,
) -> np.ndarray:
    """Greedy matching in prediction order, independently per group and threshold.

    Each prediction, in index order inside its group, takes the free ground truth with the highest
    IoU >= threshold; among equal IoUs the last ground truth (COCOeval) or the first (ultralytics).
    pairs: P pairs with iou (P,); thresholds (T,); prediction_group (N,) sorted ascending.
    Returns true_positive (N, T) bool.
    """
    true_positive = np.zeros((num_predictions, len(thresholds)), dtype=bool)
    keep = iou >= thresholds.min()  # a pair below every threshold can never match
    prediction, truth, iou = pairs.prediction[keep], pairs.ground_truth[keep], iou[keep]
    if len(prediction) == 0:
        return true_positive
    # Rank among the predictions that have a candidate: only they can take a ground truth away.
    candidates, pair_candidate = np.unique(prediction, return_inverse=True)
    pair_rank = rank_in_group(prediction_group[candidates])[pair_candidate]
    # Inside one prediction, the best pair is the last valid one in (iou, tie key) order.
    tie_key = truth if ties_to_last else -truth
    order = np.lexsort((tie_key, iou, prediction, pair_rank))
    prediction, truth, pair_rank = prediction[order], truth[order], pair_rank[order]
    passes = iou[order][:, None] >= thresholds[None, :]  # (P, T)
    segment_starts = np.flatnonzero(np.r_[True, prediction[1:] != prediction[:-1]])  # one per prediction
    rank_bounds = np.searchsorted(pair_rank, np.arange(pair_rank[-1] + 2))
    segment_bounds = np.searchsorted(segment_starts, rank_bounds)
    matched = np.zeros((num_truths, len(thresholds)), dtype=bool)  # ground truth taken, per threshold
    threshold_index = np.arange(len(thresholds))
    for rank in range(int(pair_rank[-1]) + 1):
        low, high = rank_bounds[rank], rank_bounds[rank + 1]
        starts = segment_starts[segment_bounds[rank] : segment_bounds[rank + 1]] - low
        truths = truth[low:high]
        valid = passes[low:high] & ~matched[truths]  # (S, T)
        position = np.where(valid, np.arange(high - low)[:, None], -1)
        best = np.maximum.reduceat(position, starts, axis=0)  # (segments, T), -1: no match
        segment, column = np.nonzero(best >= 0)
        chosen = best[segment, column]
        matched[truths[chosen], threshold_index[column]] = True
        true_positive[prediction[low + starts[segment]], column] = True
    return true_positive
