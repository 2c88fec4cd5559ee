"""What a run shows besides ``results.csv`` and its checkpoints: the pictures (``pictures.py``) and
the experiment trackers (``trackers/``), all made on one background thread.

The trainer calls ``RunReports`` from its hooks with plain data (a batch, a results row, a
validation result); none of these calls waits for drawing, disk or network. Per batch it only
keeps a reference to the first epoch's first batches and appends the optimiser's learning rates to
a list (no device work), so a run with reports on trains as fast as one without.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smartcash.model.training import pictures
from smartcash.model.training.background import BackgroundJobs
from smartcash.model.training.trackers import RunInfo, Tracker, TrackerGroup
from smartcash.taxonomy import Taxonomy

logger = logging.getLogger(__name__)

#: At the end of a run, how long to wait for the trackers (a remote server) before leaving them.
CLOSE_TIMEOUT_S = 120.0
#: Files of a run folder that trackers keep as artifacts (weights/best.pt besides).
ARTIFACT_PATTERNS = ("results.csv", "args.yaml", "*.png", "*.jpg")


def run_artifacts(run_dir: Path) -> list[Path]:
    """The files of a finished (or stopped) run that a tracker keeps: ``weights/best.pt``,
    ``results.csv``, ``args.yaml`` and the plots and pictures, those that exist."""
    found = [run_dir / "weights" / "best.pt"] if (run_dir / "weights" / "best.pt").is_file() else []
    for pattern in ARTIFACT_PATTERNS:
        found += sorted(path for path in run_dir.glob(pattern) if path.is_file())
    return found


class RunReports:
    """Pictures and trackers of one run (rank 0).

    Args:
        run_dir: the run folder.
        taxonomy: class names and the fine -> main map (colours).
        trackers: the trackers this run logs to.
        pictures: draw ``labels.png`` and the batch pictures (``config.plots``).
    """

    def __init__(self, run_dir: Path, taxonomy: Taxonomy | None, trackers: Sequence[Tracker] = (),
                 pictures: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.taxonomy = taxonomy
        self.pictures = pictures
        self.jobs = BackgroundJobs() if (trackers or pictures) else None
        self.trackers = TrackerGroup(trackers, self.jobs) if self.jobs is not None else TrackerGroup((), None)
        self._lrs: list[list[float]] = []  # (iterations, groups) of the epoch so far
        self._first_iteration = 0
        self._group_names: tuple[str, ...] = ()
        self._started = self._ended = False

    @classmethod
    def off(cls) -> RunReports:
        """No pictures, no trackers (the other DDP ranks, and a trainer before ``before_train``)."""
        return cls(Path("."), None)

    @property
    def wants_validation_sample(self) -> bool:
        """Whether validation should keep its first batch (for pictures or trackers)."""
        return self.pictures or self.trackers.wants_images

    # ------------------------------------------------------------------ hooks
    def run_started(self, run: RunInfo, labels: Sequence[np.ndarray]) -> None:
        """``labels.png`` and the trackers' start (the saved config as parameters)."""
        if self.pictures:
            self._submit(pictures.write_labels, "labels.png", self.run_dir / "labels.png", list(labels), self.taxonomy)
        self.trackers.start(run)
        self._started = True

    def train_batch(self, epoch: int, index: int, images: torch.Tensor, targets: torch.Tensor,
                    paths: Sequence[str]) -> None:
        """The first epoch's first batches become ``train_batchN.jpg`` (host tensors: no copy here)."""
        if self.pictures and epoch == 0 and index < pictures.TRAIN_BATCHES:
            self._submit(pictures.write_train_batch, f"train_batch{index}.jpg", self.run_dir / f"train_batch{index}.jpg",
                         images, targets, list(paths), self.taxonomy)

    def learning_rates(self, iteration: int, optimizer: torch.optim.Optimizer) -> None:
        """Keep this iteration's LR of every group (Python floats the schedule just set)."""
        if not self.trackers:
            return
        if not self._lrs:
            self._first_iteration = iteration
            self._group_names = tuple(str(group.get("name", index)) for index, group in
                                      enumerate(optimizer.param_groups))
        self._lrs.append([group["lr"] for group in optimizer.param_groups])

    def epoch_done(self, epoch: int, row: dict[str, Any], result: Any, improved: bool) -> None:
        """After an epoch's row is recorded: its LRs and row to the trackers; on a new best, the
        validation pictures (files and trackers)."""
        self._flush_learning_rates()
        self.trackers.log_epoch(epoch, dict(row))
        if not improved or result is None:
            return
        sample = getattr(result, "sample", None)
        if self.pictures and sample is not None:
            self._submit(pictures.write_validation_sample, "val_batch0 pictures", self.run_dir, sample, self.taxonomy)
        self.trackers.log_images(epoch, functools.partial(pictures.tracker_images, result, self.taxonomy))

    def run_ended(self, status: str) -> None:
        """The run ended (FINISHED, FAILED, KILLED): the trackers get its files, then stop."""
        self._flush_learning_rates()
        self.trackers.finish(functools.partial(run_artifacts, self.run_dir), status)
        self._ended = True

    def close(self, status_if_running: str, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """End the trackers' run with ``status_if_running`` unless ``run_ended`` did, then wait for the
        queued pictures and tracker calls (at most ``timeout`` seconds)."""
        if self._started and not self._ended:
            self.run_ended(status_if_running)
        if self.jobs is not None and not self.jobs.close(timeout):
            logger.warning("trackers still busy %.0f s after training ended (a tracking server not answering?): "
                           "leaving them; what they had not sent yet is lost", timeout)

    # ------------------------------------------------------------------ pieces
    def _flush_learning_rates(self) -> None:
        if self._lrs:
            self.trackers.log_learning_rates(self._first_iteration, self._group_names,
                                             np.asarray(self._lrs, dtype=np.float64))
            self._lrs = []

    def _submit(self, function: Any, what: str, *args: Any) -> None:
        self.jobs.submit(functools.partial(function, *args), what)
