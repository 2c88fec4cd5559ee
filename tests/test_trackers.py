"""Trackers: the group isolates failures and never makes the caller wait; a real 1-epoch training
with TensorBoard and MLflow on leaves an event file (read back with tensorboard's own reader) and an
MLflow run (read back with MLflow's own client) whose numbers are results.csv's; a tracking server
that is down costs one warning and nothing else."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

import pytest
import yaml

from smartcash.config import ConfigError, build_config
from smartcash.model.training.background import BackgroundJobs
from smartcash.model.training.records import _format, read_results
from smartcash.model.training.trackers import FINISHED, RunInfo, Tracker, TrackerGroup
from smartcash.model.training.trackers.mlflow_tracker import flatten
from tiny_training import tiny_dataset, train_tiny

TRACKER_LOGGER = "smartcash.model.training.trackers.base"


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> str:
    return tiny_dataset(tmp_path_factory.mktemp("synthetic"))


def _train(tmp_path: Path, data_yaml: str, *flags: str, plots: bool = True) -> int:
    return train_tiny(tmp_path, data_yaml, *flags, batch=2, plots=plots, precise_bn_images=8)


class Recorder(Tracker):
    """Remembers every call; raises in ``fail_in`` (every time it is called there)."""

    name = "recorder"
    wants_images = True

    def __init__(self, fail_in: str = "") -> None:
        self.calls: list[str] = []
        self.fail_in = fail_in

    def _record(self, method: str) -> None:
        self.calls.append(method)
        if method == self.fail_in:
            raise ConnectionError("server down\nsecond line")

    def start(self, run):
        self._record("start")

    def log_epoch(self, epoch, metrics):
        self._record("log_epoch")

    def log_images(self, epoch, images):
        self._record("log_images")

    def finish(self, artifacts, status):
        self._record("finish")


def _run_info(tmp_path: Path) -> RunInfo:
    return RunInfo(tmp_path, "exp/phase1", {"epochs": 1}, False, 0)


def test_failing_tracker_is_warned_about_once_and_dropped(tmp_path, caplog) -> None:
    jobs = BackgroundJobs()
    failing, healthy = Recorder(fail_in="log_epoch"), Recorder()
    group = TrackerGroup([failing, healthy], jobs)
    rendered = []
    with caplog.at_level(logging.WARNING, logger=TRACKER_LOGGER):
        group.start(_run_info(tmp_path))
        for epoch in range(3):
            group.log_epoch(epoch, {"epoch": epoch, "fitness": 0.5})
            group.log_images(epoch, lambda: rendered.append(1) or {"x": None})
        group.finish(lambda: [], FINISHED)
        assert jobs.close(10)
    assert failing.calls == ["start", "log_epoch"]  # nothing after its failure
    assert healthy.calls == ["start"] + ["log_epoch", "log_images"] * 3 + ["finish"]
    assert len(rendered) == 3  # pictures still made for the tracker that is left
    warnings = [record.getMessage() for record in caplog.records if record.name == TRACKER_LOGGER]
    assert len(warnings) == 1
    assert "recorder tracker failed in log_epoch (ConnectionError: server down)" in warnings[0]


def test_tracker_calls_return_while_the_tracker_is_busy(tmp_path) -> None:
    entered, gate = threading.Event(), threading.Event()
    done: list[tuple[int, bool]] = []

    class Slow(Recorder):
        def log_epoch(self, epoch, metrics):
            entered.set()
            done.append((epoch, gate.wait(20)))  # (epoch, released before the timeout)

    jobs = BackgroundJobs()
    group = TrackerGroup([Slow()], jobs)
    group.log_epoch(0, {"fitness": 1.0})
    assert entered.wait(20)  # the tracker is now stuck in its first call
    group.log_epoch(1, {"fitness": 2.0})  # a caller that waited for it would only get here after 20 s
    assert done == []
    gate.set()
    assert jobs.close(20)
    assert done == [(0, True), (1, True)]


def test_tracker_flag_needs_its_package(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"mlflow.*not installed.*pip install"):
        build_config(["--device", "cpu", "--mlflow"])
    assert build_config(["--device", "cpu", "--no-mlflow"]).mlflow is False


def _event_scalars(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(run_dir.glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    events = EventAccumulator(str(files[0]), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    scalars = {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    return scalars, events.Tags()["images"]


def test_one_epoch_with_tensorboard_and_mlflow(tmp_path, data_yaml, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "store").as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "trackers-test")
    assert _train(tmp_path, data_yaml, "--epochs", "1", "--name", "both", "--tensorboard", "--mlflow") == 0
    run_dir = tmp_path / "runs/train/both/phase1"
    rows = read_results(run_dir / "results.csv")
    columns = [column for column in rows[0] if column != "epoch"]

    # TensorBoard: every column at step = epoch, equal to the CSV (float32 events, 6-digit CSV).
    scalars, images = _event_scalars(run_dir)
    for column in columns:
        assert [step for step, _ in scalars[column]] == [int(row["epoch"]) for row in rows], column
        for (_, value), row in zip(scalars[column], rows):
            assert value == pytest.approx(float(row[column]), rel=6e-6, abs=1e-12), column  # CSV: 6 digits
    # The LR of each group at every iteration (8 images, batch 2: 4), the last one = results.csv's lr/head.
    lr_tags = [tag for tag in scalars if tag.startswith("lr-iteration/")]
    assert "lr-iteration/head/weight" in lr_tags and all(len(scalars[tag]) == 4 for tag in lr_tags)
    assert [step for step, _ in scalars["lr-iteration/head/weight"]] == [0, 1, 2, 3]
    assert scalars["lr-iteration/head/weight"][-1][1] == pytest.approx(float(rows[-1]["lr/head"]), rel=1e-5)
    assert set(images) == {"validation/PR_curve", "validation/PR_curve_main", "validation/confusion_matrix",
                           "validation/predictions"}

    # MLflow: the same numbers (float64: the very strings of the CSV), params = args.yaml, artifacts.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tmp_path / "store").as_uri())
    experiment = client.get_experiment_by_name("trackers-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "both/phase1"
    for column in columns:
        history = client.get_metric_history(run.info.run_id, column)
        assert [(metric.step, _format(metric.value)) for metric in history] == \
            [(int(row["epoch"]), row[column]) for row in rows], column
    saved = yaml.safe_load((run_dir / "args.yaml").read_text())
    assert run.data.params == flatten(saved) and run.data.params["recipe_used.name"] == "scratch"
    top = {artifact.path for artifact in client.list_artifacts(run.info.run_id)}
    assert {"results.csv", "args.yaml", "labels.png", "results.png", "PR_curve.png", "confusion_matrix.png",
            "train_batch0.jpg", "val_batch0_pred.jpg", "weights"} <= top
    best = client.download_artifacts(run.info.run_id, "weights/best.pt", str(tmp_path / "download"))
    assert Path(best).read_bytes() == (run_dir / "weights/best.pt").read_bytes()


def _closed_port() -> int:
    with socket.socket() as probe:  # bound then closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_tracking_server_down_costs_one_warning(tmp_path, data_yaml, monkeypatch, caplog) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with caplog.at_level(logging.WARNING):
        assert _train(tmp_path, data_yaml, "--epochs", "2", "--name", "down", "--mlflow", plots=False) == 0
    assert len(read_results(tmp_path / "runs/train/down/phase1/results.csv")) == 2
    warnings = [record.getMessage() for record in caplog.records if record.name == TRACKER_LOGGER]
    assert len(warnings) == 1 and warnings[0].startswith("mlflow tracker failed in start")


def test_resume_of_a_checkpoint_older_than_the_tracker_keys(tmp_path) -> None:
    from smartcash.model.training.checkpoint import save_checkpoint
    from smartcash.train import resume_config

    cli = build_config(["--device", "cpu", "--project", str(tmp_path), "--name", "old", "--resume", "--mlflow"])
    saved = {key: value for key, value in cli.to_dict().items() if key not in ("tensorboard", "mlflow")}
    save_checkpoint(cli.run_dir / "weights" / "last.pt", {"model": {}, "config": {**saved, "epochs": 7}})
    resumed = resume_config(cli, {"device", "project", "name", "resume", "mlflow"})
    assert (resumed.epochs, resumed.tensorboard, resumed.mlflow) == (7, False, True)  # default; the flag given
