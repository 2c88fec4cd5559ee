"""The validation loop: every batch of a loader through ``ValidationBatchProcessor``, then one result.

Reporting (the tqdm bar's loss, the progress callback) and the stop-request check run every N
batches; the metrics always see every batch and every image, so the result does not depend on
the intervals. ``evaluate(model, loader, device)`` is the one-call entry the trainer uses.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from smartcash.model.training.core.classification_extractor import ClassificationExtractor, ClassificationResult
from smartcash.model.training.core.map_result import MapResult
from smartcash.model.training.core.prediction_processor import PredictionProcessor
from smartcash.model.training.core.validation_batch_processor import LossFunction, ValidationBatchProcessor
from smartcash.taxonomy import LossConfig, Taxonomy, load_loss_config, load_taxonomy

logger = logging.getLogger(__name__)

#: progress_callback(batch_index (1-based), num_batches, running mean loss per image: box + obj + cls)
ProgressCallback = Callable[[int, int, float], None]
StopRequest = Callable[[], bool] | threading.Event


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
    """What one validation run measured, over every image it saw (all of them unless ``partial``)."""

    box_loss: float
    obj_loss: float
    cls_loss: float
    fine: MapResult  # mAP & co over the detector's classes
    main: MapResult  # over the main classes
    classification: ClassificationResult
    images_per_class: np.ndarray  # (C,) images holding each fine class (ground truth)
    images_per_main_class: np.ndarray  # (M,)
    num_images: int
    num_batches: int
    seconds: float  # wall time of the loop, data loading included
    partial: bool  # True when a stop request ended the loop early
    mode: str  # "coco" or "yolo"
    sample: ValidationSample | None = None  # the first batch, when asked for (pictures)

    @property
    def images_per_second(self) -> float:
        return self.num_images / self.seconds if self.seconds > 0 else 0.0

    @property
    def fitness(self) -> float:
        """0.1 * mAP50 + 0.9 * mAP50-95 (YOLOv5's fitness), over the fine classes."""
        return 0.1 * _finite(self.fine.map50) + 0.9 * _finite(self.fine.map50_95)

    def metrics_row(self) -> dict[str, float]:
        """The flat row the trainer writes to results.csv."""
        return {
            "val/box_loss": self.box_loss,
            "val/obj_loss": self.obj_loss,
            "val/cls_loss": self.cls_loss,
            "metrics/precision": _finite(self.fine.mean_precision),
            "metrics/recall": _finite(self.fine.mean_recall),
            "metrics/mAP50": _finite(self.fine.map50),
            "metrics/mAP50-95": _finite(self.fine.map50_95),
            "metrics/main_mAP50": _finite(self.main.map50),
            "metrics/main_mAP50-95": _finite(self.main.map50_95),
            "metrics/denomination_accuracy": self.classification.denomination.accuracy,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes None)."""
        return {
            "losses": {"box": self.box_loss, "obj": self.obj_loss, "cls": self.cls_loss},
            "metrics": self.metrics_row(),
            "fitness": self.fitness,
            "fine": self.fine.to_dict(),
            "main": self.main.to_dict(),
            "classification": self.classification.to_dict(),
            "images_per_class": self.images_per_class.tolist(),
            "images_per_main_class": self.images_per_main_class.tolist(),
            "num_images": self.num_images,
            "num_batches": self.num_batches,
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
        mode: mAP semantics, "coco" (default) or "yolo".
        conf_threshold, iou_threshold, max_det, multi_label: see ``PredictionProcessor``.
        presence_threshold: see ``ClassificationExtractor``.
        progress_interval: batches between progress reports (bar loss, callback).
        stop_check_interval: batches between stop-request checks.
        show_progress: draw the tqdm bar (on stderr).
    """

    def __init__(self, taxonomy: Taxonomy | None = None, loss_config: LossConfig | None = None, mode: str = "coco",
                 conf_threshold: float = 0.001, iou_threshold: float = 0.6, max_det: int = 300,
                 multi_label: bool = True, presence_threshold: float = 0.25, progress_interval: int = 10,
                 stop_check_interval: int = 50, show_progress: bool = True) -> None:
        if mode not in ("coco", "yolo"):
            raise ValueError(f"mode must be 'coco' or 'yolo', got {mode!r}")
        if progress_interval < 1 or stop_check_interval < 1:
            raise ValueError("progress_interval and stop_check_interval must be >= 1")
        self.taxonomy = taxonomy if taxonomy is not None else load_taxonomy()
        self.loss_config = loss_config if loss_config is not None else load_loss_config()
        self.mode = mode
        self.processor = PredictionProcessor(self.taxonomy.num_classes, self.taxonomy.fine_to_main,
                                             conf_threshold, iou_threshold, max_det, multi_label)
        self.extractor = ClassificationExtractor(self.taxonomy, presence_threshold)
        self.progress_interval = progress_interval
        self.stop_check_interval = stop_check_interval
        self.show_progress = show_progress

    def set_phase(self, phase: int) -> None:
        """The training phase changed: forget the processor's cached grids."""
        self.processor.set_phase(phase)

    def run(self, model: nn.Module, loader: Iterable[Any], device: torch.device | str | None = None,
            progress_callback: ProgressCallback | None = None, stop: StopRequest | None = None,
            loss: LossFunction | None = None, compute_loss: bool = True,
            keep_sample: bool = False) -> ValidationResult:
        """Validate ``model`` on every batch of ``loader``.

        Args:
            model: the detector (an EMA copy is fine); put in eval mode here, its mode restored after.
            loader: yields ``Batch`` objects.
            device: where to run; the model's parameters' device when None.
            progress_callback: called every ``progress_interval`` batches and after the last one.
            stop: a callable or ``threading.Event``; checked every ``stop_check_interval`` batches.
                When it asks to stop, the metrics of the batches done so far come back, ``partial=True``.
            loss: the validation loss; a ``YoloLoss(model, loss_config)`` when None and compute_loss.
            keep_sample: keep the first batch and its detections (``result.sample``) for pictures.
        """
        device = torch.device(device) if device is not None else next(model.parameters()).device
        model_classes = getattr(model, "num_classes", self.taxonomy.num_classes)
        if model_classes != self.taxonomy.num_classes:
            raise ValueError(f"model predicts {model_classes} classes, the taxonomy has {self.taxonomy.num_classes}")
        if loss is None and compute_loss:
            from smartcash.model.loss import YoloLoss

            loss = YoloLoss(model, self.loss_config)
        batches = ValidationBatchProcessor(self.processor, self.extractor, self.taxonomy.fine_to_main, loss, self.mode)
        num_batches = len(loader) if hasattr(loader, "__len__") else 0
        was_training = model.training
        model.eval()
        partial = False
        first_batch = None
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
                if index % self.progress_interval == 0 or last:
                    running = float(batches.running_loss().sum())  # a sync, only at report time
                    bar.set_postfix(loss=f"{running:.4f}", refresh=False)
                    if progress_callback is not None:
                        progress_callback(index, num_batches, running)
                if index % self.stop_check_interval == 0 and not last and _stop_requested(stop):
                    logger.warning("validation stopped on request after %d of %d batches", index, num_batches)
                    partial = True
                    break
            metrics = batches.compute()
            sample = validation_sample(first_batch, batches.batch_detections(0)) if first_batch is not None else None
        finally:
            bar.close()
            model.train(was_training)
        seconds = time.perf_counter() - start
        return ValidationResult(box_loss=metrics.box_loss, obj_loss=metrics.obj_loss, cls_loss=metrics.cls_loss,
                                fine=metrics.fine, main=metrics.main, classification=metrics.classification,
                                images_per_class=metrics.images_per_class,
                                images_per_main_class=metrics.images_per_main_class,
                                num_images=metrics.num_images, num_batches=metrics.num_batches, seconds=seconds,
                                partial=partial, mode=self.mode, sample=sample)


def evaluate(model: nn.Module, loader: Iterable[Any], device: torch.device | str | None = None, *,
             taxonomy: Taxonomy | None = None, mode: str = "coco", progress_interval: int = 10,
             progress_callback: ProgressCallback | None = None, stop: StopRequest | None = None,
             show_progress: bool = True, **options: Any) -> ValidationResult:
    """Validate ``model`` on ``loader`` (torchvision-references style); ``options`` go to ``ValidationExecutor``."""
    executor = ValidationExecutor(taxonomy=taxonomy, mode=mode, progress_interval=progress_interval,
                                  show_progress=show_progress, **options)
    return executor.run(model, loader, device, progress_callback=progress_callback, stop=stop)
