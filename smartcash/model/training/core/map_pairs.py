"""Candidate (prediction, ground truth) pairs for matching: the pairs of one (image, class) group,
and their IoU as COCOeval or ultralytics computes it (numpy only)."""

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


def same_group_pairs(prediction_group: np.ndarray, truth_group: np.ndarray, num_groups: int | None = None) -> Pairs:
    """All pairs sharing a group id. Both inputs are sorted ascending: (N,) and (M,) -> Pairs.

    num_groups: an upper bound of the group ids, if small enough for a table (faster than
    binary searches).
    """
    if num_groups is not None and num_groups <= 8 * (len(prediction_group) + len(truth_group)) + 4096:
        per_group = np.bincount(truth_group, minlength=num_groups)
        first = np.cumsum(per_group) - per_group
        start, count = first[prediction_group], per_group[prediction_group]  # (N,) each
    else:
        start = np.searchsorted(truth_group, prediction_group, side="left")  # (N,)
        count = np.searchsorted(truth_group, prediction_group, side="right") - start  # (N,)
    prediction = np.repeat(np.arange(len(prediction_group), dtype=np.int64), count)  # (P,)
    first_of_prediction = np.repeat(np.cumsum(count) - count, count)  # (P,)
    ground_truth = start[prediction] + (np.arange(len(prediction), dtype=np.int64) - first_of_prediction)
    return Pairs(prediction, ground_truth)


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
    prediction = predicted_xyxy.astype(np.float32)
    truth = truth_xyxy.astype(np.float32)
    overlap = np.maximum(np.minimum(truth[:, 2:], prediction[:, 2:]) - np.maximum(truth[:, :2], prediction[:, :2]), 0)
    intersection = overlap[:, 0] * overlap[:, 1]
    truth_size = truth[:, 2:] - truth[:, :2]
    prediction_size = prediction[:, 2:] - prediction[:, :2]
    union = truth_size[:, 0] * truth_size[:, 1] + prediction_size[:, 0] * prediction_size[:, 1] - intersection
    return intersection / (union + np.float32(1e-7))
