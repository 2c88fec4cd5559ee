"""Optimisation pieces: AdamW parameter groups, the warm-up + cosine schedule, and the EMA of weights.

Parameter groups are named ``{part}/{kind}``: part ``backbone`` or ``head`` (neck + head, each with
its own LR), kind ``weight`` (decayed), ``norm`` (BatchNorm/LayerNorm weights, no decay) or
``bias`` (no decay; YOLOv5 warms biases down from a high LR).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
               nn.modules.instancenorm._InstanceNorm)


def build_param_groups(model: nn.Module, part_lrs: dict[str, float],
                       part_parameters: dict[str, Iterable[nn.Parameter]],
                       weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups for the trainable parameters of each part.

    Args:
        model: the (unwrapped) model; its modules tell norm weights and biases apart.
        part_lrs: LR per part, e.g. ``{"head": 1e-3}`` or ``{"head": 1e-4, "backbone": 1e-5}``.
        part_parameters: the parameters of each part named in ``part_lrs``.
        weight_decay: applied to ``weight`` groups only.

    Returns:
        Non-empty groups with keys ``params, lr, initial_lr, weight_decay, name, part, kind``.
    """
    owner = {id(p): part for part in part_lrs for p in part_parameters[part]}
    buckets: dict[tuple[str, str], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            part = owner.get(id(parameter))
            if part is None or not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            kind = "bias" if name == "bias" else "norm" if isinstance(module, _NORM_TYPES) else "weight"
            buckets.setdefault((part, kind), []).append(parameter)
    groups = []
    for part in part_lrs:
        for kind in ("weight", "norm", "bias"):
            params = buckets.get((part, kind))
            if params:
                groups.append({"params": params, "lr": part_lrs[part], "initial_lr": part_lrs[part],
                               "weight_decay": weight_decay if kind == "weight" else 0.0,
                               "name": f"{part}/{kind}", "part": part, "kind": kind})
    return groups


@dataclass(frozen=True)
class WarmupCosineSchedule:
    """LR, beta1 and gradient accumulation as pure functions of (iteration, epoch), as YOLOv5
    schedules them.

    Cosine decay per epoch from ``initial_lr`` to ``initial_lr * final_fraction``. During the
    first ``warmup_iterations`` optimiser-loop iterations, each LR moves linearly to its cosine
    value: biases from ``warmup_bias_factor`` times their own LR down, the other groups from 0 up;
    beta1 rises from ``warmup_beta1`` to ``beta1``; with ``warmup_accumulate`` the batches per
    optimiser step rise from 1 to ``accumulate``. Being stateless, a resumed run gets exactly the
    same values.
    """

    epochs: int
    warmup_iterations: int
    final_fraction: float
    warmup_bias_factor: float
    beta1: float
    warmup_beta1: float
    accumulate: int = 1
    warmup_accumulate: bool = False

    def factor(self, epoch: int) -> float:
        """Cosine multiplier of ``initial_lr`` at ``epoch``: 1 at epoch 0 -> final_fraction."""
        return ((1 - math.cos(epoch * math.pi / self.epochs)) / 2) * (self.final_fraction - 1) + 1

    def apply(self, optimizer: torch.optim.Optimizer, iteration: int, epoch: int) -> None:
        """Set every group's ``lr`` (and beta1) for global ``iteration`` within ``epoch``."""
        factor = self.factor(epoch)
        warming = iteration < self.warmup_iterations
        progress = iteration / self.warmup_iterations if warming else 1.0
        for group in optimizer.param_groups:
            target = group["initial_lr"] * factor
            if warming:
                start = self.warmup_bias_factor * group["initial_lr"] if group.get("kind") == "bias" else 0.0
                group["lr"] = start + (target - start) * progress
            else:
                group["lr"] = target
            if "betas" in group:
                beta1 = self.warmup_beta1 + (self.beta1 - self.warmup_beta1) * progress
                group["betas"] = (beta1, group["betas"][1])

    def batches_per_step(self, iteration: int) -> int:
        """Batches whose gradients add up into one optimiser step at ``iteration``."""
        if not self.warmup_accumulate or iteration >= self.warmup_iterations:
            return self.accumulate
        return max(1, round(1 + (self.accumulate - 1) * iteration / self.warmup_iterations))

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def build_optimizer(groups: list[dict[str, Any]], beta1: float, beta2: float) -> torch.optim.AdamW:
    """AdamW over ``groups`` (each carries its own lr and weight_decay)."""
    # foreach=False: the per-parameter loop gives the same bits on every run and after resume.
    return torch.optim.AdamW(groups, betas=(beta1, beta2), foreach=False)


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Current LR of each part (its ``weight`` group, else its first group): for results.csv."""
    lrs: dict[str, float] = {}
    for group in optimizer.param_groups:
        part = group.get("part", "head")
        if part not in lrs or group.get("kind") == "weight":
            lrs[part] = float(group["lr"])
    return lrs


class ModelEMA:
    """Exponential moving average of the trainable weights (YOLOv5's ModelEMA, ramped decay).

    ``decay_t = decay * (1 - exp(-updates / tau))`` so early updates track the model closely.
    Trainable parameters and the floating-point buffers of trainable layers (BatchNorm running
    statistics) are averaged, as YOLOv5 does: copying the live statistics would pair averaged
    weights with the statistics of the latest weights. Frozen layers are copied, so a frozen
    backbone stays bit-exact. What is trainable is read once, here: build the EMA after the phase
    switch has frozen or unfrozen the model.
    """

    def __init__(self, model: nn.Module, decay: float, tau: float, updates: int = 0) -> None:
        self.averaged = self.averaged_names(model)  # fixed for the phase; not re-derived every step
        # Plain (NCHW) layout whatever the trained model's: every validation, precise BN and
        # checkpoint of the EMA then computes exactly as a model loaded from that checkpoint does.
        self.module = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = updates

    @staticmethod
    def averaged_names(model: nn.Module) -> set[str]:
        """State-dict names that are averaged: trainable parameters, and the floating-point buffers
        of layers with a trainable parameter."""
        names: set[str] = set()
        for prefix, module in model.named_modules():
            parameters = list(module.named_parameters(prefix=prefix, recurse=False))
            trainable = [name for name, parameter in parameters if parameter.requires_grad]
            names.update(trainable)
            if trainable:
                names.update(name for name, buffer in module.named_buffers(prefix=prefix, recurse=False)
                             if buffer.is_floating_point())
        return names

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = self.decay * (1 - math.exp(-self.updates / self.tau))
        source = model.state_dict()
        for name, value in self.module.state_dict().items():
            if name in self.averaged:
                value.mul_(decay).add_(source[name].detach(), alpha=1 - decay)
            else:
                value.copy_(source[name])

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any], updates: int) -> None:
        self.module.load_state_dict(state)
        self.updates = updates
