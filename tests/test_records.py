"""results.csv: required columns, buffered flushes, atomic rewrite, resume truncation; curves PNG."""

from __future__ import annotations

import os

import pytest

from smartcash.model.training.curves import plot_curves
from smartcash.model.training.records import RESULTS_COLUMNS, ResultsWriter, read_results

REQUIRED = ("epoch, phase, train/box_loss, train/obj_loss, train/cls_loss, val/box_loss, val/obj_loss, "
            "val/cls_loss, metrics/precision, metrics/recall, metrics/mAP50, metrics/mAP50-95, "
            "metrics/main_mAP50, metrics/main_mAP50-95, metrics/denomination_accuracy, lr/backbone, "
            "lr/head, epoch_time_s").split(", ")


def _row(epoch: int) -> dict:
    return {"epoch": epoch, "phase": 1, "train/box_loss": 0.1 / (epoch + 1), "metrics/mAP50": 0.1 * epoch,
            "lr/head": 1e-3, "epoch_time_s": 1.5}


def test_columns_and_buffering(tmp_path) -> None:
    path = tmp_path / "results.csv"
    writer = ResultsWriter(path, flush_every=3)
    assert all(column in RESULTS_COLUMNS for column in REQUIRED)
    writer.add(_row(0))
    writer.add(_row(1))
    assert not path.exists()  # buffered: nothing written before flush_every rows
    writer.add(_row(2))
    rows = read_results(path)
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert list(rows[0])[:len(REQUIRED) - 3] == REQUIRED[:-3]
    writer.add({**_row(3), "extra/column": 7})
    writer.flush()
    rows = read_results(path)
    assert len(rows) == 4 and rows[3]["extra/column"] == "7" and rows[0]["extra/column"] == ""
    assert float(rows[2]["metrics/mAP50"]) == pytest.approx(0.2)


def test_failed_flush_keeps_previous_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "results.csv"
    writer = ResultsWriter(path)
    writer.add(_row(0))
    before = path.read_text()

    def fail(*args, **kwargs):
        raise OSError("killed before rename")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        writer.add(_row(1))
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["results.csv"]


def test_resume_keeps_only_earlier_epochs(tmp_path) -> None:
    path = tmp_path / "results.csv"
    writer = ResultsWriter(path)
    for epoch in range(3):
        writer.add(_row(epoch))
    resumed = ResultsWriter(path, resume_before_epoch=2)
    resumed.add(_row(2))
    assert [row["epoch"] for row in read_results(path)] == ["0", "1", "2"]


def test_curves_png(tmp_path) -> None:
    writer = ResultsWriter(tmp_path / "results.csv")
    for epoch in range(3):
        writer.add(_row(epoch))
    out = plot_curves(tmp_path / "results.csv", tmp_path / "results.png")
    assert out is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
