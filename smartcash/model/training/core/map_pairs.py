"""Candidate (prediction, ground truth) pairs for matching: the pairs of one (image, class) group,
and their IoU as COCOeval or ultralytics computes it (numpy only)."""

from __future__ import annotations

from collections.abc import Callable
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


#: Candidate pairs built at a time by ``overlapping_pairs``: their temporaries (indices, gathered
#: boxes, IoUs) take ~100 bytes a pair, ~100 MB a chunk, however many boxes share a group.
PAIRS_PER_CHUNK = 1 << 20


def _group_spans(prediction_group: np.ndarray, truth_group: np.ndarray, num_groups: int | None) -> tuple:
    """Per prediction, where its group's ground truths start in ``truth_group`` and how many
    there are: (start (N,), count (N,)). Both inputs sorted ascending.

    num_groups: an upper bound of the group ids, if small enough for a table (faster than
    binary searches).
    """
    if num_groups is not None and num_groups <= 8 * (len(prediction_group) + len(truth_group)) + 4096:
        per_group = np.bincount(truth_group, minlength=num_groups)
        first = np.cumsum(per_group) - per_group
        return first[prediction_group], per_group[prediction_group]
    start = np.searchsorted(truth_group, prediction_group, side="left")
    return start, np.searchsorted(truth_group, prediction_group, side="right") - start


def _expand(start: np.ndarray, count: np.ndarray, first_prediction: int = 0) -> Pairs:
    """Every (prediction, ground truth) pair of predictions ``first_prediction ..`` whose ground
    truths are ``start[i] .. start[i] + count[i] - 1``."""
    prediction = np.repeat(np.arange(len(count), dtype=np.int64), count)  # (P,)
    first_of_prediction = np.repeat(np.cumsum(count) - count, count)  # (P,)
    ground_truth = start[prediction] + (np.arange(len(prediction), dtype=np.int64) - first_of_prediction)
    return Pairs(prediction + first_prediction, ground_truth)


def same_group_pairs(prediction_group: np.ndarray, truth_group: np.ndarray, num_groups: int | None = None) -> Pairs:
    """All pairs sharing a group id. Both inputs are sorted ascending: (N,) and (M,) -> Pairs,
    in prediction order. num_groups: as ``_group_spans``."""
    return _expand(*_group_spans(prediction_group, truth_group, num_groups))


def overlapping_pairs(
    prediction_group: np.ndarray,
    truth_group: np.ndarray,
    pair_iou: Callable[[Pairs], np.ndarray],
    min_iou: float,
    num_groups: int | None = None,
    chunk_pairs: int | None = None,
) -> tuple[Pairs, np.ndarray]:
    """The same-group pairs whose IoU reaches ``min_iou``, and that IoU: (Pairs, iou (K,)), in
    prediction order, as ``same_group_pairs`` + ``pair_iou`` + a filter would give them.

    Built a run of predictions at a time (about ``chunk_pairs`` candidates each), so memory
    follows the pairs kept rather than all candidates: one image with 8000 predictions and 8000
    ground truths of a class has 64 million candidate pairs, of which a few thousand overlap.
    A pair below the lowest IoU threshold can never match, so nothing else needs the rest.
    pair_iou: Pairs -> (P,) IoU of each pair; chunk_pairs: None = ``PAIRS_PER_CHUNK``.
    """
    chunk_pairs = PAIRS_PER_CHUNK if chunk_pairs is None else chunk_pairs
    start, count = _group_spans(prediction_group, truth_group, num_groups)
    end = np.cumsum(count)
    total = int(end[-1]) if len(end) else 0
    if total <= chunk_pairs:
        pairs = _expand(start, count)
        iou = pair_iou(pairs)
        keep = iou >= min_iou
        return Pairs(pairs.prediction[keep], pairs.ground_truth[keep]), iou[keep]
    # Chunk k ends at the first prediction whose pairs reach (k + 1) * chunk_pairs.
    bounds = np.unique(np.r_[0, np.searchsorted(end, np.arange(chunk_pairs, total, chunk_pairs), side="right"), len(end)])
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for low, high in zip(bounds[:-1], bounds[1:]):
        pairs = _expand(start[low:high], count[low:high], int(low))
        iou = pair_iou(pairs)
        keep = iou >= min_iou
        kept.append((pairs.prediction[keep], pairs.ground_truth[keep], iou[keep]))
    prediction, ground_truth, iou = (np.concatenate(parts) for parts in zip(*kept))
    return Pairs(prediction, ground_truth), iou


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """[x1, y1, x2, y2] -> COCO's [x, y, width, height]. (N, 4) -> (N, 4) float64."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def coco_pair_iou(predicted_xywh: np.ndarray, truth_xywh: np.ndarray, truth_crowd: np.ndarray | None = None) -> np.ndarray:
    """IoU of paired [x, y, w, h] boxes as pycocotools' ``maskUtils.iou`` computes it (float64).

    Same operations as maskApi.c ``bbIou``: no +1 on widths, right edge ``w + x``, union
    ``area_d + area_g - intersection``; against a crowd ground truth the union is the
    prediction's own area (the part of the prediction inside the crowd region). A box with zero
    width or height, or no overlap, has IoU 0.
    predicted_xywh, truth_xywh: (P, 4); truth_crowd: (P,) bool or None -> (P,).
    """
    px, py, pw, ph = predicted_xywh.T
    gx, gy, gw, gh = truth_xywh.T
    width = np.minimum(pw + px, gw + gx) - np.maximum(px, gx)
    height = np.minimum(ph + py, gh + gy) - np.maximum(py, gy)
    overlap = (width > 0) & (height > 0)  # bbIou: `if (w <= 0) continue` -> IoU 0
    iou = np.zeros(len(px), dtype=np.float64)
    intersection = width[overlap] * height[overlap]
    predicted_area = pw[overlap] * ph[overlap]
    union = predicted_area + gw[overlap] * gh[overlap] - intersection  # da + ga - i
    if truth_crowd is not None:
        union = np.where(truth_crowd[overlap], predicted_area, union)  # crowd: u = da
    iou[overlap] = intersection / union
    return iou


def yolo_pair_iou(predicted_xyxy: np.ndarray, truth_xyxy: np.ndarray) -> np.ndarray:
    """IoU of paired boxes as ultralytics' ``box_iou(ground_truth, predictions)`` computes it.

    It casts to float32 (``.float()``), clamps the overlap at 0 and adds eps = 1e-7 to the union:
    inter / (area_truth + area_prediction - inter + eps), every step in float32.
    predicted_xyxy, truth_xyxy: (P, 4) -> (P,) float32.
    """
    prediction = np.asarray(predicted_xyxy, dtype=np.float32)
    truth = np.asarray(truth_xyxy, dtype=np.float32)
    overlap = np.maximum(np.minimum(truth[:, 2:], prediction[:, 2:]) - np.maximum(truth[:, :2], prediction[:, :2]), 0)
    intersection = overlap[:, 0] * overlap[:, 1]
    truth_size = truth[:, 2:] - truth[:, :2]
    prediction_size = prediction[:, 2:] - prediction[:, :2]
    union = truth_size[:, 0] * truth_size[:, 1] + prediction_size[:, 0] * prediction_size[:, 1] - intersection
    return intersection / (union + np.float32(1e-7))
