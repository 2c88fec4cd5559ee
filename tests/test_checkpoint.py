"""Atomic writes and checkpoints: old files survive a failure between write and rename; checkpoints
are plain data (weights_only) and carry the RNG states."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from smartcash.atomic import atomic_write_bytes, atomic_write_text
from smartcash.model.training.checkpoint import (CheckpointError, checkpoint_bytes, load_checkpoint,
                                                 restore_rng_state, rng_state, save_checkpoint)


def _fail_replace(*args, **kwargs):
    raise OSError("simulated kill between write and rename")


def test_atomic_write_replaces_whole_file(tmp_path) -> None:
    path = tmp_path / "sub" / "file.txt"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    assert os.listdir(path.parent) == ["file.txt"]


def test_failed_rename_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch) -> None:
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"old")
    monkeypatch.setattr(os, "replace", _fail_replace)
    with pytest.raises(OSError, match="simulated kill"):
        atomic_write_bytes(path, b"new" * 1000)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_failure_while_writing_keeps_old_checkpoint(tmp_path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "epoch": 0})
    monkeypatch.setattr(os, "replace", _fail_replace)
    with pytest.raises(OSError):
        save_checkpoint(path, {"model": {"w": torch.full((3,), float("nan"))}, "epoch": 1})
    state = load_checkpoint(path)
    assert state["epoch"] == 0 and torch.equal(state["model"]["w"], torch.ones(3))
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]


def test_checkpoint_is_plain_data_and_rng_round_trips(tmp_path) -> None:
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    state = {"model": {"w": torch.arange(4.0)}, "rng": rng_state(), "config": {"epochs": 2},
             "taxonomy": {"fine_classes": []}, "optimizer": {"state": {}, "param_groups": [{"betas": (0.9, 0.99)}]}}
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, checkpoint_bytes(state))
    expected = (torch.rand(3), np.random.rand(3), random.random())
    loaded = torch.load(path, weights_only=True)  # a checkpoint is data, never code
    assert loaded["version"] == 1 and "date" in loaded
    restore_rng_state(loaded["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_missing_or_foreign_checkpoint_errors_name_the_path(tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"phase 1 best checkpoint not found: .*best\.pt \(run it\)"):
        load_checkpoint(tmp_path / "best.pt", what="phase 1 best checkpoint", hint="run it")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a SmartCash checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
