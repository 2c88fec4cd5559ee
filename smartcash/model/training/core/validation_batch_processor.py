"""One validation batch: forward, loss, post-processing, accumulation; and the end-of-run metrics.

Per batch everything stays on the device: the loss parts are summed into a device tensor, the
detections and the ground truth (as source-image pixel xyxy) are appended to device lists, and
the classification extractor updates its device counters. ``compute()`` is the one place where
data crosses to the host: the accumulated rows are concatenated on the device, copied once, split
by image with numpy and handed to the mAP calculator (fine classes, and main classes through its
``class_map``) in a single ``update`` call. The calculator therefore matches exactly what it would
match if it were fed image by image, without a host copy per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from smartcash.model.boxes import xywh_to_xyxy
from smartcash.model.training.core.classification_extractor import ClassificationExtractor, ClassificationResult
from smartcash.model.training.core.map_result import MapResult
from smartcash.model.training.core.parallel_map_calculator import ParallelMapCalculator
from smartcash.model.training.core.prediction_processor import Detections, PredictionProcessor, undo_letterbox

#: A loss over raw head outputs and (n, 6) targets returning an object with box/obj/cls scalars.
LossFunction = Callable[[list[Tensor], Tensor], Any]


@dataclass(frozen=True)
class ValidationMetrics:
    """Everything ``ValidationBatchProcessor`` accumulated, as host numbers."""

    box_loss: float  # mean per image of the weighted YOLOv5 loss parts
    obj_loss: float
    cls_loss: float
    fine: MapResult  # over the detector's classes
    main: MapResult  # over the main classes
    classification: ClassificationResult
    images_per_class: np.ndarray  # (C,) int64 images holding >= 1 ground-truth box of each fine class
    images_per_main_class: np.ndarray  # (M,) the same per main class
    num_images: int
    num_batches: int


def targets_to_source_xyxy(targets: Tensor, input_shape: Sequence[int], letterbox: Tensor,
                           original_shapes: Tensor) -> Tensor:
    """Batch targets -> source-image pixel boxes, as the mAP calculator wants them.

    Args:
        targets: (n, 6) [image_index, class, cx, cy, w, h] normalised to the input (W, H).
        input_shape: (H, W) of the letterboxed input.
        letterbox: (B, 3) [scale, pad_x, pad_y]; original_shapes: (B, 2) [height, width].

    Returns:
        (n, 6) [image_index, class, x1, y1, x2, y2] in source pixels, clipped (as YOLOv5 val).
    """
    height, width = input_shape
    image = targets[:, 0].long()
    size = targets.new_tensor([width, height, width, height])
    boxes = undo_letterbox(xywh_to_xyxy(targets[:, 2:6]) * size, letterbox.to(targets)[image], original_shapes[image])
    return torch.cat((targets[:, :2], boxes), dim=1)


def images_per_class(image_index: np.ndarray, classes: np.ndarray, num_classes: int) -> np.ndarray:
    """(C,) number of distinct images in which each class occurs. image_index, classes: (R,) int."""
    pairs = np.unique(image_index * num_classes + classes)
    return np.bincount(pairs % num_classes, minlength=num_classes).astype(np.int64)


def split_rows(rows: np.ndarray, image_index: np.ndarray, num_images: int) -> list[np.ndarray]:
    """Rows grouped per image 0..num_images-1 (stable within an image). rows: (R, C), image_index: (R,)."""
    order = np.argsort(image_index, kind="stable")
    counts = np.bincount(image_index, minlength=num_images)
    return np.split(rows[order], np.cumsum(counts)[:-1])


class ValidationBatchProcessor:
    """``reset()`` / ``update(model, batch)`` / ``compute()`` over the batches of one validation.

    Args:
        processor: decodes and filters the head output.
        extractor: image-level classification metrics.
        fine_to_main: main class of each fine class (the mAP calculator's ``class_map``).
        loss: the training loss (``YoloLoss``) or None to skip it (losses reported as 0).
        mode: the mAP semantics, "coco" (pycocotools) or "yolo" (ultralytics).
    """

    def __init__(self, processor: PredictionProcessor, extractor: ClassificationExtractor,
                 fine_to_main: Sequence[int], loss: LossFunction | None = None, mode: str = "coco") -> None:
        self.processor = processor
        self.extractor = extractor
        self.fine_to_main = tuple(fine_to_main)
        self.loss = loss
        self.mode = mode
        self.reset()

    def reset(self) -> None:
        self.extractor.reset()
        self._detections: list[Tensor] = []  # per batch (K, 7) [image, x1, y1, x2, y2, score, class]
        self._targets: list[Tensor] = []  # per batch (n, 6) [image, class, x1, y1, x2, y2]
        self._loss_sum: Tensor | None = None  # (3,) box, obj, cls, summed over images
        self.num_images = 0
        self.num_batches = 0

    @torch.inference_mode()
    def update(self, model: nn.Module, batch: Any) -> Tensor:
        """Validate one batch (already on the model's device). Returns its (3,) loss parts, on the device.

        ``batch`` follows ``smartcash.data.dataset.Batch``: images, targets, letterbox, original_shapes.
        The model must be in eval mode (the executor does it): output (decoded, raw).
        """
        images, targets = batch.images, batch.targets
        batch_size = images.shape[0]
        output = model(images)
        if isinstance(output, (tuple, list)) and len(output) == 2 and isinstance(output[0], Tensor):
            decoded, raw = output  # the head decoded already in eval mode: decoding again is wasted work
        else:
            raw = list(output)
            detect = getattr(model, "detect", model)
            decoded = self.processor.decode(raw, detect.anchors, detect.stride)
        if self.loss is not None:
            parts = self.loss([level.float() for level in raw], targets)
            losses = torch.stack((parts.box, parts.obj, parts.cls)).detach().float().reshape(3)
        else:
            losses = torch.zeros(3, device=images.device)
        self._loss_sum = losses * batch_size if self._loss_sum is None else self._loss_sum + losses * batch_size

        detections: Detections = self.processor.postprocess(decoded, batch.letterbox, batch.original_shapes)
        self.extractor.update(detections.padded, detections.valid, targets)
        image_offset = float(self.num_images)  # exact in float32 below 2**24 images
        self._detections.append(torch.cat(((detections.image_index[:, None] + image_offset).to(detections.boxes),
                                           detections.boxes), dim=1))
        truth = targets_to_source_xyxy(targets.float(), images.shape[-2:], batch.letterbox, batch.original_shapes)
        truth[:, 0] += image_offset
        self._targets.append(truth)
        self.num_images += batch_size
        self.num_batches += 1
        return losses

    def batch_detections(self, index: int) -> Tensor:
        """(K, 7) [image, x1, y1, x2, y2, score, class] of batch ``index`` since ``reset()``, on the
        device; boxes in source pixels, image indices counted from the first batch."""
        return self._detections[index]

    def running_loss(self) -> Tensor:
        """(3,) mean loss parts per image so far, on the device (reading it on the host syncs)."""
        if self._loss_sum is None:
            return torch.zeros(3)
        return self._loss_sum / max(self.num_images, 1)

    def compute(self) -> ValidationMetrics:
        """The metrics of every batch since ``reset()``: the single device -> host transfer."""
        losses = (self.running_loss().cpu() if self._loss_sum is not None else torch.zeros(3)).tolist()
        detections = (torch.cat(self._detections).cpu().double().numpy() if self._detections
                      else np.zeros((0, 7)))
        truth = torch.cat(self._targets).cpu().double().numpy() if self._targets else np.zeros((0, 6))
        predictions_per_image = split_rows(detections[:, 1:], detections[:, 0].astype(np.int64), self.num_images)
        truth_per_image = split_rows(truth[:, 1:], truth[:, 0].astype(np.int64), self.num_images)
        calculator = ParallelMapCalculator(len(self.fine_to_main), mode=self.mode, class_map=list(self.fine_to_main))
        calculator.update(predictions_per_image, truth_per_image)
        fine = calculator.compute()
        truth_images, truth_classes = truth[:, 0].astype(np.int64), truth[:, 1].astype(np.int64)
        main_table = np.asarray(self.fine_to_main, dtype=np.int64)
        return ValidationMetrics(
            box_loss=losses[0], obj_loss=losses[1], cls_loss=losses[2], fine=fine, main=fine.main,
            classification=self.extractor.compute(),
            images_per_class=images_per_class(truth_images, truth_classes, len(self.fine_to_main)),
            images_per_main_class=images_per_class(truth_images, main_table[truth_classes], int(main_table.max()) + 1),
            num_images=self.num_images, num_batches=self.num_batches)
