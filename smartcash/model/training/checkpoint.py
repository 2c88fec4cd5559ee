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
- ``config`` (``TrainConfig.to_dict()``), ``taxonomy`` (``Taxonomy.to_dict()``)
"""

from __future__ import annotations

import datetime
import io
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smartcash.atomic import atomic_write_bytes

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
