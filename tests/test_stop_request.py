"""Ctrl-C / SIGTERM while validating: a stop request first, the interrupt when the block ends.

Checked with real signals sent to this process (``os.kill``), against the interrupt Python raises
without the block, and end to end on the tiny training run: a run stopped in the middle of a
validation keeps its records and ``best.pt`` as they were, one stopped after a finished
validation keeps that epoch.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from smartcash.model.training.records import read_results
from smartcash.model.training.stop_request import deferred_interrupts
from smartcash.model.training.trainer import Trainer, ValidationHeartbeat
from tiny_training import tiny_dataset, train_tiny


def _wait_for(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_first_signal_sets_the_request_and_is_raised_when_the_block_ends() -> None:
    reached_the_end = False
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert _wait_for(stop.is_set)  # no KeyboardInterrupt inside the block
            reached_the_end = True
    assert reached_the_end
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_second_signal_interrupts_at_once() -> None:
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert _wait_for(stop.is_set)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
            pytest.fail("the second Ctrl-C did not interrupt")


def test_sigterm_goes_to_the_handler_that_was_installed(monkeypatch) -> None:
    class Terminated(Exception):
        pass

    def handler(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(Terminated):
            with deferred_interrupts() as stop:
                os.kill(os.getpid(), signal.SIGTERM)
                assert _wait_for(stop.is_set)
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_process_forked_in_the_block_keeps_the_previous_handler() -> None:
    """Loader workers forked during validation: SIGTERM kills them the default way, as before."""
    with deferred_interrupts():
        child = os.fork()
        if child == 0:  # the worker
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            os._exit(0)  # reached only if the signal was swallowed
        _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


def test_no_signal_no_interrupt() -> None:
    with deferred_interrupts() as stop:
        pass
    assert not stop.is_set()


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> str:
    return tiny_dataset(tmp_path_factory.mktemp("synthetic"))


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _ctrl_c_in_validation(monkeypatch, epoch_hit: int, after_validation: bool) -> None:
    """Ctrl-C at epoch ``epoch_hit``: before its validation's first batch, or after its last one."""
    original = Trainer.validate

    def validate(self, epoch, stop_request=None):
        if epoch == epoch_hit and not after_validation:
            os.kill(os.getpid(), signal.SIGINT)
            assert _wait_for(stop_request.is_set)
        result = original(self, epoch, stop_request)
        if epoch == epoch_hit and after_validation:
            os.kill(os.getpid(), signal.SIGINT)
            assert _wait_for(stop_request.is_set)
        return result

    monkeypatch.setattr(Trainer, "validate", validate)


def test_ctrl_c_during_validation_records_nothing_partial(tmp_path, data_yaml, monkeypatch, caplog) -> None:
    _ctrl_c_in_validation(monkeypatch, epoch_hit=1, after_validation=False)
    # batch 1: four validation batches, the stop is seen after the first
    assert train_tiny(tmp_path, data_yaml, "--epochs", "3", "--name", "cut", batch=1) == 130
    weights = tmp_path / "runs/train/cut/phase1/weights"
    assert "epoch 1: validation stopped after 1 images" in caplog.text
    assert [int(row["epoch"]) for row in read_results(weights.parent / "results.csv")] == [0]
    last, best = _load(weights / "last.pt"), _load(weights / "best.pt")
    assert last["interrupted"] and last["epoch"] == 0  # --resume repeats epoch 1
    assert best["epoch"] == 0  # the partial validation never competed for best.pt


def test_ctrl_c_after_a_finished_validation_keeps_the_epoch(tmp_path, data_yaml, monkeypatch) -> None:
    _ctrl_c_in_validation(monkeypatch, epoch_hit=1, after_validation=True)
    assert train_tiny(tmp_path, data_yaml, "--epochs", "3", "--name", "late", batch=1) == 130
    weights = tmp_path / "runs/train/late/phase1/weights"
    assert [int(row["epoch"]) for row in read_results(weights.parent / "results.csv")] == [0, 1]
    assert _load(weights / "last.pt")["epoch"] == 1  # --resume goes on with epoch 2


def test_validation_heartbeat_logs_at_most_once_per_interval(caplog) -> None:
    caplog.set_level("INFO")
    ValidationHeartbeat(3, every_s=0.0)(5, 10, 0.25)
    assert "epoch 3: validated 5/10 batches, loss 0.2500" in caplog.text
    caplog.clear()
    quiet = ValidationHeartbeat(3, every_s=3600.0)
    quiet(5, 10, 0.25)
    ValidationHeartbeat(3, every_s=0.0)(10, 10, 0.25)  # the last batch: the epoch line follows anyway
    assert "validated" not in caplog.text
