"""Checkpoints: plain data (tensors, numbers, strings, lists, dicts) written atomically.

Every checkpoint loads with ``torch.load(weights_only=True)``: it is data, never code. Keys:

- ``version`` (int), ``phase`` (1|2), ``epoch`` (index of the last completed epoch, -1 if none),
  ``interrupted`` (bool: saved by Ctrl-C in the middle of epoch ``epoch + 1``), ``date`` (ISO)
- ``model_name`` (str), ``num_classes`` (int), ``anchors`` (tensor (3, 3, 2), pixels)
- ``model`` / ``ema`` (state dicts), ``ema_updates`` (int)
- ``optimizer``, ``scaler``, ``scheduler`` (state dicts), ``iteration`` (optimiser-loop iterations)
- ``best_fitness`` (float), ``early_stopping`` (dict: metric, best, best_epoch, patience)
- ``metrics`` (dict: the last results.csv row)
- ``rng`` (dict: ``torch`` uint8 tensor, ``cuda`` list of uint8 tensors, ``numpy`` dict of plain
  values, ``python`` list)
- ``config`` (``TrainConfig.to_dict()``), ``taxonomy`` (``Taxonomy.to_dict()``), ``recipe``
  (``RecipeChoice.to_dict()``), ``results`` (list of every results.csv row so far)
- ``loss_used`` (dict: the loss weights, gains, their source and the label layout behind them, as
  args.yaml records them; a resumed run trains with these gains, whatever the labels say now)

``checkpoint_state`` makes that dict from a run's pieces; ``resume_from`` puts it back;
``find_start_point`` says which checkpoint a run starts from.
"""

from __future__ import annotations

import datetime
import io
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from smartcash.atomic import atomic_write_bytes

if TYPE_CHECKING:
    from smartcash.config import TrainConfig
    from smartcash.model.training.optim import ModelEMA
    from smartcash.model.training.phases import PhaseSetup
    from smartcash.model.training.recipe import RecipeChoice
    from smartcash.taxonomy import Taxonomy

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or not a SmartCash checkpoint."""


def checkpoint_bytes(state: dict[str, Any]) -> bytes:
    """Serialise ``state`` (plain data) once, stamped with ``version`` and ``date``."""
    state = {"version": CHECKPOINT_VERSION,
             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             **state}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any] | bytes) -> None:
    """Write ``state`` (plain data, or ``checkpoint_bytes``) atomically: the old file survives
    any failure mid-write, and no temp file is left behind."""
    atomic_write_bytes(path, state if isinstance(state, bytes) else checkpoint_bytes(state))


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
                    what: str = "checkpoint", hint: str = "") -> dict[str, Any]:
    """Load with ``weights_only=True``; errors say which file and why.

    Args:
        path: the ``.pt`` file.
        map_location: where tensors go (default cpu).
        what: how the error message names the file ("phase 1 best checkpoint", ...).
        hint: how to fix a missing file, appended to the error.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}" + (f" ({hint})" if hint else ""))
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt/unsafe files
        raise CheckpointError(f"{path}: cannot load {what} with weights_only=True ({error})") from error
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a SmartCash checkpoint (no 'model' state dict)")
    return state


def rng_state() -> dict[str, Any]:
    """Torch, CUDA, numpy and python RNG states as tensors and plain lists (weights_only safe)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "position": int(position), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": [int(version), list(internal), gauss],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["position"], numpy_state["has_gauss"], numpy_state["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


@dataclass(frozen=True)
class StartPoint:
    """Where the weights come from: nothing (phase 1), phase 1's best (phase 2) or ``last.pt``."""

    state: dict[str, Any] | None
    path: Path | None
    resume: bool


def find_start_point(config: TrainConfig) -> StartPoint:
    """``last.pt`` on ``--resume``; phase 1's best for phase 2; else nothing."""
    if config.resume:
        path = config.run_dir / "weights" / "last.pt"
        hint = "nothing to resume: start without --resume"
        return StartPoint(load_checkpoint(path, what="checkpoint to resume", hint=hint), path, True)
    if config.phase == 2:
        path = Path(config.weights) if config.weights else config.phase_dir(1) / "weights" / "best.pt"
        hint = f"run `{config.command(1)}` first, or pass --weights"
        state = load_checkpoint(path, what="phase 1 best checkpoint", hint=hint)
        if not config.weights:
            from smartcash.model.training.run_folder import previous_run

            phase1 = previous_run(config.phase_dir(1))
            if phase1 is not None and phase1.unfinished:
                logger.warning("phase 1 (%s) stopped before its end (%s): phase 2 starts from its best epoch so "
                               "far; to finish phase 1 first: `%s`", config.phase_dir(1), phase1.describe(),
                               config.command(1, "--resume"))
        return StartPoint(state, path, False)
    return StartPoint(None, None, False)


def checkpoint_state(*, config: TrainConfig, taxonomy: Taxonomy, recipe: RecipeChoice, model: nn.Module,
                     ema: ModelEMA, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                     phase_setup: PhaseSetup, epoch: int, batches_per_epoch: int, last_row: dict[str, float],
                     results: list[dict[str, float]], interrupted: bool,
                     loss_used: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to resume, as plain data (see the module docstring for the keys).

    Args:
        model: the unwrapped model (not the DDP wrapper).
        epoch: the last completed epoch (-1 if none).
        results: every results.csv row so far, flushed or still buffered: a resume after kill -9
            restores the rows that never reached the file.
    """
    tracker = phase_setup.early_stopping
    return {
        "phase": config.phase, "epoch": epoch, "interrupted": interrupted,
        "model_name": config.model, "num_classes": taxonomy.num_classes,
        "anchors": model.detect.anchors.detach().cpu().clone(),
        "model": model.state_dict(), "ema": ema.state_dict(), "ema_updates": ema.updates,
        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
        "scheduler": phase_setup.schedule.state_dict(),
        "iteration": (epoch + 1) * batches_per_epoch,
        "best_fitness": tracker.best, "early_stopping": tracker.state_dict(),
        "metrics": dict(last_row), "rng": rng_state(),
        "results": [dict(row) for row in results],
        "config": config.to_dict(), "taxonomy": taxonomy.to_dict(), "recipe": recipe.to_dict(),
        "loss_used": dict(loss_used or {}),
    }


@dataclass(frozen=True)
class ResumedProgress:
    epoch: int  # the last completed epoch: training continues at epoch + 1
    last_row: dict[str, float]  # its results.csv row (empty when the checkpoint has none)


def resume_from(state: dict[str, Any], *, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                ema: ModelEMA, phase_setup: PhaseSetup) -> ResumedProgress:
    """Restore optimiser, scaler, EMA, tracking and RNG from ``last.pt`` (the model is already loaded)."""
    optimizer.load_state_dict(state["optimizer"])
    if state["scaler"] and scaler.is_enabled():  # a run saved without loss scaling (CPU, bfloat16) has none
        scaler.load_state_dict(state["scaler"])
    ema.load_state_dict(state["ema"], int(state["ema_updates"]))
    phase_setup.early_stopping.load_state_dict(state["early_stopping"])
    restore_rng_state(state["rng"])
    return ResumedProgress(int(state["epoch"]), dict(state.get("metrics") or {}))
