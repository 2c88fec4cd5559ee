"""YOLOv5 loss: a hand-computed case, a per-box reference, gradients, empty batches, overfitting."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, complete_box_iou_loss

from smartcash.model import build_model
from smartcash.model.boxes import complete_iou, xywh_to_xyxy
from smartcash.model.head import Detect
from smartcash.model.loss import YoloLoss
from smartcash.taxonomy import LossConfig, load_loss_config

logger = logging.getLogger(__name__)
STRIDES = (8.0, 16.0, 32.0)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def _head(num_classes: int, anchors: list) -> Detect:
    return Detect(num_classes, (8, 8, 8), torch.tensor(anchors, dtype=torch.float32), STRIDES)


def test_complete_iou_matches_torchvision() -> None:
    generator = torch.Generator().manual_seed(0)
    predicted = torch.cat((torch.rand(50, 2, generator=generator) * 10, torch.rand(50, 2, generator=generator) * 5 + 0.1), 1)
    target = torch.cat((torch.rand(50, 2, generator=generator) * 10, torch.rand(50, 2, generator=generator) * 5 + 0.1), 1)
    expected = 1 - complete_box_iou_loss(xywh_to_xyxy(predicted), xywh_to_xyxy(target), eps=1e-7)
    assert torch.allclose(complete_iou(predicted, target), expected, atol=1e-5)
    # Identical boxes: CIoU = IoU = 1.
    assert torch.allclose(complete_iou(target, target), torch.ones(50), atol=1e-5)
    assert torch.allclose(box_iou(xywh_to_xyxy(target), xywh_to_xyxy(target)).diagonal(), torch.ones(50), atol=1e-5)


def test_one_box_matches_hand_computation() -> None:
    """64 x 64 input, nc = 3; a 16 x 16 box centred at (20, 20) matches exactly one
    (scale, anchor, cell): stride 8, anchor 16 x 16, cell (2, 2) (the centre sits at 2.5, 2.5 cells,
    exactly mid-cell, so no neighbouring cell is added; every other anchor is >= 4x off)."""
    config = LossConfig(box_weight=0.05, obj_weight=1.0, cls_weight=0.5, obj_balance=(4.0, 1.0, 0.4),
                        anchor_threshold=4.0, label_smoothing=0.0)
    head = _head(3, [[[4, 4], [16, 16], [64, 64]], [[65, 65], [66, 66], [67, 67]], [[256, 256], [257, 257], [258, 258]]])
    raw = [torch.zeros(1, 3, 64 // int(s), 64 // int(s), 8) for s in STRIDES]
    # Predicted box at the target's centre (sigmoid 0 -> offset 0.5) but 1 x 1 cells instead of 2 x 2:
    # (2 sigmoid(t))^2 x 2 cells = 1  ->  sigmoid(t) = sqrt(0.5) / 2.
    wh_logit = math.log((math.sqrt(0.5) / 2) / (1 - math.sqrt(0.5) / 2))
    raw[0][0, 1, 2, 2, 2:4] = wh_logit
    raw[0][0, 1, 2, 2, 4] = 1.0  # objectness logit
    raw[0][0, 1, 2, 2, 6] = 2.0  # class 1 logit
    targets = torch.tensor([[0, 1, 20 / 64, 20 / 64, 16 / 64, 16 / 64]])
    output = YoloLoss(head, config)([level.requires_grad_() for level in raw], targets)

    iou = 0.25  # concentric squares 1 and 2 cells wide: no centre or aspect penalty
    box = (1 - iou) * 0.05
    cells = [3 * 8 * 8, 3 * 4 * 4, 3 * 2 * 2]
    # BCE(logit 0, any target) = log 2; the positive: BCE(1, 0.25) = softplus(1) - 0.25.
    level0 = ((cells[0] - 1) * math.log(2) + _softplus(1.0) - 0.25) / cells[0]
    obj = (4.0 * level0 + 1.0 * math.log(2) + 0.4 * math.log(2)) * 1.0
    cls = (2 * math.log(2) + _softplus(2.0) - 2.0) / 3 * 0.5
    assert output.box.item() == pytest.approx(box, rel=1e-5)
    assert output.obj.item() == pytest.approx(obj, rel=1e-5)
    assert output.cls.item() == pytest.approx(cls, rel=1e-5)
    assert output.total.item() == pytest.approx(box + obj + cls, rel=1e-5)
    assert output.total.requires_grad and not output.box.requires_grad


def _reference_loss(raw: list[torch.Tensor], targets: torch.Tensor, head: Detect, config: LossConfig) -> tuple[float, float, float]:
    """A per-target, per-anchor, per-cell loop written from YOLOv5's description."""
    box_sum, obj_sum, cls_sum = 0.0, 0.0, 0.0
    for level, prediction in enumerate(raw):
        batch, num_anchors, height, width, outputs = prediction.shape
        objectness_target = torch.zeros(batch, num_anchors, height, width)
        ious, class_losses = [], []
        for image, cls, cx, cy, w, h in targets.tolist():
            gx, gy, gw, gh = cx * width, cy * height, w * width, h * height
            for anchor in range(num_anchors):
                aw, ah = (head.anchors[level, anchor] / head.stride[level]).tolist()
                if max(gw / aw, aw / gw, gh / ah, ah / gh) >= config.anchor_threshold:
                    continue
                cells = [(int(gx), int(gy))]
                if gx % 1 < 0.5 and gx > 1:
                    cells.append((int(gx) - 1, int(gy)))
                if gy % 1 < 0.5 and gy > 1:
                    cells.append((int(gx), int(gy) - 1))
                if (width - gx) % 1 < 0.5 and width - gx > 1:
                    cells.append((int(gx) + 1, int(gy)))
                if (height - gy) % 1 < 0.5 and height - gy > 1:
                    cells.append((int(gx), int(gy) + 1))
                for cell_x, cell_y in cells:
                    logits = prediction[int(image), anchor, cell_y, cell_x]
                    px = torch.sigmoid(logits[0]) * 2 - 0.5 + cell_x
                    py = torch.sigmoid(logits[1]) * 2 - 0.5 + cell_y
                    pw = (torch.sigmoid(logits[2]) * 2) ** 2 * aw
                    ph = (torch.sigmoid(logits[3]) * 2) ** 2 * ah
                    predicted = torch.stack([px - pw / 2, py - ph / 2, px + pw / 2, py + ph / 2])[None]
                    truth = torch.tensor([[gx - gw / 2, gy - gh / 2, gx + gw / 2, gy + gh / 2]])
                    ciou = 1 - complete_box_iou_loss(predicted, truth, eps=1e-7).item()
                    ious.append(ciou)
                    objectness_target[int(image), anchor, cell_y, cell_x] = max(ciou, 0.0)
                    one_hot = torch.zeros(outputs - 5)
                    one_hot[int(cls)] = 1.0
                    class_losses.append(F.binary_cross_entropy_with_logits(logits[5:], one_hot).item())
        if ious:
            box_sum += sum(1 - iou for iou in ious) / len(ious)
            cls_sum += sum(class_losses) / len(class_losses)
        obj_sum += F.binary_cross_entropy_with_logits(prediction[..., 4], objectness_target).item() * config.obj_balance[level]
    return box_sum * config.box_weight, obj_sum * config.obj_weight, cls_sum * config.cls_weight


