"""A poisoned batch (NaN images, so NaN predictions and loss) in a real ``python -m smartcash.train``
run: the run stops naming the epoch and batch, exits 1, and the checkpoints written before are
byte-identical to what they were just before the poisoned batch, and load."""

from __future__ import annotations

import json

import torch

from smartcash.model.training.records import read_results

from .conftest import load_checkpoint_data, run_module, sha256, stray_files, train_argv


def test_nan_loss_stops_the_cli_and_keeps_checkpoints(tmp_path, good_data) -> None:
    weights = tmp_path / "runs/train/nan/phase1/weights"
    marker = tmp_path / "before_nan.json"
    argv = ["--epochs", "3", *train_argv(good_data, tmp_path / "runs", "nan")]
    done = run_module("smartcash.train", argv, tmp_path,
                      fault={"nan_batch": [1, 1], "marker": str(marker), "weights": str(weights)})

    assert done.returncode == 1, done.stderr[-3000:]
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and error_lines[0].startswith("error: non-finite loss at epoch 1, batch 1 (")
    assert "the last good checkpoints were kept" in error_lines[0]
    assert "Traceback" not in done.stderr

    before = json.loads(marker.read_text())["sha256"]  # hashed by the child just before the NaN batch
    assert set(before) == {"last.pt", "best.pt"}
    for name, digest in before.items():
        assert sha256(weights / name) == digest, name
        state = load_checkpoint_data(weights / name)
        floats = [t for t in (*state["model"].values(), *state["ema"].values()) if t.is_floating_point()]
        assert all(bool(torch.isfinite(t).all()) for t in floats), name
    assert load_checkpoint_data(weights / "last.pt")["epoch"] == 0
    assert stray_files(weights) == []
    # Epoch 0 is on record (flushed on the error: records_flush_every is 5), the failed epoch is not.
    assert [row["epoch"] for row in read_results(weights.parent / "results.csv")] == ["0"]
    assert not (tmp_path / "runs/registry.json").exists()  # a failed run is not registered
