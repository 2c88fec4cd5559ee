"""The validation loop: every batch of a loader through ``ValidationBatchProcessor``, then one result.

Reporting (the tqdm bar's running loss, the progress callback) and the stop-request check run every
N batches; the metrics always see every batch and every image up to a stop, so the result does not
depend on the intervals. A stop request (Ctrl-C or SIGTERM while the trainer validates) ends the
loop at the next check with the metrics of the batches done, marked ``partial``. The thresholds come from
``ValidationSettings`` (``configs/default.yaml``), so the trainer and ``smartcash.val`` configure
the validator from one place.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from smartcash.model.training.core.classification_extractor import ClassificationExtractor
from smartcash.model.training.core.prediction_processor import PredictionProcessor
from smartcash.model.training.core.validation_batch_processor import (LossFunction, ValidationBatchProcessor,
                                                                      ValidationMetrics)
from smartcash.taxonomy import LossConfig, Taxonomy, load_loss_config, load_taxonomy

logger = logging.getLogger(__name__)

#: progress_callback(batches done, batches in all (0 when unknown), running mean loss per image: box + obj + cls)
ProgressCallback = Callable[[int, int, float], None]
#: asked every ``stop_check_interval`` batches: an Event that is set, or a callable that returns True, stops
StopRequest = Callable[[], bool] | threading.Event


@dataclass(frozen=True)
class ValidationSettings:
    """The numbers that define a validation run (``configs/default.yaml``: val_conf, val_iou,
    max_det, presence_threshold, fitness_map50, fitness_map50_95)."""

    conf_threshold: float  # see PredictionProcessor
    iou_threshold: float
    max_det: int
    presence_threshold: float  # see ClassificationExtractor
    fitness_weights: tuple[float, float]  # fitness = w0 * mAP50 + w1 * mAP50-95

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> ValidationSettings:
        """From ``TrainConfig.to_dict()`` or ``smartcash.config.default_values()``."""
        return cls(float(values["val_conf"]), float(values["val_iou"]), int(values["max_det"]),
                   float(values["presence_threshold"]),
                   (float(values["fitness_map50"]), float(values["fitness_map50_95"])))

    @classmethod
    def defaults(cls) -> ValidationSettings:
        """``configs/default.yaml``'s (read on call: importing this module reads no file)."""
        from smartcash.config import default_values

        return cls.from_values(default_values())


def _finite(value: float) -> float:
    """NaN (no ground truth at all) reads as 0 in the flat metrics row and in fitness."""
    return 0.0 if math.isnan(value) else float(value)


@dataclass(frozen=True)
class ValidationSample:
    """The first validation batch, for pictures: what the model saw and what it predicted there."""

    images: Tensor  # (B, 3, H, W) float32 in [0, 1], on the host, as the loader made them
    targets: Tensor  # (n, 6) [image, class, cx, cy, w, h] normalised to (W, H)
    predictions: Tensor  # (K, 7) [image, x1, y1, x2, y2, score, class] in input (letterboxed) pixels
    paths: tuple[str, ...]


def validation_sample(batch: Any, detections: Tensor) -> ValidationSample:
    """The host copy of one batch and its detections (source pixels -> the batch's input pixels).

    Args:
        batch: the loader's ``Batch`` (host tensors).
        detections: (K, 7) [image, x1, y1, x2, y2, score, class], source pixels, any device.
    """
    rows = detections.detach().float().cpu().clone()  # one transfer, once per validation
    letterbox = batch.letterbox.float().cpu()[rows[:, 0].long()]  # (K, 3) [scale, pad_x, pad_y]
    rows[:, 1:5] = rows[:, 1:5] * letterbox[:, :1] + letterbox[:, 1:3].repeat(1, 2)  # input = source * s + pad
    return ValidationSample(batch.images.cpu(), batch.targets.cpu(), rows, tuple(batch.paths))


