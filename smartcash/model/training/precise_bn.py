"""Precise BatchNorm: before a validation, the evaluated weights get BatchNorm statistics that
describe them, re-estimated on a fixed, seeded sample of training images (Detectron2's PreciseBN
hook, named for the moment it runs).

The sample is spread over the whole training split (a seeded random choice, not the first files:
datasets often sort by class) and read without augmentation, letterboxed like validation images,
so the statistics describe the inputs the model is evaluated on. It is decoded once and kept as
uint8; each call only runs forwards. A frozen backbone keeps its statistics (pretrained, or
estimated once when the run started): its weights never move, so they cannot lag.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from smartcash.model.batchnorm import batchnorm_layers, recompute_batchnorm_statistics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreciseBatchNormReport:
    images: int
    layers: int
    seconds: float


def sample_indices(length: int, count: int, seed: int) -> np.ndarray:
    """``min(count, length)`` distinct indices in ``[0, length)``, seeded, sorted: spread over the
    data whatever order its files are in."""
    count = min(count, length)
    return np.sort(np.random.default_rng(seed).choice(length, size=count, replace=False))


def trainable_batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """BatchNorm layers whose statistics should follow the weights: all of them, except a frozen
    backbone's (``Detector.backbone_norm_frozen``)."""
    layers = batchnorm_layers(model)
    backbone = getattr(model, "backbone", None)
    if getattr(model, "backbone_norm_frozen", False) and backbone is not None:
        frozen = {id(layer) for layer in batchnorm_layers(backbone)}
        layers = [layer for layer in layers if id(layer) not in frozen]
    return layers


class PreciseBatchNorm:
    """Re-estimates a model's BatchNorm statistics on the same images at every call.

    Args:
        dataset: a non-augmenting dataset of the training split (``YoloDataset(..., augment=False)``).
        images: sample size; 0 turns the hook off.
        seed: chooses the sample.
        batch_size: images per forward.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, images: int, seed: int, batch_size: int) -> None:
        self.dataset = dataset
        self.indices = sample_indices(len(dataset), images, seed) if images > 0 else np.zeros(0, np.int64)
        self.batch_size = max(1, batch_size)
        self._images: Tensor | None = None  # (N, 3, S, S) uint8, decoded on first use

    @property
    def enabled(self) -> bool:
        return len(self.indices) > 0

    def _sample(self) -> Tensor:
        if self._images is None:
            self._images = torch.stack([self.dataset[int(index)].image for index in self.indices])
        return self._images

    def __call__(self, model: nn.Module, device: torch.device) -> PreciseBatchNormReport:
        """Re-estimate ``model``'s (the evaluated copy's) statistics in place."""
        if not self.enabled:
            return PreciseBatchNormReport(0, 0, 0.0)
        started = time.perf_counter()
        layers = trainable_batchnorm_layers(model)
        sample = self._sample()
        batches = (chunk.to(device, non_blocking=True).float().div_(255)
                   for chunk in sample.split(self.batch_size))
        images = recompute_batchnorm_statistics(model, batches, layers)
        return PreciseBatchNormReport(images, len(layers), time.perf_counter() - started)
