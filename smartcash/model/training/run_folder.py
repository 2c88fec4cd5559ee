"""The run folder: created; a previous run's outputs of the same name and phase kept aside (or
replaced with ``exist_ok``) unless resuming; temp files an interrupted write left removed."""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from smartcash.config import ConfigError, TrainConfig

logger = logging.getLogger(__name__)

#: Where a fresh run keeps the previous run of its name and phase: RUN_DIR/previous/<UTC time>/.
PREVIOUS_RUNS = "previous"
#: Files of the run folder that stay where they are when the previous run is kept aside.
NOT_MOVED = (".lock", PREVIOUS_RUNS)
#: Outputs of an earlier run that a replacing run deletes besides the checkpoints, as they would mix
#: with its own (the rest, results.csv, args.yaml, plots, it overwrites).
STALE_OUTPUTS = ("events.out.tfevents.*", "labels.png", "train_batch*.jpg", "val_batch0_*.jpg")


@dataclass(frozen=True)
class PreviousRun:
    """What a run folder's checkpoints say about the run that wrote them."""

    checkpoints: tuple[Path, ...]  # weights/last.pt and / or best.pt that exist
    completed: int | None  # epochs completed (last.pt), None when it cannot be read
    epochs: int | None  # epochs the run was set to train
    unfinished: bool  # epochs left, not stopped early: Ctrl-C, a kill or a failure stopped it

    def describe(self) -> str:
        names = ", ".join(f"weights/{path.name}" for path in self.checkpoints)
        if self.completed is None:
            return names
        state = "stopped before the end" if self.unfinished else "finished"
        return f"{names}: {self.completed} of {self.epochs} epochs, {state}"


def previous_run(run_dir: Path) -> PreviousRun | None:
    """The run whose checkpoints ``run_dir`` holds, or None when it holds none."""
    weights = run_dir / "weights"
    checkpoints = tuple(path for path in (weights / "last.pt", weights / "best.pt") if path.is_file())
    if not checkpoints:
        return None
    import torch

    try:  # only to describe it: an unreadable last.pt is still someone's file
        # mmap: only the few numbers read here leave the disk, not the weights (read up to 3 times a start)
        state = torch.load(weights / "last.pt", map_location="cpu", weights_only=True, mmap=True)
        completed, epochs = int(state["epoch"]) + 1, int(state["config"]["epochs"])
        stopping = state.get("early_stopping") or {}
        patience, best_epoch = int(stopping.get("patience", 0)), int(stopping.get("best_epoch", -1))
        stopped_early = patience > 0 and completed - 1 - best_epoch >= patience  # EarlyStopping.should_stop
        unfinished = completed < epochs and not stopped_early
    except Exception:  # noqa: BLE001 (missing, corrupt or foreign: nothing to tell)
        return PreviousRun(checkpoints, None, None, False)
    return PreviousRun(checkpoints, completed, epochs, unfinished)


def refuse_to_bury_an_unfinished_run(config: TrainConfig) -> None:
    """A fresh run (no ``--resume``) into a folder whose run stopped before its end is most likely
    a forgotten ``--resume``: refuse it unless ``exist_ok``.

    Raises:
        ConfigError: the folder holds an unfinished run and ``exist_ok`` is off.
    """
    if config.resume or config.exist_ok or int(os.environ.get("RANK", "0")) != 0:
        return  # torchrun: rank 0 alone owns the folder (and reports)
    from smartcash.model.training import run_lock

    try:
        run_lock.ensure_free(config.run_dir)
    except run_lock.RunFolderBusyError:
        return  # not stopped: still training. The lock's own error (naming that run) comes at the start
    found = previous_run(config.run_dir)
    if found is not None and found.unfinished:
        raise ConfigError(
            f"{config.run_dir} holds an unfinished run ({found.describe()}): continue it with "
            f"`{config.command(config.phase, '--resume')}`, start a new run with another --name, or "
            "replace it with --exist-ok")


def prepare_run_dir(config: TrainConfig) -> None:
    """Create the run folder. A fresh run keeps the previous run of this name and phase (its
    weights, results, pictures) in ``previous/<UTC time>/``, or deletes them with ``exist_ok``, so
    a stale best.pt can never be picked up by phase 2 and no checkpoint is lost unasked."""
    weights = config.run_dir / "weights"
    if not config.resume:
        found = previous_run(config.run_dir)
        if found is not None and config.exist_ok:
            logger.warning("%s: --exist-ok: replacing the previous run of this name and phase (%s)",
                           config.run_dir, found.describe())
            _clear(config.run_dir)
        elif found is not None:
            kept = _keep_aside(config)
            logger.warning("%s: the previous run of this name and phase (%s) is kept in %s; "
                           "--exist-ok replaces it instead", config.run_dir, found.describe(), kept)
        else:  # no checkpoints: a crashed start's leftovers at most
            _clear(config.run_dir)
    weights.mkdir(parents=True, exist_ok=True)
    # A process killed between writing and renaming leaves its hidden temp file (atomic.py): the
    # real file is intact, the temp file is garbage the size of a checkpoint.
    for folder in (weights, config.run_dir):
        for leftover in folder.glob(".*.tmp"):
            logger.info("removing %s, left by an interrupted write", leftover)
            leftover.unlink(missing_ok=True)


def _keep_aside(config: TrainConfig) -> Path:
    """Move the run folder's contents (but its lock and earlier kept runs) into
    ``previous/<UTC time>/`` and point its registry entry there; returns that folder."""
    from smartcash.model.training.registry import ModelRegistry

    run_dir = config.run_dir
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    target = run_dir / PREVIOUS_RUNS / stamp
    suffix = 1
    while target.exists():  # two fresh runs within a second
        suffix += 1
        target = run_dir / PREVIOUS_RUNS / f"{stamp}-{suffix}"
    target.mkdir(parents=True)
    for path in sorted(run_dir.iterdir()):
        if path.name not in NOT_MOVED:
            path.rename(target / path.name)
    ModelRegistry(Path(config.project) / "registry.json").moved(f"{config.name}/phase{config.phase}", run_dir, target)
    return target


def _clear(run_dir: Path) -> None:
    """Delete the previous run's checkpoints, and the outputs this run would mix with instead of
    overwriting (TensorBoard events, pictures); anything else in the folder stays."""
    for path in (run_dir / "weights" / "last.pt", run_dir / "weights" / "best.pt"):
        path.unlink(missing_ok=True)
    for pattern in STALE_OUTPUTS:
        for path in run_dir.glob(pattern):
            path.unlink()
