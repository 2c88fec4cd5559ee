"""Disk full (ENOSPC) while training writes a checkpoint or results.csv: the train CLI stops with
one clear error naming the file and "No space left on device", exits 1, and the files written
before are intact (same bytes, still load) with no temp file left behind.

The disk "fills up" at the second write of the target (epoch 1) and stays full: every later
atomic write fails too. It fails at the fsync of the temp file (how ENOSPC usually shows up with
delayed allocation) or at the rename (more points and files: test_atomic_writes.py).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from smartcash.model.training.records import read_results
from smartcash.train import main as train_main

from .conftest import load_checkpoint_data, sha256, stray_files, train_argv

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd (Linux)")


class FullDisk:
    """Patches os.fsync or os.replace: ENOSPC from the ``on``-th write of ``target`` onwards."""

    def __init__(self, monkeypatch, target: str, point: str, watch: Path, on: int = 2) -> None:
        self.target, self.watch, self.on = target, watch, on
        self.writes, self.full, self.before = 0, False, {}
        if point == "fsync":
            original_fsync = os.fsync

            def fsync(descriptor: int) -> None:
                self._check(os.path.basename(os.readlink(f"/proc/self/fd/{descriptor}")))
                original_fsync(descriptor)

            monkeypatch.setattr(os, "fsync", fsync)
        else:
            original_replace = os.replace

            def replace(source, destination, *args, **kwargs):
                self._check(os.path.basename(source))
                original_replace(source, destination, *args, **kwargs)

            monkeypatch.setattr(os, "replace", replace)

    def _check(self, temp_name: str) -> None:
        if not (temp_name.startswith(".") and temp_name.endswith(".tmp")):
            return  # not an atomic write (e.g. the folder fsync)
        if temp_name.startswith(f".{self.target}."):
            self.writes += 1
            if self.writes == self.on and not self.full:
                self.full = True
                self.before = {p.name: sha256(p) for p in self.watch.rglob("*")
                               if p.is_file() and not p.name.endswith(".tmp")}
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # write errors name no file


@pytest.mark.parametrize(("target", "point"), [("last.pt", "fsync"), ("results.csv", "replace")])
def test_disk_full_stops_with_clear_error_and_keeps_files(tmp_path, good_data, monkeypatch, capsys,
                                                          target, point) -> None:
    run = tmp_path / "runs/train/full/phase1"
    disk = FullDisk(monkeypatch, target, point, watch=run)
    code = train_main(train_argv(good_data, tmp_path / "runs", "full", "--epochs", "2", records_flush_every=1))

    err = capsys.readouterr().err
    path = run / "weights/last.pt" if target == "last.pt" else run / "results.csv"
    assert code == 1 and disk.full
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert error_lines == [f"error: [Errno 28] No space left on device: '{path}' (training stopped; files "
                           "written before it are intact: fix the cause, then continue with --resume)"]
    assert "Traceback" not in err

    # Everything written before the disk filled up: same bytes, and it loads.
    assert {"last.pt", "best.pt", "results.csv", "args.yaml"} <= set(disk.before)
    for name, digest in disk.before.items():
        assert sha256(next(run.rglob(name))) == digest, name
    assert load_checkpoint_data(run / "weights/last.pt")["epoch"] == 0
    assert load_checkpoint_data(run / "weights/best.pt")["epoch"] == 0
    rows = [row["epoch"] for row in read_results(run / "results.csv")]
    # results.csv is written before the checkpoints, so epoch 1's row made it when last.pt failed.
    assert rows == (["0", "1"] if target == "last.pt" else ["0"])
    assert stray_files(run) == [] and stray_files(run / "weights") == []
