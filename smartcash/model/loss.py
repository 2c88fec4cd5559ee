"""The YOLOv5 (v6/v7) detection loss: CIoU box + objectness BCE + class BCE, weights from loss.json.

Weights are applied exactly as ``LossConfig`` gives them (loss.json: total = box * CIoU-loss +
obj * objectness-BCE + cls * class-BCE). YOLOv5's train.py additionally rescales its hyps by
3 / layers, nc / 80 and (imgsz / 640)^2; we do not: loss.json holds the final numbers, so a
change of weights is a change to loss.json, visible in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smartcash.model.boxes import complete_iou
from smartcash.taxonomy import LossConfig

#: A target centre within this distance (in cells) of a cell edge is also assigned to the
#: neighbouring cell across that edge (YOLOv5's "g = 0.5": up to 3 cells per target and anchor).
NEIGHBOUR_MARGIN = 0.5
#: Offsets of the centre cell, then left, top, right, bottom neighbours, in cells.
_NEIGHBOUR_OFFSETS = ((0, 0), (1, 0), (0, 1), (-1, 0), (0, -1))


@dataclass(frozen=True)
class LossOutput:
    """total: scalar with grad, (box + obj + cls) * batch_size as YOLOv5; parts weighted, detached."""

    total: Tensor
    box: Tensor
    obj: Tensor
    cls: Tensor


@dataclass(frozen=True)
class LevelTargets:
    """Positive samples of one scale: n (target, anchor, cell) triples."""

    image_index: Tensor  # (n,) long
    anchor_index: Tensor  # (n,) long
    cell_y: Tensor  # (n,) long
    cell_x: Tensor  # (n,) long
    boxes: Tensor  # (n, 4) [x, y] from the cell's corner, [w, h]; cells
    anchors: Tensor  # (n, 2) matched anchor [w, h]; cells
    classes: Tensor  # (n,) long


class YoloLoss:
    """YOLOv5 loss over the raw head outputs; anchors and strides are read from the head per call."""

    def __init__(self, model: nn.Module, config: LossConfig, gains: dict[str, float] | None = None) -> None:
        """``gains``: the recipe's multipliers of loss.json's box / obj / cls weights (default 1)."""
        self.detect = getattr(model, "detect", model)
        if len(config.obj_balance) != self.detect.num_levels:
            raise ValueError(f"loss obj_balance has {len(config.obj_balance)} values, "
                             f"the head has {self.detect.num_levels} scales")
        self.config = config
        gains = gains or {}
        self.box_weight = config.box_weight * gains.get("box", 1.0)
        self.obj_weight = config.obj_weight * gains.get("obj", 1.0)
        self.cls_weight = config.cls_weight * gains.get("cls", 1.0)
        self.num_classes = self.detect.num_classes
        # Label smoothing as YOLOv5's smooth_BCE: positives 1 - eps/2, negatives eps/2.
        self.class_positive = 1.0 - 0.5 * config.label_smoothing
        self.class_negative = 0.5 * config.label_smoothing

    def __call__(self, raw: list[Tensor], targets: Tensor) -> LossOutput:
        """raw: per scale (B, A, H, W, 5 + nc) logits; targets: (n, 6) [image, class, cx, cy, w, h] normalised."""
        device = raw[0].device
        box_loss = torch.zeros((), device=device)
        obj_loss = torch.zeros((), device=device)
        cls_loss = torch.zeros((), device=device)
        for level, (prediction, assigned) in enumerate(zip(raw, self.build_targets(raw, targets))):
            objectness_target = torch.zeros(prediction.shape[:4], device=device, dtype=prediction.dtype)
            count = assigned.image_index.shape[0]
            if count:
                selected = prediction[assigned.image_index, assigned.anchor_index,
                                      assigned.cell_y, assigned.cell_x].float()  # (n, 5 + nc)
                xy = selected[:, :2].sigmoid() * 2 - 0.5  # cells from the cell corner, (-0.5, 1.5)
                wh = (selected[:, 2:4].sigmoid() * 2).pow(2) * assigned.anchors  # cells, (0, 4 anchor)
                iou = complete_iou(torch.cat((xy, wh), dim=1), assigned.boxes)  # (n,)
                box_loss = box_loss + (1.0 - iou).mean()
                # Objectness learns the IoU it achieves (YOLOv5's gr = 1), never a negative target.
                objectness_target[assigned.image_index, assigned.anchor_index, assigned.cell_y,
                                  assigned.cell_x] = iou.detach().clamp(min=0).to(prediction.dtype)
                if self.num_classes > 1:  # one class needs no classifier (YOLOv5)
                    class_target = torch.full_like(selected[:, 5:], self.class_negative)
                    class_target[torch.arange(count, device=device), assigned.classes] = self.class_positive
                    cls_loss = cls_loss + F.binary_cross_entropy_with_logits(selected[:, 5:], class_target)
            objectness = F.binary_cross_entropy_with_logits(prediction[..., 4].float(), objectness_target.float())
            obj_loss = obj_loss + objectness * self.config.obj_balance[level]
        box_loss = box_loss * self.box_weight
        obj_loss = obj_loss * self.obj_weight
        cls_loss = cls_loss * self.cls_weight
        batch_size = raw[0].shape[0]
        return LossOutput(total=(box_loss + obj_loss + cls_loss) * batch_size, box=box_loss.detach(),
                          obj=obj_loss.detach(), cls=cls_loss.detach())

    def build_targets(self, raw: list[Tensor], targets: Tensor) -> list[LevelTargets]:
        """Assign every target to the anchors within the side-ratio threshold and to its cell plus
        the two neighbouring cells nearest its centre, per scale. Vectorised over the batch."""
        device = raw[0].device
        targets = targets.to(device=device, dtype=torch.float32).reshape(-1, 6)
        offsets = torch.tensor(_NEIGHBOUR_OFFSETS, device=device, dtype=torch.float32) * NEIGHBOUR_MARGIN  # (5, 2)
        assignments = []
        for level, prediction in enumerate(raw):
            _, _, height, width, _ = prediction.shape
            grid_size = torch.tensor([width, height], device=device, dtype=torch.float32)
            anchors = self.detect.anchors[level].float() / self.detect.stride[level]  # (A, 2) cells
            centres = targets[:, 2:4] * grid_size  # (T, 2) cells
            sizes = targets[:, 4:6] * grid_size  # (T, 2) cells
            ratio = sizes[None, :, :] / anchors[:, None, :]  # (A, T, 2)
            matched = torch.maximum(ratio, 1 / ratio).amax(dim=2) < self.config.anchor_threshold  # (A, T)
            anchor_index, target_index = matched.nonzero(as_tuple=True)  # (M,) each
            centre = centres[target_index]  # (M, 2)
            from_far_edge = grid_size - centre
            near_low = ((centre % 1 < NEIGHBOUR_MARGIN) & (centre > 1)).T  # (2, M): left, top
            near_high = ((from_far_edge % 1 < NEIGHBOUR_MARGIN) & (from_far_edge > 1)).T  # (2, M): right, bottom
            use = torch.cat((torch.ones_like(near_low[:1]), near_low, near_high))  # (5, M)
            offset_index, sample = use.nonzero(as_tuple=True)  # (n,) each
            centre = centre[sample]  # (n, 2)
            cell = (centre - offsets[offset_index]).long()  # (n, 2) [x, y]
            cell[:, 0].clamp_(0, width - 1)
            cell[:, 1].clamp_(0, height - 1)
            chosen_anchor = anchor_index[sample]
            chosen_target = target_index[sample]
            assignments.append(LevelTargets(
                image_index=targets[chosen_target, 0].long(), anchor_index=chosen_anchor,
                cell_y=cell[:, 1], cell_x=cell[:, 0],
                boxes=torch.cat((centre - cell, sizes[chosen_target]), dim=1),
                anchors=anchors[chosen_anchor], classes=targets[chosen_target, 1].long()))
        return assignments
