"""Model registry: lookup by id, best(metric), atomic locked updates, CLI."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from smartcash.model.training.registry import ModelRegistry, RegistryEntry, RegistryError
from smartcash.registry import main


def _entry(run_id: str, phase: int, map50: float, loss: float) -> RegistryEntry:
    return RegistryEntry(id=run_id, phase=phase, data="d.yaml", model="yolov5n", weights=f"{run_id}/best.pt",
                         metrics={"metrics/mAP50": map50, "val/box_loss": loss, "fitness": map50 / 2})


def test_add_get_best(tmp_path) -> None:
    registry = ModelRegistry(tmp_path / "registry.json")
    registry.add(_entry("a/phase1", 1, 0.30, 0.5))
    registry.add(_entry("a/phase2", 2, 0.50, 0.7))
    registry.add(_entry("b/phase1", 1, 0.40, 0.2))
    assert registry.get("a/phase2").metrics["metrics/mAP50"] == 0.50
    assert registry.best("mAP50").id == "a/phase2"  # short name
    assert registry.best("metrics/mAP50", phase=1).id == "b/phase1"
    assert registry.best("val/box_loss").id == "b/phase1"  # losses: lower is better
    assert registry.best("metrics/recall") is None
    registry.add(_entry("a/phase2", 2, 0.10, 0.7))  # same id: replaced
    assert len(registry.entries()) == 3 and registry.best("mAP50").id == "b/phase1"
    data = json.loads((tmp_path / "registry.json").read_text())
    assert set(data["runs"]) == {"a/phase1", "a/phase2", "b/phase1"}  # a dict keyed by id
    with pytest.raises(RegistryError, match="no run 'zzz'"):
        registry.get("zzz")


def test_corrupt_file_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "registry.json").write_text("{not json")
    with pytest.raises(RegistryError, match=r"registry.json:1: invalid JSON"):
        ModelRegistry(tmp_path / "registry.json").entries()


def _add_many(path: str, prefix: str) -> None:
    registry = ModelRegistry(path)
    for index in range(10):
        registry.add(_entry(f"{prefix}{index}/phase1", 1, index / 10, 1.0))


def test_concurrent_writers_lose_nothing(tmp_path) -> None:
    path = str(tmp_path / "registry.json")
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_add_many, args=(path, prefix)) for prefix in ("x", "y")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert all(worker.exitcode == 0 for worker in workers)
    assert len(ModelRegistry(path).entries()) == 20


def test_cli(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default runs/registry.json, absent: no run has finished yet
    assert main(["list"]) == 0
    assert "no runs yet" in capsys.readouterr().out
    assert main(["best"]) == 1
    assert "no runs yet" in capsys.readouterr().err
    path = tmp_path / "registry.json"
    registry = ModelRegistry(path)
    registry.add(_entry("a/phase1", 1, 0.3, 0.5))
    registry.add(_entry("b/phase1", 1, 0.6, 0.5))
    assert main(["--registry", str(path), "list"]) == 0
    out = capsys.readouterr().out
    assert "a/phase1" in out and "b/phase1" in out
    assert main(["--registry", str(path), "best", "--metric", "mAP50"]) == 0
    assert capsys.readouterr().out.startswith("b/phase1  mAP50=0.6000")
    assert main(["--registry", str(path), "best", "--metric", "nothing"]) == 2  # bad usage: names what there is
    error = capsys.readouterr().err
    assert error.startswith("error: --metric nothing: no run in") and "fitness, metrics/mAP50, val/box_loss" in error


@pytest.mark.parametrize("command", [["list"], ["best"], ["show", "a/phase1"]])
def test_cli_mistyped_registry_is_an_error(tmp_path, capsys, command) -> None:
    typo = tmp_path / "typo" / "registry.json"
    assert main(["--registry", str(typo), *command]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: --registry {typo}: no such file") and "no runs yet" not in error


def _hand_written(path, metrics_by_id: dict) -> None:
    """A registry.json as a person might edit it: raw JSON text, NaN / Infinity / true included."""
    runs = {run_id: {"id": run_id, "phase": 1, "data": "d.yaml", "model": "yolov5n", "weights": f"{run_id}.pt",
                     "metrics": metrics, "date": f"2024-01-0{index + 1}"}
            for index, (run_id, metrics) in enumerate(metrics_by_id.items())}
    path.write_text(json.dumps({"version": 1, "runs": runs}))  # json writes NaN and Infinity as bare words


def test_best_skips_values_that_are_no_finite_number(tmp_path, capsys, caplog) -> None:
    path = tmp_path / "registry.json"
    _hand_written(path, {"nan/phase1": {"fitness": float("nan"), "val/box_loss": float("nan")},
                         "inf/phase1": {"fitness": float("inf"), "val/box_loss": float("-inf")},
                         "bool/phase1": {"fitness": True},
                         "good/phase1": {"fitness": 0.25, "val/box_loss": 0.5},
                         "low/phase1": {"fitness": 0.125, "val/box_loss": 0.75}})
    registry = ModelRegistry(path)
    assert "NaN" in path.read_text() and "Infinity" in path.read_text()
    assert registry.best("fitness").id == "good/phase1"  # not the NaN first, nor Infinity, nor true
    assert registry.best("val/box_loss").id == "good/phase1"  # lower is better, -Infinity is no loss
    assert "bool/phase1" not in {entry.id for entry in registry.entries()}
    assert "'bool/phase1' (metric 'fitness' is True, not a number)" in caplog.text
    assert main(["--registry", str(path), "best"]) == 0
    assert capsys.readouterr().out.startswith("good/phase1  fitness=0.2500")
    _hand_written(path, {"nan/phase1": {"fitness": float("nan")}})
    assert registry.best("fitness") is None
    assert main(["--registry", str(path), "best"]) == 1
    assert "no run has a finite value of metric 'fitness'" in capsys.readouterr().err


def test_entry_metric_kinds() -> None:
    base = {"id": "a", "phase": 1, "data": "d", "model": "m", "weights": "w"}
    assert RegistryEntry.from_dict({**base, "metrics": {"x": 1, "y": 0.5, "z": None}}).metrics["x"] == 1
    for bad in (True, False, "0.5", [1], 10 ** 400):
        with pytest.raises(RegistryError, match="not a number"):
            RegistryEntry.from_dict({**base, "metrics": {"x": bad}})
