"""THE phase switch: everything that differs between phase 1 and phase 2 happens in ``enter_phase``.

What a phase trains and how fast comes from its recipe (``recipe.PhaseRecipe``): the backbone
frozen (not in the optimiser, its BatchNorm in eval) or trained, the LR of each part, warm-up and
accumulation. Always: a fresh AdamW + warm-up/cosine schedule, best-metric tracking reset, cached
decode grids cleared. Called once per run, before the model is wrapped for DDP.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from smartcash.config import TrainConfig
from smartcash.model.freeze import backbone_parameters, freeze_backbone, head_parameters, unfreeze_all
from smartcash.model.training.optim import WarmupCosineSchedule, build_optimizer, build_param_groups
from smartcash.model.training.recipe import PhaseRecipe
from smartcash.model.training.records import lower_is_better

logger = logging.getLogger(__name__)


class PhaseAware(Protocol):
    def set_phase(self, phase: int) -> None: ...


class EarlyStopping:
    """Tracks the best value of one metric and when it was reached: the highest for fitness and
    mAP, the lowest for a loss column (``records.lower_is_better``).

    Args:
        metric: ``fitness`` or a results.csv column name.
        patience: stop after this many epochs without improvement; 0 never stops.
    """

    def __init__(self, metric: str, patience: int) -> None:
        self.metric = metric
        self.patience = patience
        self.lower_is_better = lower_is_better(metric)
        self.best = math.inf if self.lower_is_better else -math.inf
        self.best_epoch = -1

    def update(self, epoch: int, value: float) -> bool:
        """Record ``value`` for ``epoch``; True when it is a new best (NaN never is)."""
        better = value < self.best if self.lower_is_better else value > self.best
        if math.isfinite(value) and better:
            self.best, self.best_epoch = float(value), epoch
            return True
        return False

    def should_stop(self, epoch: int) -> bool:
        return self.patience > 0 and epoch - self.best_epoch >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "patience": self.patience, "best": self.best,
                "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])


@dataclass
class PhaseSetup:
    """What ``enter_phase`` hands the trainer."""

    phase: int
    optimizer: torch.optim.AdamW
    schedule: WarmupCosineSchedule
    early_stopping: EarlyStopping


def enter_phase(phase: int, model: nn.Module, config: TrainConfig, recipe: PhaseRecipe,
                batches_per_epoch: int, world_size: int = 1,
                prediction_processor: PhaseAware | None = None) -> PhaseSetup:
    """Freeze/unfreeze, build the optimiser and schedule, reset tracking and caches; log one line.

    Args:
        phase: 1 or 2.
        model: the unwrapped Detector (``.backbone``, ``.detect``).
        config: weight decay, betas, schedule; its ``warmup_epochs`` / ``nominal_batch`` override
            the recipe's when set.
        recipe: this phase's recipe.
        batches_per_epoch: loader length (warm-up is measured in batches, as YOLOv5).
        world_size: processes whose batches make one optimiser step together.
        prediction_processor: its decode cache is cleared (``set_phase``).
    """
    if phase not in (1, 2):
        raise ValueError(f"phase must be 1 or 2, got {phase}")
    if recipe.freeze_backbone:
        freeze_backbone(model)  # requires_grad False; backbone BatchNorm stays in eval
        part_lrs = {"head": recipe.head_lr}
    else:
        unfreeze_all(model)
        part_lrs = {"head": recipe.head_lr, "backbone": recipe.backbone_lr}
    parts = {"head": list(head_parameters(model)), "backbone": list(backbone_parameters(model))}
    groups = build_param_groups(model, part_lrs, parts, config.weight_decay)
    optimizer = build_optimizer(groups, config.beta1, config.beta2)
    warmup_epochs = recipe.warmup_epochs if config.warmup_epochs is None else config.warmup_epochs
    nominal_batch = recipe.nominal_batch if config.nominal_batch is None else config.nominal_batch
    warmup = round(min(warmup_epochs, recipe.warmup_max_fraction * config.epochs) * batches_per_epoch)
    schedule = WarmupCosineSchedule(
        epochs=config.epochs, warmup_iterations=max(warmup, 1) if warmup_epochs > 0 else 0,
        final_fraction=config.final_lr_fraction, warmup_bias_factor=recipe.warmup_bias_factor,
        beta1=config.beta1, warmup_beta1=config.warmup_beta1,
        # Accumulate gradients over ~nominal_batch images (all ranks together) per optimiser step.
        accumulate=max(round(nominal_batch / (config.batch * world_size)), 1),
        warmup_accumulate=recipe.warmup_accumulate)
    early_stopping = EarlyStopping(config.early_stop_metric, config.patience)
    detect = getattr(model, "detect", None)
    if detect is not None and hasattr(detect, "grid_cache"):
        detect.grid_cache.clear()
    if prediction_processor is not None:
        prediction_processor.set_phase(phase)

    trained = sum(p.numel() for group in groups for p in group["params"])
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    lrs = ", ".join(f"{part} lr {lr:g}" for part, lr in part_lrs.items())
    ramp = "ramping from 1" if recipe.warmup_accumulate else "from the start"
    logger.info("phase %d: %s; training %s params (%s), frozen %s; fresh AdamW (wd %g, %d groups, no "
                "decay on norm/bias) + warm-up %d batches (biases from %gx their LR) + cosine over %d "
                "epochs; %d batch(es) per step %s; best %s reset; decode caches cleared", phase,
                "backbone frozen (BatchNorm eval)" if recipe.freeze_backbone else "all layers trainable",
                f"{trained:,}", lrs, f"{frozen:,}", config.weight_decay, len(groups),
                schedule.warmup_iterations, recipe.warmup_bias_factor, config.epochs,
                schedule.accumulate, ramp, config.early_stop_metric)
    return PhaseSetup(phase, optimizer, schedule, early_stopping)
