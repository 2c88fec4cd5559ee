"""Experiment trackers (TensorBoard, MLflow) behind one small interface (``base.Tracker``).

A new tracker is one module with a ``Tracker`` subclass, registered in ``TRACKERS`` with the config
key that turns it on (a ``TrainConfig`` bool and its ``--flag``).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from smartcash.model.training.trackers.base import (FAILED, FINISHED, KILLED, RunInfo, Tracker,
                                                    TrackerGroup)

#: config key -> (module, class, the package it needs, install hint).
TRACKERS: dict[str, tuple[str, str, str, str]] = {
    "tensorboard": ("smartcash.model.training.trackers.tensorboard_tracker", "TensorBoardTracker", "tensorboard",
                    'pip install "smartcash[tensorboard]"'),
    "mlflow": ("smartcash.model.training.trackers.mlflow_tracker", "MlflowTracker", "mlflow",
               'pip install "smartcash[mlflow]"'),
}

__all__ = ["FAILED", "FINISHED", "KILLED", "TRACKERS", "RunInfo", "Tracker", "TrackerGroup", "build_trackers",
           "missing_package"]


def missing_package(key: str) -> str | None:
    """The install hint when tracker ``key``'s package is not importable, else None (cheap: no import)."""
    _, _, package, hint = TRACKERS[key]
    return None if importlib.util.find_spec(package) is not None else hint


def build_trackers(config: Any) -> list[Tracker]:
    """The trackers ``config`` turns on (``config.tensorboard``, ``config.mlflow`` ...), not started yet."""
    trackers: list[Tracker] = []
    for key, (module_name, class_name, _, _) in TRACKERS.items():
        if getattr(config, key, False):
            tracker_class = getattr(importlib.import_module(module_name), class_name)
            trackers.append(tracker_class.from_config(config))
    return trackers
