"""``kill -9`` of ``python -m smartcash.train`` mid-epoch, then ``--resume``: the run completes and
its final weights equal an uninterrupted run's bit for bit (CPU, same seed).

The kill point is deterministic, not timed: the fault hook blocks the child right before the
optimisation step of a randomly drawn (epoch >= 1, batch >= 1), i.e. with optimiser steps of that
epoch already taken and not saved; the test then sends SIGKILL.
"""

from __future__ import annotations

import random

import pytest
import torch

from smartcash.model.training.records import read_results

from .conftest import kill_hard, load_checkpoint_data, run_module, start_module, stray_files, train_argv, \
    wait_for_marker

EPOCHS = 3
BATCHES = 4  # 8 train images, batch 2
# nominal_batch 2: one optimiser step per batch, so a mid-epoch kill loses real updates.
# records_flush_every 5 (the default): when killed, the rows so far exist only in last.pt.
CONFIG = {"nominal_batch": 2, "records_flush_every": 5}


def _argv(tmp_path, name: str, *flags: str) -> list[str]:
    argv = train_argv(tmp_path / "data.yaml", tmp_path / "runs", name, *flags, **CONFIG)
    return [*argv, "--batch", "2"]  # the later flag wins over TINY_FLAGS' --batch 4


def _same_tensors(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [key for key in a if not torch.equal(a[key], b[key])]


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_is_bit_identical(tmp_path, good_data) -> None:
    (tmp_path / "data.yaml").symlink_to(good_data)
    rng = random.Random()  # a different kill point each run; printed on failure
    epoch, batch = rng.randrange(1, EPOCHS), rng.randrange(1, BATCHES)
    where = f"killed at epoch {epoch}, batch {batch}"

    straight = run_module("smartcash.train", ["--phase", "1", "--epochs", str(EPOCHS),
                                              *_argv(tmp_path, "straight")], tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]

    child_dir = tmp_path / "child"
    child_dir.mkdir()
    marker = child_dir / "marker.json"
    child = start_module("smartcash.train", ["--epochs", str(EPOCHS), *_argv(tmp_path, "cut")], child_dir,
                         fault={"block_batch": [epoch, batch], "marker": str(marker)})
    assert wait_for_marker(child, marker)["where"] == [epoch, batch]
    weights = tmp_path / "runs/train/cut/phase1/weights"
    before_kill = load_checkpoint_data(weights / "last.pt")
    assert before_kill["epoch"] == epoch - 1 and not before_kill["interrupted"], where
    kill_hard(child)
    assert not (weights.parent / "results.csv").exists(), where  # nothing flushed yet
    assert len(before_kill["results"]) == epoch, where

    resumed = run_module("smartcash.train", ["--resume", *_argv(tmp_path, "cut")], tmp_path)
    assert resumed.returncode == 0, f"{where}\n{resumed.stderr[-3000:]}"
    assert f"resuming {weights / 'last.pt'} from epoch {epoch}" in resumed.stderr

    reference = tmp_path / "runs/train/straight/phase1/weights"
    for name in ("last.pt", "best.pt"):
        expected, actual = load_checkpoint_data(reference / name), load_checkpoint_data(weights / name)
        assert actual["epoch"] == expected["epoch"], (where, name)
        for key in ("model", "ema"):
            assert not _same_tensors(expected[key], actual[key]), (where, name, key)
        assert actual["ema_updates"] == expected["ema_updates"] and actual["iteration"] == expected["iteration"]
    rows_expected = read_results(reference.parent / "results.csv")
    rows_actual = read_results(weights.parent / "results.csv")
    assert [row["epoch"] for row in rows_actual] == [str(e) for e in range(EPOCHS)], where
    for expected_row, actual_row in zip(rows_expected, rows_actual, strict=True):
        expected_row.pop("epoch_time_s"), actual_row.pop("epoch_time_s")
        assert actual_row == expected_row, where
    assert stray_files(weights) == []  # killed mid-batch, not mid-write: nothing half-written
