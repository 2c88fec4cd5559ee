"""Freezing the backbone for the first training phase, and the parameter groups on each side.

Mechanism: ``freeze_backbone`` turns off ``requires_grad`` on the backbone and sets
``Detector.backbone_norm_frozen``; ``Detector.train()`` then puts the backbone's BatchNorm layers
back in eval mode after every ``train()`` call (including the trainer's per-epoch
``model.train()`` and DDP's), so their running statistics stay those of the pretrained weights.
The flag is plain data: it survives ``copy.deepcopy`` (EMA) and needs no hooks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from torch import Tensor, nn

from smartcash.model.batchnorm import batchnorm_layers, recompute_batchnorm_statistics

logger = logging.getLogger(__name__)


def _detector(model: nn.Module) -> nn.Module:
    """The Detector inside a DDP / compiled wrapper, or the model itself."""
    detector = model
    for wrapper_attribute in ("module", "_orig_mod"):  # DistributedDataParallel, torch.compile
        inner = getattr(model, wrapper_attribute, None)
        if isinstance(inner, nn.Module):
            detector = inner
            break
    if not hasattr(detector, "backbone") or not hasattr(detector, "detect"):
        raise TypeError(f"expected a smartcash Detector (with .backbone and .detect), got {type(detector).__name__}")
    return detector


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of ``model.backbone`` (the pretrained feature extractor)."""
    return list(_detector(model).backbone.parameters())


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter outside the backbone: adapter (EfficientNet), neck and detect head."""
    detector = _detector(model)
    backbone_ids = {id(parameter) for parameter in detector.backbone.parameters()}
    return [parameter for parameter in detector.parameters() if id(parameter) not in backbone_ids]


def freeze_backbone(model: nn.Module) -> int:
    """Stop gradients into the backbone and keep its BatchNorm statistics fixed. Returns the count
    of parameters frozen."""
    detector = _detector(model)
    parameters = backbone_parameters(detector)
    for parameter in parameters:
        parameter.requires_grad_(False)
    detector.backbone_norm_frozen = True
    detector.train(detector.training)  # apply the BatchNorm rule now, whatever the current mode
    frozen = sum(parameter.numel() for parameter in parameters)
    logger.info("froze backbone: %d parameters, BatchNorm statistics fixed", frozen)
    return frozen


def unfreeze_all(model: nn.Module) -> int:
    """Make every parameter trainable and let BatchNorm follow train/eval again. Returns the count
    of trainable parameters."""
    detector = _detector(model)
    for parameter in detector.parameters():
        parameter.requires_grad_(True)
    detector.backbone_norm_frozen = False
    detector.train(detector.training)
    trainable = sum(parameter.numel() for parameter in detector.parameters())
    logger.info("unfroze all: %d trainable parameters", trainable)
    return trainable


def estimate_backbone_statistics(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """Re-estimate the backbone's BatchNorm running statistics from data; weights are unchanged.

    Why: a frozen backbone is only a feature extractor if its BatchNorm statistics describe its
    activations. Freshly initialised ones (mean 0, variance 1) do not: through a random
    CSPDarknet the features then shrink by orders of magnitude per stage (std ~1e-5 at stride 16,
    0 at 32), and a neck + head trained on them learn nothing. Pretrained weights bring their own
    statistics and never need this.

    Args:
        model: the Detector; only ``model.backbone`` runs.
        batches: (B, 3, H, W) image tensors on the model's device, values in [0, 1].

    Returns:
        The number of images the statistics were estimated from.
    """
    backbone = _detector(model).backbone
    return recompute_batchnorm_statistics(backbone, batches, batchnorm_layers(backbone))
