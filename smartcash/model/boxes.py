"""Box conversions and IoU, shared by the loss and the validation core. Pure tensor math, torch only."""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Guards the divisions in IoU against zero-area boxes.
EPSILON = 1e-7


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """[cx, cy, w, h] -> [x1, y1, x2, y2]. boxes: (..., 4) -> (..., 4)."""
    center, size = boxes[..., :2], boxes[..., 2:4]
    return torch.cat((center - size / 2, center + size / 2), dim=-1)


def complete_iou(predicted: Tensor, target: Tensor) -> Tensor:
    """Element-wise CIoU of xywh boxes (Zheng et al. 2020, as in YOLOv5's ``bbox_iou(CIoU=True)``).

    CIoU = IoU - centre_distance^2 / enclosing_diagonal^2 - alpha * v, where v measures the
    aspect-ratio mismatch and alpha = v / (1 - IoU + v) is treated as a constant (no gradient).

    Args:
        predicted: (N, 4) [cx, cy, w, h].
        target: (N, 4) [cx, cy, w, h], same units.

    Returns:
        (N,) CIoU in [-1.5, 1].
    """
    p_x1y1, p_x2y2 = predicted[:, :2] - predicted[:, 2:4] / 2, predicted[:, :2] + predicted[:, 2:4] / 2
    t_x1y1, t_x2y2 = target[:, :2] - target[:, 2:4] / 2, target[:, :2] + target[:, 2:4] / 2
    p_w, p_h = predicted[:, 2], predicted[:, 3] + EPSILON
    t_w, t_h = target[:, 2], target[:, 3] + EPSILON

    overlap = (torch.minimum(p_x2y2, t_x2y2) - torch.maximum(p_x1y1, t_x1y1)).clamp(min=0)  # (N, 2)
    intersection = overlap[:, 0] * overlap[:, 1]
    union = p_w * p_h + t_w * t_h - intersection + EPSILON
    iou = intersection / union

    enclosing = torch.maximum(p_x2y2, t_x2y2) - torch.minimum(p_x1y1, t_x1y1)  # (N, 2)
    diagonal_squared = enclosing.pow(2).sum(dim=1) + EPSILON
    centre_distance_squared = (predicted[:, :2] - target[:, :2]).pow(2).sum(dim=1)
    aspect = (4 / math.pi**2) * (torch.atan(t_w / t_h) - torch.atan(p_w / p_h)).pow(2)
    with torch.no_grad():
        # Clamped: for identical boxes rounding can make 1 - IoU + v exactly 0 (0 / 0 in YOLOv5's form).
        alpha = aspect / (aspect - iou + (1 + EPSILON)).clamp(min=EPSILON)
    return iou - (centre_distance_squared / diagonal_squared + aspect * alpha)
