"""TensorBoard: event files in the run folder, through ``torch.utils.tensorboard``.

Scalars: every ``results.csv`` column against the epoch, the LR of every optimiser group against
the iteration (``lr-iteration/<group>``). Images, at each new best epoch: the PR curves, the
confusion matrix and a grid of validation predictions. ``tensorboard --logdir runs/train`` shows
every run and phase side by side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smartcash.model.training.trackers.base import RunInfo, Tracker

#: Install hint when the package is missing.
INSTALL_HINT = 'pip install "smartcash[tensorboard]" (or: pip install tensorboard)'
#: Tag prefix of the per-iteration learning rates (results.csv's lr/ columns are per epoch).
LR_PREFIX = "lr-iteration"


class TensorBoardTracker(Tracker):
    """Writes ``events.out.tfevents.*`` into the run folder."""

    name = "tensorboard"
    wants_images = True

    def __init__(self) -> None:
        self.writer: Any = None

    def start(self, run: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # The writer has its own queue and thread for the file: add_* only builds the records.
        self.writer = SummaryWriter(log_dir=str(run.run_dir), flush_secs=30)
        self.writer.add_text("config", _config_table(run.params), run.start_epoch)

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, epoch)

    def log_learning_rates(self, first_iteration: int, group_names: Sequence[str], lrs: np.ndarray) -> None:
        for offset, row in enumerate(lrs.tolist()):
            for name, value in zip(group_names, row):
                self.writer.add_scalar(f"{LR_PREFIX}/{name}", value, first_iteration + offset)

    def log_images(self, epoch: int, images: Mapping[str, np.ndarray]) -> None:
        for tag, image in images.items():
            self.writer.add_image(tag, image, epoch, dataformats="HWC")

    def finish(self, artifacts: Sequence[Path], status: str) -> None:
        if self.writer is not None:
            self.writer.close()  # flushes the queue to disk


def _config_table(params: Mapping[str, Any]) -> str:
    """The saved config as a Markdown table (TensorBoard's text tab renders Markdown)."""
    lines = ["| key | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in params.items()]
    return "\n".join(lines)
