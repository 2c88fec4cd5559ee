"""Detector models: YOLOv5 v6 (CSPDarknet + PANet + anchor head) or an EfficientNet-B4 backbone.

Built from ultralytics' ``nn.modules`` blocks (Conv, C3, SPPF, Concat), imported lazily inside
the constructors so that importing this module stays cheap. Every model is
``Detector(backbone, neck, detect, adapter)``: freezing by name and state-dict names follow that.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from smartcash.model.anchors import anchors_tensor
from smartcash.model.head import Detect

logger = logging.getLogger(__name__)

#: Pixels per cell of the three detection scales (P3, P4, P5).
STRIDES = (8, 16, 32)
#: YOLOv5 v6 base channels of stem, P2, P3, P4, P5 at width multiplier 1.
BASE_CHANNELS = (64, 128, 256, 512, 1024)
#: YOLOv5 v6 base C3 repeats of backbone stages P2..P5 and of every neck C3.
BASE_BACKBONE_DEPTHS = (3, 6, 9, 3)
BASE_NECK_DEPTH = 3


@dataclass(frozen=True)
class ModelSize:
    depth: float  # multiplier of C3 repeats
    width: float  # multiplier of channels


#: The YOLOv5 v6 size family (models/yolov5{n,s,m,l,x}.yaml).
YOLOV5_SIZES = {
    "yolov5n": ModelSize(0.33, 0.25),
    "yolov5s": ModelSize(0.33, 0.50),
    "yolov5m": ModelSize(0.67, 0.75),
    "yolov5l": ModelSize(1.00, 1.00),
    "yolov5x": ModelSize(1.33, 1.25),
}
#: The EfficientNet-B4 model uses the yolov5s neck and head widths.
EFFICIENTNET_NECK = ModelSize(0.33, 0.50)
MODEL_NAMES = (*YOLOV5_SIZES, "efficientnet_b4")

#: YOLOv5 layer index (``model.<i>.`` in its state dicts) -> our module path; layers without
#: parameters (Upsample, Concat) are absent. Used by ``weights.load_pretrained``.
YOLOV5_LAYER_NAMES = {
    0: "backbone.stem", 1: "backbone.p2.0", 2: "backbone.p2.1", 3: "backbone.p3.0",
    4: "backbone.p3.1", 5: "backbone.p4.0", 6: "backbone.p4.1", 7: "backbone.p5.0",
    8: "backbone.p5.1", 9: "backbone.p5.2", 10: "neck.reduce_p5", 13: "neck.merge_p4",
    14: "neck.reduce_p4", 17: "neck.out_p3", 18: "neck.down_p3", 20: "neck.out_p4",
    21: "neck.down_p4", 23: "neck.out_p5", 24: "detect",
}


def _blocks() -> Any:
    """ultralytics' building blocks, imported on first use (offline: no settings sync)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics.nn import modules

    return modules


def scale_width(channels: int, size: ModelSize) -> int:
    """YOLOv5's make_divisible(channels * width, 8)."""
    return int(math.ceil(channels * size.width / 8) * 8)


def scale_depth(repeats: int, size: ModelSize) -> int:
    return max(round(repeats * size.depth), 1) if repeats > 1 else repeats


