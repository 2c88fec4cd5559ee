"""A one-line model summary (layers, parameters, GFLOPs at an image size) for logs and records."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class ModelSummary:
    name: str
    layers: int  # leaf modules (convolutions, norms, activations, pools ...), shared ones counted per use
    parameters: int
    trainable_parameters: int
    gflops: float  # floating-point operations (2 per multiply-add) of one forward, 1e9
    imgsz: int

    def __str__(self) -> str:
        return (f"{self.name} summary: {self.layers} layers, {self.parameters:,} parameters, "
                f"{self.trainable_parameters:,} trainable, {self.gflops:.1f} GFLOPs at {self.imgsz}")


def count_gflops(model: nn.Module, imgsz: int = 640) -> float:
    """GFLOPs of one eval forward of a (1, 3, imgsz, imgsz) image.

    Counted by ``torch.utils.flop_counter`` on a copy of the model on the meta device: no memory
    for activations and no arithmetic, so it is instant even at 640 on CPU. Counts matmuls and
    convolutions (as thop-based YOLOv5 reports do, up to its MAC x 2 convention).
    """
    meta_model = copy.deepcopy(model).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta_model(torch.zeros(1, 3, imgsz, imgsz, device="meta"))
    return counter.get_total_flops() / 1e9


def model_summary(model: nn.Module, imgsz: int = 640) -> ModelSummary:
    """Layers, parameters and GFLOPs at ``imgsz`` (default 640, as YOLOv5 reports)."""
    parameters = list(model.parameters())
    return ModelSummary(
        name=str(getattr(model, "name", type(model).__name__)),
        layers=sum(1 for _, module in model.named_modules(remove_duplicate=False) if not list(module.children())),
        parameters=sum(parameter.numel() for parameter in parameters),
        trainable_parameters=sum(parameter.numel() for parameter in parameters if parameter.requires_grad),
        gflops=count_gflops(model, imgsz),
        imgsz=imgsz,
    )
