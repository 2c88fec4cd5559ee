"""Raw head output -> final detections: decode, confidence filter, class-aware NMS, letterbox undo, 17 -> 8 map.

The whole batch goes through one pass: candidates of every image are filtered together, one
``torchvision.ops.batched_nms`` call runs over the batch with ``image * num_classes + class`` as
the group id, and a stable sort splits the survivors by image. Nothing here loops over images or
boxes in Python, and nothing copies to the host.

Scores are multi-label, as YOLOv5's and ultralytics' validators compute them for mAP: every
(anchor, class) pair whose ``objectness * class probability`` exceeds ``conf_threshold`` is a
candidate, so one box can be kept for two classes. ``multi_label=False`` keeps only the best
class of each anchor (YOLOv5's ``detect.py`` behaviour), which is what a deployed predictor wants.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from smartcash.model.boxes import xywh_to_xyxy
from smartcash.model.head import GridCache, decode_predictions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detections:
    """The detections of one batch, in two layouts of the same rows.

    ``boxes`` rows are sorted by image, then by score (descending) within an image.
    """

    image_index: Tensor  # (K,) int64, index of the image in the batch
    boxes: Tensor  # (K, 6) float32 [x1, y1, x2, y2, score, class], source-image pixels, fine class
    main_class: Tensor  # (K,) int64, the class mapped onto the main classes
    padded: Tensor  # (B, max_det, 6) the same rows per image, zeros after counts[b]
    counts: Tensor  # (B,) int64, detections per image

    @property
    def valid(self) -> Tensor:
        """(B, max_det) bool, True where ``padded`` holds a detection."""
        slots = torch.arange(self.padded.shape[1], device=self.padded.device)
        return slots[None, :] < self.counts[:, None]

    def per_image(self) -> list[Tensor]:
        """Per image (n_b, 6) views of ``boxes`` (host sync for the split sizes: not for per-batch hot paths)."""
        return list(torch.split(self.boxes, self.counts.tolist()))


def rank_within_groups(sorted_groups: Tensor, num_groups: int) -> Tensor:
    """Position of every element inside its run of equal ids. sorted_groups: (K,) ascending -> (K,)."""
    counts = torch.bincount(sorted_groups, minlength=num_groups)  # (G,)
    starts = torch.cumsum(counts, dim=0) - counts  # (G,) first position of each group
    return torch.arange(sorted_groups.numel(), device=sorted_groups.device) - starts[sorted_groups]


def order_by_image_then_score(image_index: Tensor, scores: Tensor) -> Tensor:
    """Permutation sorting by image ascending, then score descending. (K,), (K,) -> (K,)."""
    by_score = torch.argsort(scores, descending=True, stable=True)
    return by_score[torch.argsort(image_index[by_score], stable=True)]


def undo_letterbox(boxes: Tensor, letterbox: Tensor, original_shapes: Tensor) -> Tensor:
    """Input pixels -> source-image pixels, clipped to the source image.

    Args:
        boxes: (K, 4) xyxy in letterboxed input pixels.
        letterbox: (K, 3) [scale, pad_x, pad_y] of each box's image (input = source * scale + pad).
        original_shapes: (K, 2) [height, width] of each box's source image.

    Returns:
        (K, 4) xyxy in source pixels.
    """
    scale = letterbox[:, :1]  # (K, 1)
    pad = letterbox[:, 1:3].repeat(1, 2)  # (K, 4) [pad_x, pad_y, pad_x, pad_y]
    source = (boxes - pad) / scale
    limits = original_shapes.flip(1).repeat(1, 2).to(source.dtype)  # (K, 4) [w, h, w, h]
    return torch.minimum(source.clamp(min=0), limits)


class PredictionProcessor:
    """Decodes and post-processes a batch of raw head outputs (see the module docstring).

    Args:
        num_classes: detector classes (17 for the SmartCash taxonomy).
        fine_to_main: main class of each fine class (``Taxonomy.fine_to_main``).
        conf_threshold: minimum ``objectness * class probability`` of a candidate (validation
            uses a low one for mAP, prediction a higher one: ``configs/default.yaml``).
        iou_threshold: NMS IoU above which the lower-scored box of the same class is dropped.
        max_det: detections kept per image, the highest-scored.
        multi_label: one candidate per (anchor, class) above the threshold, else per anchor.
        max_candidates: per-image cap on the candidates entering NMS (YOLOv5's ``max_nms``).
    """

    def __init__(self, num_classes: int, fine_to_main: Sequence[int], conf_threshold: float,
                 iou_threshold: float, max_det: int, multi_label: bool = True,
                 max_candidates: int = 30000) -> None:
        if len(fine_to_main) != num_classes:
            raise ValueError(f"fine_to_main has {len(fine_to_main)} entries for {num_classes} classes")
        if not 0.0 <= conf_threshold < 1.0 or not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"thresholds out of range: conf {conf_threshold}, iou {iou_threshold}")
        self.num_classes = num_classes
        self.conf_threshold = conf_threshold
        self.iou_threshold = iou_threshold
        self.max_det = max_det
        self.multi_label = multi_label
        self.max_candidates = max_candidates
        self.phase: int | None = None
        self.grid_cache = GridCache()
        self._fine_to_main = torch.tensor(list(fine_to_main), dtype=torch.int64)
        self._fine_to_main_on: dict[torch.device, Tensor] = {}

    def set_phase(self, phase: int) -> None:
        """Forget cached grids: the next phase's model may differ in strides, device or dtype."""
        cleared = len(self.grid_cache)
        self.grid_cache.clear()
        self._fine_to_main_on.clear()
        logger.info("prediction processor: phase %s -> %s, cleared %d cached grids", self.phase, phase, cleared)
        self.phase = phase

    def decode(self, raw: Sequence[Tensor], anchors: Tensor, strides: Tensor | Sequence[float]) -> Tensor:
        """Per scale (B, A, H, W, 5 + nc) logits -> (B, N, 5 + nc) [cx, cy, w, h] px, obj, class probs."""
        return decode_predictions(raw, anchors, strides, self.grid_cache)

    def __call__(self, raw: Sequence[Tensor], anchors: Tensor, strides: Tensor | Sequence[float],
                 letterbox: Tensor | None = None, original_shapes: Tensor | None = None) -> Detections:
        """Decode then post-process; see ``postprocess``."""
        return self.postprocess(self.decode(raw, anchors, strides), letterbox, original_shapes)

    def postprocess(self, decoded: Tensor, letterbox: Tensor | None = None,
                    original_shapes: Tensor | None = None) -> Detections:
        """Confidence filter, NMS, max_det, letterbox undo for a whole batch.

        Args:
            decoded: (B, N, 5 + nc) as ``decode`` returns (the model's eval output is the same).
            letterbox: (B, 3) [scale, pad_x, pad_y] from the Batch; boxes stay in input pixels
                (unclipped) when None.
            original_shapes: (B, 2) [height, width] of the source images (needed with letterbox).
        """
        batch_size = decoded.shape[0]
        decoded = decoded.float()  # AMP outputs: NMS and the metrics work in float32
        image_index, boxes, scores, classes = self._candidates(decoded)
        # batched_nms' coordinate trick needs boxes >= 0: shift the whole batch (IoU is shift-invariant).
        shift = boxes.min().clamp(max=0.0) if boxes.numel() else boxes.new_zeros(())
        keep = batched_nms(boxes - shift, scores, image_index * self.num_classes + classes, self.iou_threshold)
        keep = keep[torch.argsort(image_index[keep], stable=True)]  # keep is score-sorted: stays so per image
        rank = rank_within_groups(image_index[keep], batch_size)
        keep, rank = keep[rank < self.max_det], rank[rank < self.max_det]
        image_index, boxes, scores, classes = image_index[keep], boxes[keep], scores[keep], classes[keep]
        if letterbox is not None:
            if original_shapes is None:
                raise ValueError("original_shapes is required with letterbox")
            boxes = undo_letterbox(boxes, letterbox.to(boxes)[image_index], original_shapes[image_index])
        rows = torch.cat((boxes, scores[:, None], classes[:, None].to(boxes.dtype)), dim=1)  # (K, 6)
        padded = rows.new_zeros(batch_size, self.max_det, 6)
        padded[image_index, rank] = rows
        counts = torch.bincount(image_index, minlength=batch_size)
        return Detections(image_index, rows, self._main_table(rows.device)[classes], padded, counts)

    def _candidates(self, decoded: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(B, N, 5 + nc) -> image index (K,), xyxy (K, 4), score (K,), class (K,) of the candidates."""
        # YOLOv5's pre-filter: class probabilities <= 1, so objectness <= threshold can never pass.
        image_index, anchor_index = torch.nonzero(decoded[..., 4] > self.conf_threshold, as_tuple=True)
        rows = decoded[image_index, anchor_index]  # (K0, 5 + nc)
        class_scores = rows[:, 5:] * rows[:, 4:5]  # (K0, nc)
        if self.multi_label:
            row, classes = torch.nonzero(class_scores > self.conf_threshold, as_tuple=True)
            scores = class_scores[row, classes]
        else:
            scores, classes = class_scores.max(dim=1)
            row = torch.nonzero(scores > self.conf_threshold, as_tuple=True)[0]
            scores, classes = scores[row], classes[row]
        image_index, boxes = image_index[row], xywh_to_xyxy(rows[row, :4])
        if scores.numel() > self.max_candidates:  # only then can one image exceed the cap
            order = order_by_image_then_score(image_index, scores)
            order = order[rank_within_groups(image_index[order], decoded.shape[0]) < self.max_candidates]
            image_index, boxes, scores, classes = image_index[order], boxes[order], scores[order], classes[order]
        return image_index, boxes, scores, classes

    def _main_table(self, device: torch.device) -> Tensor:
        table = self._fine_to_main_on.get(device)
        if table is None:
            table = self._fine_to_main_on[device] = self._fine_to_main.to(device)
        return table
