"""The tracker interface (what an experiment tracker is told, and when) and the group that fans the
trainer's calls out to the trackers on the background thread, isolating their failures.

A tracker is one small class: TensorBoard and MLflow are one file each, and so would be W&B. The
trainer never hands a tracker itself: it calls the group from its hooks with plain data (the
saved config, a ``results.csv`` row, the learning rates of the epoch's iterations, pictures).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from smartcash.model.training.background import BackgroundJobs

logger = logging.getLogger(__name__)

#: How a run ended, in MLflow's words (a tracker maps them onto its own).
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"


@dataclass(frozen=True)
class RunInfo:
    """What a tracker learns when a run starts."""

    run_dir: Path  # PROJECT/train/NAME/phaseN
    run_name: str  # NAME/phaseN
    params: dict[str, Any]  # the saved config: args.yaml's content (nested where args.yaml nests)
    resumed: bool
    start_epoch: int


class Tracker(ABC):
    """One experiment tracker. Every method runs on the background thread, one call at a time.

    A method may raise: the group warns once and stops calling this tracker for the rest of the run.
    """

    name: ClassVar[str]
    #: True when ``log_images`` does something: the pictures are only rendered if some tracker wants them.
    wants_images: ClassVar[bool] = False

    @classmethod
    def from_config(cls, config: Any) -> Tracker:
        """The tracker for a run of ``config`` (a ``TrainConfig``); called on the training thread, so cheap."""
        return cls()

    @abstractmethod
    def start(self, run: RunInfo) -> None:
        """The run begins (or resumes): open the writer or the remote run, record the parameters."""

    @abstractmethod
    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """One ``results.csv`` row: every numeric column but ``epoch``, which is the step."""

    def log_learning_rates(self, first_iteration: int, group_names: Sequence[str], lrs: np.ndarray) -> None:
        """The LR of every optimiser group at each iteration of an epoch.

        Args:
            first_iteration: global iteration of ``lrs[0]``.
            group_names: the optimiser's parameter groups (``head/weight`` ...), one per column.
            lrs: (iterations, groups) float64.
        """

    def log_images(self, epoch: int, images: Mapping[str, np.ndarray]) -> None:
        """Pictures of a validation (PR curves, confusion matrix, predictions): (H, W, 3) uint8 RGB."""

    @abstractmethod
    def finish(self, artifacts: Sequence[Path], status: str) -> None:
        """The run ended with ``status`` (FINISHED, FAILED, KILLED); ``artifacts`` are its files."""


def numeric_columns(row: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a results row, ``epoch`` left out (it is the step)."""
    return {key: float(value) for key, value in row.items()
            if key != "epoch" and isinstance(value, (int, float, np.number)) and not isinstance(value, bool)}


class TrackerGroup:
    """The trainer's one handle on its trackers. Each call returns at once: the work is queued on
    ``jobs`` and runs there. A tracker that raises is warned about once and dropped.

    Args:
        trackers: the run's trackers (may be empty: then nothing is queued).
        jobs: the run's background thread (None only without trackers).
    """

    def __init__(self, trackers: Sequence[Tracker], jobs: BackgroundJobs | None) -> None:
        if trackers and jobs is None:
            raise ValueError("trackers need a BackgroundJobs thread")
        self._active: list[Tracker] = list(trackers)
        self._jobs = jobs

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(tracker.name for tracker in self._active)

    @property
    def wants_images(self) -> bool:
        return any(tracker.wants_images for tracker in self._active)

    def __bool__(self) -> bool:
        return bool(self._active)

    def start(self, run: RunInfo) -> None:
        self._submit("start", run)

    def log_epoch(self, epoch: int, row: Mapping[str, Any]) -> None:
        self._submit("log_epoch", epoch, numeric_columns(row))

    def log_learning_rates(self, first_iteration: int, group_names: Sequence[str], lrs: np.ndarray) -> None:
        if len(lrs):
            self._submit("log_learning_rates", first_iteration, tuple(group_names), lrs)

    def log_images(self, epoch: int, render: Callable[[], Mapping[str, np.ndarray]]) -> None:
        """``render()`` makes the pictures on the background thread, once, for every tracker that wants them."""
        if not self.wants_images or self._jobs is None:
            return

        def job() -> None:
            wanting = [tracker for tracker in self._active if tracker.wants_images]
            if wanting:
                images = render()
                self._call(wanting, "log_images", epoch, images)

        self._jobs.submit(job, "tracker pictures")

    def finish(self, artifacts: Callable[[], Sequence[Path]], status: str) -> None:
        """``artifacts()`` lists the run's files on the background thread, after the pictures queued before."""
        if self._active:
            self._jobs.submit(lambda: self._call(list(self._active), "finish", tuple(artifacts()), status),
                              "trackers.finish")

    def _submit(self, method: str, *args: Any) -> None:
        if self._active:
            self._jobs.submit(lambda: self._call(list(self._active), method, *args), f"trackers.{method}")

    def _call(self, trackers: Sequence[Tracker], method: str, *args: Any) -> None:
        for tracker in trackers:
            if tracker not in self._active:
                continue
            try:
                getattr(tracker, method)(*args)
            except Exception as error:  # noqa: BLE001 - any tracker failure: warn once, drop it, train on
                self._active.remove(tracker)
                logger.warning("%s tracker failed in %s (%s: %s); it is off for the rest of this run, "
                               "training goes on", tracker.name, method, type(error).__name__,
                               str(error).strip().splitlines()[0] if str(error).strip() else "")
