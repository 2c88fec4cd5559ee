"""MLflow: one MLflow run per training phase, through ``MlflowClient`` (no global active run).

Params: the saved config (``args.yaml``, nested keys joined with dots). Metrics: every
``results.csv`` column, step = epoch. Artifacts at the end: ``weights/best.pt``, ``results.csv``,
``args.yaml`` and the pictures. Tracking URI: ``MLFLOW_TRACKING_URI``, else ``PROJECT/mlruns``
(a local file store); experiment: ``MLFLOW_EXPERIMENT_NAME``, else ``smartcash``. The package
``mlflow-skinny`` is enough (file stores and tracking servers).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smartcash.model.training.trackers.base import RunInfo, Tracker

INSTALL_HINT = 'pip install "smartcash[mlflow]" (or: pip install mlflow-skinny)'
DEFAULT_EXPERIMENT = "smartcash"
#: MLflow caps one log_batch call at 1000 metrics and 100 params.
_MAX_METRICS, _MAX_PARAMS = 1000, 100
#: MLflow's longest parameter value (MAX_PARAM_VAL_LENGTH).
_MAX_PARAM_LENGTH = 6000


def tracking_uri(project: str | os.PathLike[str]) -> str:
    """``MLFLOW_TRACKING_URI``, else a file store in ``PROJECT/mlruns`` (so a run writes only under
    its project folder)."""
    configured = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return configured or (Path(project).resolve() / "mlruns").as_uri()


def _is_local(uri: str) -> bool:
    return uri.startswith("file:") or "://" not in uri


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings -> ``{"a.b": "value"}``, values as MLflow stores them (strings)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:_MAX_PARAM_LENGTH]
    return flat


class MlflowTracker(Tracker):
    """Logs to the MLflow tracking store at ``uri``.

    Args:
        uri: tracking URI (``tracking_uri(project)``).
        experiment: experiment name (created when missing).
    """

    name = "mlflow"

    def __init__(self, uri: str, experiment: str | None = None) -> None:
        self.uri = uri
        self.experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        self.client: Any = None
        self.run_id: str | None = None
        self.run_dir: Path | None = None

    @classmethod
    def from_config(cls, config: Any) -> MlflowTracker:
        return cls(tracking_uri(config.project))

    def start(self, run: RunInfo) -> None:
        if _is_local(self.uri):
            # MLflow 3 keeps its file store behind this switch; the skinny package has no SQL store.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        experiment_id = self._experiment_id()
        tags = {"smartcash.run_dir": str(run.run_dir.resolve()), "smartcash.resumed": str(run.resumed),
                "smartcash.start_epoch": str(run.start_epoch)}
        self.run_id = self.client.create_run(experiment_id, run_name=run.run_name, tags=tags).info.run_id
        self.run_dir = run.run_dir
        params = [Param(key, value) for key, value in flatten(run.params).items()]
        for start in range(0, len(params), _MAX_PARAMS):
            self.client.log_batch(self.run_id, params=params[start:start + _MAX_PARAMS])

    def _experiment_id(self) -> str:
        """The experiment's id, made when missing (by this run, or by one starting at the same time)."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.experiment)
        except MlflowException:  # another run (phase, process) created it meanwhile
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(key, value, now, epoch) for key, value in metrics.items()]
        for start in range(0, len(rows), _MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=rows[start:start + _MAX_METRICS])

    def finish(self, artifacts: Sequence[Path], status: str) -> None:
        if self.run_id is None:
            return
        try:
            for path in artifacts:
                self.client.log_artifact(self.run_id, str(path), artifact_path=self._folder_of(path))
        finally:  # the run is closed with its status even when an upload failed
            self.client.set_terminated(self.run_id, status)

    def _folder_of(self, path: Path) -> str | None:
        """The artifact folder that mirrors the run folder (``weights/best.pt`` stays under ``weights``)."""
        if self.run_dir is None or not path.is_relative_to(self.run_dir) or path.parent == self.run_dir:
            return None
        return path.parent.relative_to(self.run_dir).as_posix()
