"""No host sync per batch in the training step or the validation loop (the GPU path).

``HostReads`` (tests/host_reads.py) counts, per line of SmartCash code, the calls that read a
tensor on the host. With more batches than the report interval, a line may read at most once
per interval (plus the end): a read added to the per-batch path fails here on the CPU, where
no ``torch.cuda.set_sync_debug_mode`` exists.
"""

from __future__ import annotations

import math

import pytest
import torch

from host_reads import HostReads
from smartcash.data.dataset_config import load_dataset_config
from smartcash.data.loader import build_dataloader
from smartcash.model.build import build_model
from smartcash.model.loss import LossOutput
from smartcash.model.training import trainer as trainer_module
from smartcash.model.training.core.validation_executor import ValidationExecutor
from smartcash.model.training.trainer import Trainer
from tiny_training import tiny_dataset, train_tiny


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> str:
    return tiny_dataset(tmp_path_factory.mktemp("synthetic"))


def test_guard_sees_a_read_on_every_batch() -> None:
    with HostReads() as reads:
        for value in torch.arange(5):
            float(value)  # a read per "batch", from a line of this test (not SmartCash's)
    assert reads.most() == ("", 0)  # only SmartCash's lines are counted
    from smartcash.model.training.step import NonFiniteWatch

    watch = NonFiniteWatch(torch.device("cpu"))
    with HostReads() as reads:
        for _ in range(3):
            watch.check(0, _losses(1.0), 1)
    line, count = reads.most()
    assert count == 3 and "step.py" in line  # and SmartCash's are


def _losses(value: float):
    tensor = torch.tensor(value)
    return LossOutput(tensor, tensor, tensor, tensor)


def test_training_epoch_reads_the_host_once_per_interval(tmp_path, data_yaml, monkeypatch) -> None:
    interval = 4
    # What the loop does on an accelerator (on the CPU it checks every loss before its backward).
    monkeypatch.setattr(trainer_module, "host_read_interval", lambda device: interval)
    monkeypatch.setattr(trainer_module, "HOST_READ_INTERVAL", interval)
    counted = []
    original = Trainer.train_one_epoch

    def guarded(self, epoch):
        with HostReads() as reads:
            result = original(self, epoch)
        counted.append((len(self.train_loader), reads.most()))
        return result

    monkeypatch.setattr(Trainer, "train_one_epoch", guarded)
    assert train_tiny(tmp_path, data_yaml, "--epochs", "1", batch=1) == 0
    [(batches, (line, count))] = counted
    assert batches == 8
    assert count <= math.ceil(batches / interval) + 1, f"{line} read the host {count} times in {batches} batches"


def test_non_finite_loss_is_caught_at_the_next_read_with_its_batch(tmp_path, data_yaml, monkeypatch, capsys) -> None:
    monkeypatch.setattr(trainer_module, "host_read_interval", lambda device: 4)
    monkeypatch.setattr(trainer_module, "HOST_READ_INTERVAL", 4)
    original = trainer_module.YoloLoss.__call__
    calls = {"n": 0}

    def poisoned(self, raw, targets):
        out = original(self, raw, targets)
        calls["n"] += 1
        return LossOutput(out.total * float("nan"), out.box, out.obj, out.cls) if calls["n"] == 2 else out

    monkeypatch.setattr(trainer_module.YoloLoss, "__call__", poisoned)
    assert train_tiny(tmp_path, data_yaml, "--epochs", "1", "--name", "nan", batch=1) == 1
    assert "non-finite loss at epoch 0, batch 1" in capsys.readouterr().err
    assert not (tmp_path / "runs/train/nan/phase1/weights/last.pt").exists()  # nothing bad saved


def test_validation_loop_reads_the_host_once_per_interval(data_yaml) -> None:
    torch.manual_seed(0)
    model = build_model("yolov5n", 17).eval()
    loader = build_dataloader(load_dataset_config(data_yaml), "val", 64, 1, workers=0)
    with HostReads() as reads:
        result = ValidationExecutor(show_progress=False, progress_interval=10).run(
            model, loader, "cpu", progress_callback=lambda *args: None)
    assert result.metrics.num_batches == 4
    line, count = reads.most()
    assert count <= 2, f"{line} read the host {count} times in 4 batches"


def test_an_interrupt_after_an_unread_non_finite_loss_keeps_last_pt(tmp_path, data_yaml, monkeypatch) -> None:
    """On an accelerator a NaN is read every few batches: Ctrl-C in between must not save its weights."""
    monkeypatch.setattr(trainer_module, "host_read_interval", lambda device: 100)
    monkeypatch.setattr(trainer_module, "HOST_READ_INTERVAL", 100)
    original = trainer_module.optimization_step

    def poisoned_then_interrupted(model, images, *args, where, **kwargs):
        if where == (1, 1):  # epoch 1, batch 1: NaN pixels, a NaN loss nobody reads yet ...
            images = images * float("nan")
        if where == (1, 3):  # ... then Ctrl-C two batches later
            raise KeyboardInterrupt
        return original(model, images, *args, where=where, **kwargs)

    monkeypatch.setattr(trainer_module, "optimization_step", poisoned_then_interrupted)
    assert train_tiny(tmp_path, data_yaml, "--epochs", "2", "--name", "cut", batch=1) == 130
    last = torch.load(tmp_path / "runs/train/cut/phase1/weights/last.pt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 0 and not last["interrupted"]  # epoch 0's good checkpoint, untouched
    assert all(torch.isfinite(value).all() for value in last["model"].values() if value.is_floating_point())
