"""What a finished run leaves besides checkpoints and results.csv: the final plots and its entry
in the model registry."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from smartcash.config import TrainConfig
from smartcash.model.training.checkpoint import load_checkpoint
from smartcash.taxonomy import Taxonomy

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from smartcash.model.training.core.validation_executor import ValidationExecutor, ValidationResult

logger = logging.getLogger(__name__)


def write_final_plots(run_dir: Path, result: ValidationResult | None, taxonomy: Taxonomy) -> list[Path]:
    """Loss/metric curves from results.csv, and the PR curve + confusion matrix of ``result``."""
    from smartcash.model.training.curves import plot_curves

    written = [p for p in [plot_curves(run_dir / "results.csv", run_dir / "results.png")] if p]
    if result is None:
        return written
    from smartcash import plots

    written += plots.plot_validation(result, run_dir, taxonomy)
    return written


def register_run(config: TrainConfig, best_weights: Path, best_row: dict[str, float], epochs: int) -> None:
    """Add (or replace) ``NAME/phaseN`` in ``PROJECT/registry.json``."""
    from smartcash.model.training.registry import ModelRegistry, RegistryEntry

    metrics = {key: float(value) for key, value in best_row.items()
               if key.startswith(("metrics/", "val/")) or key in ("fitness", "epoch")}
    entry = RegistryEntry(id=f"{config.name}/phase{config.phase}", phase=config.phase, data=str(config.data),
                          model=config.model, weights=str(best_weights.resolve()), metrics=metrics,
                          run_dir=str(config.run_dir.resolve()), epochs=epochs)
    ModelRegistry(Path(config.project) / "registry.json").add(entry)


def validate_checkpoint(path: Path, model: nn.Module, validator: ValidationExecutor, loader: DataLoader,
                        device: torch.device) -> ValidationResult:
    """Validation result of a checkpoint's EMA weights (for the final plots after a resume)."""
    state = load_checkpoint(path)
    model.load_state_dict(state["ema"])
    return validator.run(model, loader, device)
