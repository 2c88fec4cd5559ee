"""The run folder: created, cleared of a previous run's outputs of the same name and phase (unless
resuming), and of temp files an interrupted write left."""

from __future__ import annotations

import logging

from smartcash.config import TrainConfig

logger = logging.getLogger(__name__)

#: Outputs of an earlier run of the same name and phase that a fresh run removes (not resume).
STALE_OUTPUTS = ("events.out.tfevents.*", "labels.png", "train_batch*.jpg", "val_batch0_*.jpg")

def prepare_run_dir(config: TrainConfig) -> None:
    """Create the run folder; a fresh run removes the previous run's weights of the same name/phase
    (so that a stale best.pt can never be picked up by phase 2)."""
    weights = config.run_dir / "weights"
    if not config.resume:
        stale = [path for path in (weights / "last.pt", weights / "best.pt") if path.exists()]
        if stale:
            logger.warning("%s: replacing the previous run of this name and phase", config.run_dir)
            for path in stale:
                path.unlink()
        # The previous run's TensorBoard events and pictures would mix with this run's.
        for pattern in STALE_OUTPUTS:
            for path in config.run_dir.glob(pattern):
                path.unlink()
    weights.mkdir(parents=True, exist_ok=True)
    # A process killed between writing and renaming leaves its hidden temp file (atomic.py): the
    # real file is intact, the temp file is garbage the size of a checkpoint.
    for folder in (weights, config.run_dir):
        for leftover in folder.glob(".*.tmp"):
            logger.info("removing %s, left by an interrupted write", leftover)
            leftover.unlink(missing_ok=True)
