"""From matched predictions to AP, precision-recall and confidence curves, per class (numpy only).

``yolo_class_ap``: ultralytics ``compute_ap`` (np.interp on the envelope at 101 points, trapezoid rule).
``confidence_curves``: ultralytics ``ap_per_class``' precision/recall/F1 over a 1000-point confidence grid.
(COCOeval's accumulation, for every category, area range and maxDets at once, is ``coco_accumulation``.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCOeval recThrs; ultralytics _AP_X: same values
CONFIDENCE_GRID = np.linspace(0, 1, 1000)  # ultralytics ap_per_class `x`
EPS = 1e-16  # ultralytics ap_per_class eps


@dataclass(frozen=True)
class ClassCurves:
    """Precision (p), recall (r) over CONFIDENCE_GRID for one class. Each (1000,)."""

    precision: np.ndarray
    recall: np.ndarray


def _interpolate_envelope(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """ultralytics compute_ap's envelope sampled at 101 recall points, one column per threshold.

    recall, precision: (D, T) with D >= 1 -> (T, 101).
    """
    num_thresholds = recall.shape[1]
    ones, zeros = np.ones((1, num_thresholds)), np.zeros((1, num_thresholds))
    sentinel_recall = np.concatenate((zeros, recall, recall[-1:], ones))  # (D + 3, T)
    sentinel_precision = np.concatenate((ones, precision, zeros, zeros))
    envelope = np.flip(np.maximum.accumulate(np.flip(sentinel_precision, 0), axis=0), 0)
    return np.stack(
        [np.interp(RECALL_POINTS, sentinel_recall[:, t], envelope[:, t]) for t in range(num_thresholds)]
    )


def trapezoid(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Trapezoid rule along the last axis, same operations as np.trapezoid. (..., K), (K,) -> (...)."""
    return np.add.reduce(np.diff(x) * (values[..., 1:] + values[..., :-1]) / 2.0, axis=-1)


def yolo_class_ap(true_positive: np.ndarray, num_truths: int) -> tuple[np.ndarray, np.ndarray]:
    """ultralytics compute_ap for every threshold of one class.

    true_positive: (D, T) bool in ap_per_class order, D >= 1.
    Returns (ap (T,), precision at the 101 recall points (T, 101)).
    """
    tp_count = true_positive.cumsum(0)  # (D, T) int
    fp_count = (1 - true_positive).cumsum(0)
    recall = tp_count / (num_truths + EPS)
    precision = tp_count / (tp_count + fp_count)
    sampled = _interpolate_envelope(recall, precision)  # (T, 101)
    return trapezoid(sampled, RECALL_POINTS), sampled


def confidence_curves(true_positive_50: np.ndarray, confidence: np.ndarray, num_truths: int) -> ClassCurves:
    """Precision and recall over CONFIDENCE_GRID for one class, as ultralytics ap_per_class.

    true_positive_50: (D,) bool at IoU 0.5, confidence: (D,) sorted descending, D >= 1.
    """
    tp_count = true_positive_50.cumsum(0)
    fp_count = (1 - true_positive_50).cumsum(0)
    recall = tp_count / (num_truths + EPS)
    precision = tp_count / (tp_count + fp_count)
    # np.interp needs increasing x: negate the grid and the (descending) confidences.
    return ClassCurves(
        precision=np.interp(-CONFIDENCE_GRID, -confidence, precision, left=1),
        recall=np.interp(-CONFIDENCE_GRID, -confidence, recall, left=0),
    )


def smooth(values: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Box filter of width `fraction` of the length, edges padded (ultralytics `smooth`). (K,) -> (K,)."""
    width = round(len(values) * fraction * 2) // 2 + 1  # odd
    pad = np.ones(width // 2)
    padded = np.concatenate((pad * values[0], values, pad * values[-1]), 0)
    return np.convolve(padded, np.ones(width) / width, mode="valid")


@dataclass(frozen=True)
class BestF1:
    """Per-class precision/recall/F1 at the grid confidence that maximises the smoothed mean F1.

    precision, recall, f1: (K,) over the evaluated classes; f1_curve (K, 1000); confidence: scalar.
    """

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    confidence: float
    f1_curve: np.ndarray


def best_f1(precision_curve: np.ndarray, recall_curve: np.ndarray) -> BestF1:
    """ultralytics' choice of operating point. precision_curve, recall_curve: (K, 1000), K >= 1."""
    f1_curve = 2 * precision_curve * recall_curve / (precision_curve + recall_curve + EPS)
    index = int(smooth(f1_curve.mean(0), 0.1).argmax())
    return BestF1(
        precision=precision_curve[:, index],
        recall=recall_curve[:, index],
        f1=f1_curve[:, index],
        confidence=float(CONFIDENCE_GRID[index]),
        f1_curve=f1_curve,
    )