@dataclass(frozen=True)
class ValidationResult:
    """What one validation run measured, over every image of the loader, and how it ran."""

    metrics: ValidationMetrics  # losses, mAP (fine / main), classification, image counts
    seconds: float  # wall time of the loop, data loading included
    mode: str  # "coco" or "yolo"
    fitness_weights: tuple[float, float]  # (mAP50, mAP50-95) weights of ``fitness``
    sample: ValidationSample | None = None  # the first batch, when asked for (pictures)
    partial: bool = False  # a stop request ended the loop before the last batch: not every image counted

    @property
    def images_per_second(self) -> float:
        return self.metrics.num_images / self.seconds if self.seconds > 0 else 0.0

    @property
    def fitness(self) -> float:
        """w0 * mAP50 + w1 * mAP50-95 over the fine classes (``fitness_weights``; YOLOv5's 0.1, 0.9)."""
        map50_weight, map50_95_weight = self.fitness_weights
        fine = self.metrics.fine
        return map50_weight * _finite(fine.map50) + map50_95_weight * _finite(fine.map50_95)

    def metrics_row(self) -> dict[str, float]:
        """The flat row the trainer writes to results.csv."""
        metrics = self.metrics
        return {
            "val/box_loss": metrics.box_loss,
            "val/obj_loss": metrics.obj_loss,
            "val/cls_loss": metrics.cls_loss,
            "metrics/precision": _finite(metrics.fine.mean_precision),
            "metrics/recall": _finite(metrics.fine.mean_recall),
            "metrics/mAP50": _finite(metrics.fine.map50),
            "metrics/mAP50-95": _finite(metrics.fine.map50_95),
            "metrics/main_mAP50": _finite(metrics.main.map50),
            "metrics/main_mAP50-95": _finite(metrics.main.map50_95),
            "metrics/denomination_accuracy": metrics.classification.denomination.accuracy,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes None)."""
        metrics = self.metrics
        return {
            "losses": {"box": metrics.box_loss, "obj": metrics.obj_loss, "cls": metrics.cls_loss},
            "metrics": self.metrics_row(),
            "fitness": self.fitness,
            "fine": metrics.fine.to_dict(),
            "main": metrics.main.to_dict(),
            "classification": metrics.classification.to_dict(),
            "images_per_class": metrics.images_per_class.tolist(),
            "images_per_main_class": metrics.images_per_main_class.tolist(),
            "num_images": metrics.num_images,
            "num_batches": metrics.num_batches,
            "seconds": self.seconds,
            "images_per_second": self.images_per_second,
            "partial": self.partial,
            "mode": self.mode,
        }


def _stop_requested(stop: StopRequest | None) -> bool:
    if stop is None:
        return False
    if isinstance(stop, threading.Event):
        return stop.is_set()
    return bool(stop())


class ValidationExecutor:
    """Runs validation loops; keeps one ``PredictionProcessor`` (and its grid cache) across runs.

    Args:
        taxonomy: the detector's classes (SmartCash's from loss.json when None).
        loss_config: loss weights for the validation loss (loss.json's when None).
        settings: thresholds and fitness weights (``configs/default.yaml``'s when None).
        mode: mAP semantics, "coco" (default) or "yolo".
        multi_label: see ``PredictionProcessor``.
        progress_interval: batches between progress reports (the bar's running loss, the callback;
            each costs a device sync).
        stop_check_interval: batches between checks of the stop request (a host-side check, no sync).
        show_progress: draw the tqdm bar (on stderr).
        fuse: evaluate a copy with each BatchNorm folded into its convolution (``smartcash.model.fuse``):
            the same boxes and scores within 1e-4, one pass less over every activation map.
    """

    def __init__(self, taxonomy: Taxonomy | None = None, loss_config: LossConfig | None = None,
                 settings: ValidationSettings | None = None, mode: str = "coco", multi_label: bool = True,
                 progress_interval: int = 10, stop_check_interval: int = 1, show_progress: bool = True,
                 fuse: bool = True) -> None:
        if mode not in ("coco", "yolo"):
            raise ValueError(f"mode must be 'coco' or 'yolo', got {mode!r}")
        if progress_interval < 1 or stop_check_interval < 1:
            raise ValueError("progress_interval and stop_check_interval must be >= 1")
        self.taxonomy = taxonomy if taxonomy is not None else load_taxonomy()
        self.loss_config = loss_config if loss_config is not None else load_loss_config()
        self.settings = settings if settings is not None else ValidationSettings.defaults()
        self.mode = mode
        self.processor = PredictionProcessor(self.taxonomy.num_classes, self.taxonomy.fine_to_main,
                                             self.settings.conf_threshold, self.settings.iou_threshold,
                                             self.settings.max_det, multi_label)
        self.extractor = ClassificationExtractor(self.taxonomy, self.settings.presence_threshold)
        self.progress_interval = progress_interval
        self.stop_check_interval = stop_check_interval
        self.show_progress = show_progress
        self.fuse = fuse

    def set_phase(self, phase: int) -> None:
        """The training phase changed: forget the processor's cached grids."""
        self.processor.set_phase(phase)

    def run(self, model: nn.Module, loader: Iterable[Any], device: torch.device | str | None = None,
            loss: LossFunction | None = None, compute_loss: bool = True, keep_sample: bool = False,
            progress_callback: ProgressCallback | None = None, stop: StopRequest | None = None) -> ValidationResult:
        """Validate ``model`` on every batch of ``loader``.

        Args:
            model: the detector (an EMA copy is fine); never changed (evaluated through a fused copy,
                or put in eval mode here and its mode restored after).
            loader: yields ``Batch`` objects.
            device: where to run; the model's parameters' device when None.
            loss: the validation loss; a ``YoloLoss(model, loss_config)`` when None and compute_loss.
            keep_sample: keep the first batch and its detections (``result.sample``) for pictures.
            progress_callback: called every ``progress_interval`` batches and after the last one.
            stop: checked every ``stop_check_interval`` batches (not after the last one); when it
                asks to stop, the metrics of the batches done so far come back with ``partial=True``.
        """
        device = torch.device(device) if device is not None else next(model.parameters()).device
        model_classes = getattr(model, "num_classes", self.taxonomy.num_classes)
        if model_classes != self.taxonomy.num_classes:
            raise ValueError(f"model predicts {model_classes} classes, the taxonomy has {self.taxonomy.num_classes}")
        if self.fuse:
            from smartcash.model.fuse import fused_copy

            model = fused_copy(model)
        if loss is None and compute_loss:
            from smartcash.model.loss import YoloLoss

            loss = YoloLoss(model, self.loss_config)
        batches = ValidationBatchProcessor(self.processor, self.extractor, self.taxonomy.fine_to_main, loss, self.mode)
        num_batches = len(loader) if hasattr(loader, "__len__") else 0
        was_training = model.training
        model.eval()
        first_batch = None
        partial = False
        start = time.perf_counter()
        bar = tqdm(total=num_batches or None, desc="val", file=sys.stderr, disable=not self.show_progress,
                   dynamic_ncols=True, leave=False)
        try:
            for index, batch in enumerate(loader, start=1):
                if keep_sample and index == 1:
                    first_batch = batch  # the host tensors, before the copy to the device
                batches.update(model, batch.to(device))
                bar.update(1)
                last = index == num_batches
                reporting = self.show_progress or progress_callback is not None
                if reporting and (index % self.progress_interval == 0 or last):
                    running = float(batches.running_loss().sum())  # a sync, only at report time
                    bar.set_postfix(loss=f"{running:.4f}", refresh=False)
                    if progress_callback is not None:
                        progress_callback(index, num_batches, running)
                # A loader of unknown length: a stop after its last batch still reads as partial.
                if index % self.stop_check_interval == 0 and not last and _stop_requested(stop):
                    logger.warning("validation stopped on request after %d of %s batches", index,
                                   num_batches or "?")
                    partial = True
                    break
            metrics = batches.compute()
            sample = validation_sample(first_batch, batches.batch_detections(0)) if first_batch is not None else None
        finally:
            bar.close()
            model.train(was_training)
        seconds = time.perf_counter() - start
        return ValidationResult(metrics, seconds, self.mode, self.settings.fitness_weights, sample, partial)

