"""An inference copy of a model with every BatchNorm folded into the convolution before it.

In eval mode a BatchNorm is a fixed per-channel scale and shift, so ``bn(conv(x))`` equals one
convolution with rescaled weights and a bias: the evaluated copy skips a pass over every
activation map. Folding covers the two layouts our networks use: ultralytics' ``Conv`` (``.conv``
then ``.bn``) and a ``Sequential`` holding a ``Conv2d`` directly followed by a ``BatchNorm2d``
(torchvision's ``Conv2dNormActivation`` in the EfficientNet backbone). The source model is not
touched; the copy is for evaluation only (no gradients, BatchNorm statistics frozen in).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fused_copy(model: nn.Module) -> nn.Module:
    """An eval-mode deep copy of ``model`` with its Conv2d + BatchNorm2d pairs folded."""
    fused = copy.deepcopy(model).eval()
    with torch.no_grad():
        for module in fused.modules():
            conv, norm = getattr(module, "conv", None), getattr(module, "bn", None)
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                module.conv, module.bn = fuse_conv_bn_eval(conv, norm), nn.Identity()
            elif isinstance(module, nn.Sequential):
                _fold_sequential(module)
    for parameter in fused.parameters():
        parameter.requires_grad_(False)
    return fused


def _fold_sequential(sequence: nn.Sequential) -> None:
    """Fold each Conv2d immediately followed by a BatchNorm2d inside ``sequence``, in place."""
    names = list(sequence._modules)
    for first, second in zip(names, names[1:]):
        conv, norm = sequence._modules[first], sequence._modules[second]
        if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
            sequence._modules[first] = fuse_conv_bn_eval(conv, norm)
            sequence._modules[second] = nn.Identity()