class CSPDarknet(nn.Module):
    """YOLOv5 v6 backbone: 6x6 stem, then Conv(s=2) + C3 per stage, SPPF at the end."""

    def __init__(self, size: ModelSize) -> None:
        super().__init__()
        blocks = _blocks()
        stem, *stages = [scale_width(c, size) for c in BASE_CHANNELS]
        depths = [scale_depth(d, size) for d in BASE_BACKBONE_DEPTHS]
        self.stem = blocks.Conv(3, stem, 6, 2, 2)
        inputs = [stem, *stages[:-1]]
        self.p2, self.p3, self.p4, self.p5 = (
            nn.Sequential(blocks.Conv(c_in, c_out, 3, 2), blocks.C3(c_out, c_out, depth))
            for c_in, c_out, depth in zip(inputs, stages, depths))
        sppf = blocks.SPPF(stages[-1], stages[-1], 5)
        sppf.cv1.act = nn.SiLU()  # YOLOv5's SPPF activates cv1; ultralytics' does not
        self.p5.append(sppf)
        self.out_channels = tuple(stages[1:])  # P3, P4, P5

    def forward(self, images: Tensor) -> list[Tensor]:
        """images (B, 3, H, W) -> [P3 (B, C3, H/8, W/8), P4 (.., H/16, ..), P5 (.., H/32, ..)]."""
        p3 = self.p3(self.p2(self.stem(images)))
        p4 = self.p4(p3)
        return [p3, p4, self.p5(p4)]


class EfficientNetBackbone(nn.Module):
    """torchvision EfficientNet-B4 features (no download), tapped at strides 8/16/32.

    Inputs are in [0, 1]; ImageNet normalisation happens here so that ImageNet weights loaded
    later see what they were trained on. The final 1x1 conv to 1792 channels is dropped.
    """

    TAPS = (3, 5, 7)  # feature stages ending at strides 8, 16, 32

    def __init__(self) -> None:
        super().__init__()
        import torchvision

        features = torchvision.models.efficientnet_b4(weights=None).features
        self.features = features[: self.TAPS[-1] + 1]
        self.out_channels = tuple(self.features[index][-1].out_channels for index in self.TAPS)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> list[Tensor]:
        x = (images - self.mean) / self.std
        outputs = []
        for index, stage in enumerate(self.features):
            x = stage(x)
            if index in self.TAPS:
                outputs.append(x)
        return outputs  # [(B, 56, H/8, W/8), (B, 160, H/16, W/16), (B, 448, H/32, W/32)]


class FeatureAdapter(nn.Module):
    """1x1 Conv per scale mapping a foreign backbone's channels onto the neck's."""

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int]) -> None:
        super().__init__()
        blocks = _blocks()
        self.convs = nn.ModuleList(blocks.Conv(c_in, c_out, 1) for c_in, c_out in zip(in_channels, out_channels))

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        return [conv(feature) for conv, feature in zip(self.convs, features)]


class PANet(nn.Module):
    """YOLOv5 v6 neck: top-down (FPN) then bottom-up path, C3 blocks without shortcuts."""

    def __init__(self, channels: Sequence[int], depth: int) -> None:
        super().__init__()
        blocks = _blocks()
        c3, c4, c5 = channels
        self.reduce_p5 = blocks.Conv(c5, c4, 1, 1)
        self.merge_p4 = blocks.C3(2 * c4, c4, depth, False)
        self.reduce_p4 = blocks.Conv(c4, c3, 1, 1)
        self.out_p3 = blocks.C3(2 * c3, c3, depth, False)
        self.down_p3 = blocks.Conv(c3, c3, 3, 2)
        self.out_p4 = blocks.C3(2 * c3, c4, depth, False)
        self.down_p4 = blocks.Conv(c4, c4, 3, 2)
        self.out_p5 = blocks.C3(2 * c4, c5, depth, False)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.concat = blocks.Concat(1)
        self.out_channels = (c3, c4, c5)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        p3, p4, p5 = features
        lateral_p5 = self.reduce_p5(p5)  # (B, c4, H/32, W/32)
        top_down_p4 = self.merge_p4(self.concat([self.upsample(lateral_p5), p4]))
        lateral_p4 = self.reduce_p4(top_down_p4)  # (B, c3, H/16, W/16)
        out_p3 = self.out_p3(self.concat([self.upsample(lateral_p4), p3]))  # (B, c3, H/8, W/8)
        out_p4 = self.out_p4(self.concat([self.down_p3(out_p3), lateral_p4]))  # (B, c4, H/16, W/16)
        out_p5 = self.out_p5(self.concat([self.down_p4(out_p4), lateral_p5]))  # (B, c5, H/32, W/32)
        return [out_p3, out_p4, out_p5]


