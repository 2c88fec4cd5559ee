"""The named result of the mAP calculator (numpy only)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np


def _plain(value: Any) -> Any:
    """JSON-ready copy: arrays -> nested lists, NaN -> None."""
    if isinstance(value, MapResult):
        return value.to_dict()
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass(frozen=True, eq=False)
class MapResult:
    """mAP and friends over C classes. Classes with no ground truth hold NaN and enter no mean.

    Attributes:
        mode: "coco" or "yolo", the semantics used.
        num_images: images seen by update().
        num_targets_per_class: (C,) int64 ground-truth boxes per class.
        num_predictions_per_class: (C,) int64 predictions given per class (before COCO's top-100 cut).
        map50: mean AP at IoU 0.5 over classes with ground truth (NaN if none).
        map50_95: mean AP over IoU 0.50:0.05:0.95 and classes with ground truth (NaN if none).
        ap: (C, 10) AP per class and IoU threshold; NaN rows for classes without ground truth.
        precision, recall, f1: (C,) at `best_confidence`, the confidence-grid point that maximises
            the smoothed mean F1 (ultralytics' rule, both modes).
        mean_precision, mean_recall, mean_f1: their means over classes with ground truth.
        best_confidence: the chosen confidence (NaN if no ground truth).
        iou_thresholds: (10,) 0.50 ... 0.95.
        pr_recall: (101,) recall points; pr_curve: (C, 101) interpolated precision at IoU 0.5.
        confidence_grid: (1000,); precision_curve, recall_curve, f1_curve: (C, 1000) over it.
        main: the same result over the main classes when a class_map was given, else None.
    """

    mode: str
    num_images: int
    num_targets_per_class: np.ndarray
    num_predictions_per_class: np.ndarray
    map50: float
    map50_95: float
    ap: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    mean_precision: float
    mean_recall: float
    mean_f1: float
    best_confidence: float
    iou_thresholds: np.ndarray
    pr_recall: np.ndarray
    pr_curve: np.ndarray
    confidence_grid: np.ndarray
    precision_curve: np.ndarray
    recall_curve: np.ndarray
    f1_curve: np.ndarray
    main: MapResult | None = None

    @property
    def num_classes(self) -> int:
        return int(self.ap.shape[0])

    @property
    def ap50(self) -> np.ndarray:
        """(C,) AP at IoU 0.5."""
        return self.ap[:, 0]

    @property
    def ap50_95(self) -> np.ndarray:
        """(C,) AP averaged over the 10 IoU thresholds."""
        return self.ap.mean(axis=1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: arrays become lists, NaN becomes None, `main` nests."""
        return {field.name: _plain(getattr(self, field.name)) for field in fields(self)}