def test_vectorised_loss_matches_per_box_reference() -> None:
    config = load_loss_config()
    head = _head(5, [[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]], [[116, 90], [156, 198], [373, 326]]])
    generator = torch.Generator().manual_seed(1)
    raw = [torch.randn(4, 3, 96 // int(s), 128 // int(s), 10, generator=generator) for s in STRIDES]
    # One target per image (so no two targets write the same objectness cell), sizes from 6 to 100 px.
    targets = torch.tensor([
        [0, 0, 0.31, 0.47, 6 / 128, 9 / 96],
        [1, 3, 0.52, 0.55, 40 / 128, 30 / 96],
        [2, 4, 0.77, 0.21, 100 / 128, 80 / 96],
        [3, 1, 0.12, 0.83, 20 / 128, 50 / 96],
    ])
    output = YoloLoss(head, config)(raw, targets)
    box, obj, cls = _reference_loss(raw, targets, head, config)
    assert output.box.item() == pytest.approx(box, rel=1e-4)
    assert output.obj.item() == pytest.approx(obj, rel=1e-4)
    assert output.cls.item() == pytest.approx(cls, rel=1e-4)
    assert output.total.item() == pytest.approx((box + obj + cls) * 4, rel=1e-4)


def test_empty_targets_give_objectness_only() -> None:
    model = build_model("yolov5n", 17).train()
    raw = model(torch.rand(2, 3, 64, 64))
    output = YoloLoss(model, load_loss_config())(raw, torch.zeros(0, 6))
    assert output.box.item() == 0 and output.cls.item() == 0 and output.obj.item() > 0
    output.total.backward()
    assert model.detect.convs[0].bias.grad is not None


def test_every_trainable_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    model = build_model("yolov5n", 17).train()
    raw = model(torch.rand(2, 3, 256, 256))
    # Sizes near each of the nine default anchors, so every anchor of every scale has positives.
    sizes = [(10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198), (240, 230)]
    targets = torch.tensor([[i % 2, i, 0.5, 0.5, w / 256, h / 256] for i, (w, h) in enumerate(sizes)])
    YoloLoss(model, load_loss_config())(raw, targets).total.backward()
    missing = [name for name, parameter in model.named_parameters()
               if parameter.requires_grad and (parameter.grad is None or not parameter.grad.abs().sum() > 0)]
    assert missing == []


def _synthetic_image(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (1, 3, size, size) image: noise-free grey background with one red rectangle, and its target."""
    image = np.full((size, size, 3), 0.45, dtype=np.float32)
    x1, y1, x2, y2 = 30, 40, 94, 88
    image[y1:y2, x1:x2] = (0.9, 0.15, 0.1)
    box = [(x1 + x2) / 2 / size, (y1 + y2) / 2 / size, (x2 - x1) / size, (y2 - y1) / size]
    return torch.from_numpy(image).permute(2, 0, 1)[None], torch.tensor([[0, 2, *box]])


def test_tiny_model_overfits_one_image() -> None:
    torch.manual_seed(0)
    size = 128
    image, targets = _synthetic_image(size)
    model = build_model("yolov5n", 3).train()
    loss = YoloLoss(model, load_loss_config())
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    start = time.perf_counter()
    losses = []
    for _ in range(150):
        output = loss(model(image), targets)
        optimizer.zero_grad()
        output.total.backward()
        optimizer.step()
        losses.append(output.total.item())
    elapsed = time.perf_counter() - start
    logger.info("overfit: loss %.4f -> %.4f in %.1f s", losses[0], losses[-1], elapsed)
    assert min(losses[-10:]) < losses[0] / 10
    # Evaluate through the eval-mode decode path, but with BatchNorm on batch statistics: running
    # statistics estimated from one 128 px image (unbiased variance over 4x4 maps at stride 32,
    # lagging weights after 150 fast steps) are not what the weights were fitted to.
    model.eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.train()
    with torch.no_grad():
        decoded, _ = model(image)  # (1, N, 5 + nc): xywh pixels, objectness, class probabilities
    best = decoded[0, decoded[0, :, 4].argmax()]
    iou = box_iou(xywh_to_xyxy(best[None, :4]), xywh_to_xyxy(targets[:, 2:6] * size)).item()
    assert iou > 0.7, f"top box {best[:4].tolist()} IoU {iou:.3f}"
    assert best[5:].argmax().item() == 2