class Detector(nn.Module):
    """backbone -> (adapter) -> neck -> detect. Train: raw list; eval: (decoded, raw).

    ``backbone_norm_frozen`` (set by ``freeze.freeze_backbone``) keeps the backbone's BatchNorm
    layers in eval mode through every ``train()`` call, so their running statistics stay fixed.
    """

    def __init__(self, name: str, backbone: nn.Module, neck: nn.Module, detect: Detect,
                 adapter: nn.Module | None = None) -> None:
        super().__init__()
        self.name = name
        self.backbone = backbone
        self.adapter = adapter
        self.neck = neck
        self.detect = detect
        self.backbone_norm_frozen = False

    @property
    def stride(self) -> Tensor:
        return self.detect.stride

    @property
    def num_classes(self) -> int:
        return self.detect.num_classes

    def train(self, mode: bool = True) -> Detector:
        super().train(mode)
        if mode and self.backbone_norm_frozen:
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, images: Tensor) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """images: (B, 3, H, W) in [0, 1], H and W multiples of 32."""
        height, width = images.shape[-2:]
        largest_stride = STRIDES[-1]
        if height % largest_stride or width % largest_stride:
            raise ValueError(f"input {height}x{width} must be a multiple of {largest_stride} on both sides")
        features = self.backbone(images)
        if self.adapter is not None:
            features = self.adapter(features)
        return self.detect(self.neck(features))


def _initialize(model: nn.Module) -> None:
    """YOLOv5's initialize_weights: BatchNorm eps 1e-3, momentum 0.03, except in an EfficientNet
    backbone, which keeps torchvision's eps (1e-5): the ImageNet weights (torchvision's and timm's
    efficientnet_b4) were trained with it, and a different eps changes what their layers compute.

    (YOLOv5 also makes activations in-place; ultralytics' Conv shares one class-level SiLU, so
    changing it here would leak into every other ultralytics model in the process.)
    """
    keep_eps = {id(m) for m in model.backbone.modules()} if isinstance(model.backbone, EfficientNetBackbone) else set()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.03
            if id(module) not in keep_eps:
                module.eps = 1e-3


def build_model(name: str, num_classes: int, anchors: Any = None) -> Detector:
    """Build a detector with randomly initialised weights (load weights with ``weights.load_pretrained``).

    Args:
        name: one of ``MODEL_NAMES`` (yolov5n/s/m/l/x, efficientnet_b4).
        num_classes: detector output classes (17 for the SmartCash taxonomy).
        anchors: anchor [w, h] in input pixels, small to large: (3, 3, 2), (9, 2) or YOLOv5's
            3 rows of 6 numbers; YOLOv5's defaults when None.

    Raises:
        ValueError: unknown name, num_classes < 1, or malformed anchors.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    anchor_pixels = anchors_tensor(anchors, num_levels=len(STRIDES))
    adapter: nn.Module | None = None
    if name == "efficientnet_b4":
        backbone: nn.Module = EfficientNetBackbone()
        channels = tuple(scale_width(c, EFFICIENTNET_NECK) for c in BASE_CHANNELS[2:])
        adapter = FeatureAdapter(backbone.out_channels, channels)
        neck = PANet(channels, scale_depth(BASE_NECK_DEPTH, EFFICIENTNET_NECK))
    else:
        size = YOLOV5_SIZES[name]
        backbone = CSPDarknet(size)
        neck = PANet(backbone.out_channels, scale_depth(BASE_NECK_DEPTH, size))
    detect = Detect(num_classes, neck.out_channels, anchor_pixels, STRIDES)
    model = Detector(name, backbone, neck, detect, adapter)
    _initialize(model)
    logger.debug("built %s (nc=%d)", name, num_classes)
    return model
