"""mAP calculator: accumulates per-image predictions and ground truth, then computes AP per class at
IoU 0.50:0.05:0.95, mAP50, mAP50-95 and precision / recall / F1, exactly as pycocotools or
ultralytics would on the same inputs. Imports numpy only; torch tensors are accepted (any device).

Inputs, per image (numpy arrays or torch tensors; empty allowed):
    predictions (N, 6) [x1, y1, x2, y2, score, class], targets (M, 5) [class, x1, y1, x2, y2].

mode="coco": pycocotools ``COCOeval`` (iouType "bbox"), area range "all", maxDets 100
(pycocotools/cocoeval.py, version 2.0.11; also equal to faster-coco-eval):
  * IoU as ``maskUtils.iou`` on [x, y, w, h] (maskApi.c ``bbIou``): no +1 on widths, right edge
    computed as ``w + x``; a box with zero width or height has IoU 0 with everything.
  * Per image and class, detections sorted by score with a stable sort (``mergesort``; ties keep
    the caller's row order) and cut to the first 100 (``evaluateImg``: ``dt[0:maxDet]``).
  * Greedy matching per threshold in that order: a detection takes the unmatched ground truth with
    the highest IoU >= min(t, 1 - 1e-10); among equal IoUs the *last* one in row order wins
    (``if ious[d, g] < iou: continue`` lets an equal IoU replace the current best).
  * ``accumulate``: per class, detections of all images in image order (our update order; COCO
    uses sorted image ids, so a parity check numbers images in update order), then a stable sort
    by score; precision = tp / (tp + fp + eps), its envelope, read at 101 recall points with
    ``searchsorted(side="left")``, 0 beyond the last recall reached.
  * ``summarize``: map50_95 = stats[0], map50 = stats[1] (means of every precision entry > -1);
    ap[c, t] = mean over the 101 recall points of eval["precision"][t, :, c, 0, 2].
  * Images with neither ground truth nor predictions of a class do not matter; a class with
    predictions but no ground truth is -1 in COCO: NaN here, and out of every mean.
  * Boxes with area > 1e10 would be outside COCO's "all" area range (ignored, not counted): such
    input raises ValueError in this mode instead of changing the numbers silently.

mode="yolo": ultralytics 8.4 ``DetectionValidator`` (engine/validator.py ``match_predictions``
with use_scipy=False, utils/metrics.py ``box_iou``, ``ap_per_class``, ``compute_ap``, ``smooth``):
  * IoU in float32: inter / (area_gt + area_pred - inter + 1e-7); thresholds
    torch.linspace(0.5, 0.95, 10) in float32 (``iou >= threshold``).
  * Each image's predictions in NMS order, which we define as score descending with ties in row
    order (stable); scores are cast to float32 as the validator's conf tensor is.
  * Greedy matching in that order across all classes of the image: a prediction takes the
    unclaimed same-class target with the highest IoU (``argmax``: among equal IoUs the *first*)
    if that IoU >= threshold. No cut at 100 predictions.
  * ``ap_per_class``: the concatenated conf array (float32, or float64 when some image had no
    prediction, since the validator appends ``np.zeros(0)`` then) sorted with ``np.argsort(-conf)``
    (numpy's default, unstable kind: we make the identical call on the identical array, so ties
    come out identically); per class with labels, recall = tp / (n + 1e-16), precision =
    tp / (tp + fp), AP = trapezoid of ``np.interp`` of the envelope (with sentinels) at 101 points.
    A class with labels and no predictions has AP 0; one without labels is NaN and out of the means.

Both modes: precision, recall and F1 per class are read at the confidence (grid of 1000 points in
[0, 1]) that maximises the mean over classes with ground truth of F1, smoothed by a box filter of
width 0.1 (ultralytics ``ap_per_class``); in coco mode from COCO's matches at IoU 0.5 (of the kept
top-100 detections) in COCO's order. COCO itself defines no such operating point. Scores outside
[0, 1] (logits) rank as well as probabilities, so AP is right, but they fall off that grid:
``compute`` warns.

Speed: matching runs over all images, classes and thresholds at once (see ``map_matching``). The
coco mode runs through ``coco_core.run_coco``, the same matching and accumulation core as
``evaluate_coco`` (COCO JSON files, all 12 COCOeval numbers, crowds and area ranges).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from smartcash.model.training.core.map_evaluation import Detections, evaluate
from smartcash.model.training.core.map_inputs import (
    PREDICTION_LAYOUT,
    TARGET_LAYOUT,
    ImageRows,
    check_max_area,
    check_rows,
    to_rows,
)
from smartcash.model.training.core.map_result import MapResult

__all__ = ["MODES", "MapResult", "ParallelMapCalculator"]

MODES = ("coco", "yolo")
COCO_MAX_AREA = 1e5**2  # COCOeval areaRng "all" = [0, 1e5 ** 2]


class ParallelMapCalculator:
    """Accumulator with ``reset()`` / ``update(predictions, targets)`` / ``compute() -> MapResult``.

    Args:
        num_classes: number of (fine) classes; class ids are integers in [0, num_classes).
        mode: "coco" (pycocotools semantics) or "yolo" (ultralytics semantics).
        class_map: optional sequence, fine id -> main id; ``compute().main`` is then the same
            evaluation over main classes (predictions and targets both mapped).
    """

    def __init__(self, num_classes: int, mode: str = "coco", class_map: Sequence[int] | None = None) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive integer, got {num_classes!r}")
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        self.num_classes = int(num_classes)
        self.mode = mode
        self.class_map = self._check_class_map(class_map)
        self.reset()

    def _check_class_map(self, class_map: Sequence[int] | None) -> np.ndarray | None:
        if class_map is None:
            return None
        values = np.asarray(class_map)
        if values.shape != (self.num_classes,) or not np.issubdtype(values.dtype, np.integer) or (values < 0).any():
            raise ValueError(
                f"class_map: expected {self.num_classes} non-negative integers (fine id -> main id), "
                f"got {list(np.ravel(values))}"
            )
        return values.astype(np.int64)

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._predictions: list[ImageRows] = []
        self._targets: list[ImageRows] = []

    @property
    def num_images(self) -> int:
        return int(sum(len(batch.counts) for batch in self._predictions))

    def update(self, predictions: Sequence[Any], targets: Sequence[Any]) -> None:
        """Add one batch: one predictions array (N_i, 6) and one targets array (M_i, 5) per image.

        Raises:
            ValueError: naming the argument, the image index in this batch and what was expected,
                for wrong shapes, non-finite values, x2 < x1 or y2 < y1, class ids that are not
                integers in [0, num_classes), or different numbers of prediction and target entries.
        """
        prediction_rows = to_rows(predictions, "predictions", 6, PREDICTION_LAYOUT)
        target_rows = to_rows(targets, "targets", 5, TARGET_LAYOUT)
        if len(prediction_rows.counts) != len(target_rows.counts):
            raise ValueError(
                f"predictions has {len(prediction_rows.counts)} entries but targets has "
                f"{len(target_rows.counts)}: expected one entry per image in both"
            )
        check_rows(prediction_rows, "predictions", self.num_classes, 5, slice(0, 4), PREDICTION_LAYOUT)
        check_rows(target_rows, "targets", self.num_classes, 0, slice(1, 5), TARGET_LAYOUT)
        if self.mode == "coco":
            check_max_area(prediction_rows, "predictions", slice(0, 4), COCO_MAX_AREA)
            check_max_area(target_rows, "targets", slice(1, 5), COCO_MAX_AREA)
        self._predictions.append(prediction_rows)
        self._targets.append(target_rows)

    def _detections(self) -> Detections:
        def joined(batches: list[ImageRows], width: int) -> tuple[np.ndarray, np.ndarray]:
            counts = np.concatenate([batch.counts for batch in batches] or [np.zeros(0, np.int64)])
            rows = np.concatenate([batch.rows for batch in batches] or [np.zeros((0, width))])
            images = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
            return rows, images

        predictions, prediction_images = joined(self._predictions, 6)
        targets, truth_images = joined(self._targets, 5)
        predictions_per_image = np.concatenate(
            [batch.counts for batch in self._predictions] or [np.zeros(0, np.int64)]
        )
        return Detections(
            prediction_boxes=predictions[:, :4],
            prediction_scores=predictions[:, 4],
            prediction_classes=predictions[:, 5].astype(np.int64),
            prediction_images=prediction_images,
            truth_boxes=targets[:, 1:5],
            truth_classes=targets[:, 0].astype(np.int64),
            truth_images=truth_images,
            predictions_per_image=predictions_per_image,
        )

    def compute(self) -> MapResult:
        """Evaluate everything seen since the last reset (the state is kept)."""
        data = self._detections()
        scores = data.prediction_scores
        if len(scores) and not (scores.min() >= 0 and scores.max() <= 1):  # once per compute, on the host
            warnings.warn(f"prediction scores span [{scores.min():g}, {scores.max():g}], outside [0, 1] (logits?): "
                          "AP and mAP only rank them and are right, but precision, recall and F1 are read on a "
                          "[0, 1] confidence grid (as ultralytics does) and will be wrong; pass probabilities",
                          stacklevel=2)
        result = evaluate(data, self.num_classes, self.mode, self.num_images)
        if self.class_map is None:
            return result
        main_data = Detections(
            **{
                **data.__dict__,
                "prediction_classes": self.class_map[data.prediction_classes],
                "truth_classes": self.class_map[data.truth_classes],
            }
        )
        main = evaluate(main_data, int(self.class_map.max()) + 1, self.mode, self.num_images)
        return MapResult(**{**result.__dict__, "main": main})
