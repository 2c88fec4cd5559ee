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


def test_cli(tmp_path, capsys) -> None:
    path = tmp_path / "registry.json"
    assert main(["--registry", str(path), "list"]) == 0
    assert "no runs yet" in capsys.readouterr().out
    registry = ModelRegistry(path)
    registry.add(_entry("a/phase1", 1, 0.3, 0.5))
    registry.add(_entry("b/phase1", 1, 0.6, 0.5))
    assert main(["--registry", str(path), "list"]) == 0
    out = capsys.readouterr().out
    assert "a/phase1" in out and "b/phase1" in out
    assert main(["--registry", str(path), "best", "--metric", "mAP50"]) == 0
    assert capsys.readouterr().out.startswith("b/phase1  mAP50=0.6000")
    assert main(["--registry", str(path), "best", "--metric", "nothing"]) == 1
