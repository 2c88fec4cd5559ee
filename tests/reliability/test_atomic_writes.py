"""A write of a checkpoint or of results.csv that is cut short leaves the previous file intact and
loadable, and never a partial file at the final path.

Three ways to cut it: an exception (or Ctrl-C) at ``os.replace`` in this process; a real ``kill -9``
of a child blocked between "temp file written and fsynced" and ``os.replace``; the same kill in a
real training run, followed by ``--resume``.
"""

from __future__ import annotations

import errno
import os
import textwrap

import pytest
import torch

from smartcash.atomic import atomic_write_text
from smartcash.model.training.checkpoint import load_checkpoint, save_checkpoint
from smartcash.model.training.records import ResultsWriter, read_results

from .conftest import kill_hard, load_checkpoint_data, run_module, sha256, start_module, stray_files, \
    train_argv, wait_for_marker


def _state(epoch: int) -> dict:
    return {"epoch": epoch, "model": {"weight": torch.full((64, 64), float(epoch))}}


def _row(epoch: int) -> dict:
    return {"epoch": epoch, "phase": 1, "fitness": 0.125 * epoch}


def _failing_replace(monkeypatch, target_name: str, error: BaseException) -> None:
    original = os.replace

    def replace(source, destination, *args, **kwargs):
        if os.path.basename(destination) == target_name:
            raise error
        return original(source, destination, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("error", [OSError(errno.EIO, "Input/output error"), KeyboardInterrupt()],
                         ids=["OSError", "KeyboardInterrupt"])
def test_failed_checkpoint_replace_keeps_previous(tmp_path, monkeypatch, error) -> None:
    path = tmp_path / "weights" / "last.pt"
    save_checkpoint(path, _state(1))
    before = sha256(path)
    _failing_replace(monkeypatch, "last.pt", error)
    with pytest.raises(type(error)) as raised:
        save_checkpoint(path, _state(2))
    if isinstance(error, OSError):
        assert raised.value.errno == errno.EIO and raised.value.filename == str(path)
    assert sha256(path) == before and load_checkpoint(path)["epoch"] == 1
    assert stray_files(path.parent) == []


@pytest.mark.parametrize("error", [OSError(errno.EIO, "Input/output error"), KeyboardInterrupt()],
                         ids=["OSError", "KeyboardInterrupt"])
def test_failed_results_flush_keeps_previous(tmp_path, monkeypatch, error) -> None:
    path = tmp_path / "results.csv"
    writer = ResultsWriter(path, flush_every=1)
    writer.add(_row(0))
    before = path.read_bytes()
    _failing_replace(monkeypatch, "results.csv", error)
    with pytest.raises(type(error)):
        writer.add(_row(1))
    assert path.read_bytes() == before and [row["epoch"] for row in read_results(path)] == ["0"]
    assert stray_files(tmp_path) == []


def test_failure_while_writing_the_temp_file_keeps_previous(tmp_path, monkeypatch) -> None:
    path = tmp_path / "args.yaml"
    atomic_write_text(path, "epochs: 1\n")
    def failing_fsync(descriptor: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="args.yaml"):
        atomic_write_text(path, "epochs: 2\n" * 1000)
    assert path.read_text() == "epochs: 1\n" and stray_files(tmp_path) == []


WRITER_SCRIPT = textwrap.dedent('''
    """Writes {target} a second time (the fault hook blocks that write before its rename)."""
    import sys
    from pathlib import Path

    import torch

    from smartcash.model.training.checkpoint import save_checkpoint
    from smartcash.model.training.records import ResultsWriter

    folder = Path(sys.argv[1])
    if "{target}" == "last.pt":
        for epoch in (1, 2):
            weights = {{"weight": torch.full((256, 256), float(epoch))}}
            save_checkpoint(folder / "last.pt", {{"epoch": epoch, "model": weights}})
    else:
        writer = ResultsWriter(folder / "results.csv", flush_every=1)
        for epoch in (0, 1):
            writer.add({{"epoch": epoch, "phase": 1, "fitness": 0.125 * epoch}})
''')


@pytest.mark.parametrize("target", ["last.pt", "results.csv"])
def test_kill_9_between_temp_write_and_rename(tmp_path, target) -> None:
    (tmp_path / "write_twice.py").write_text(WRITER_SCRIPT.format(target=target))
    folder = tmp_path / "out"
    folder.mkdir()
    marker = tmp_path / "marker.json"
    child = start_module("write_twice", [str(folder)], tmp_path,
                         fault={"block_replace": target, "count": 2, "marker": str(marker)})
    blocked = wait_for_marker(child, marker, timeout=120)
    final, temp = folder / target, folder / os.path.basename(blocked["temp"])
    assert blocked["target"] == str(final) and temp.parent == folder and temp.name.startswith(f".{target}.")
    # The new version is complete in the temp file; the final path still holds the old one.
    if target == "last.pt":
        assert load_checkpoint(temp)["epoch"] == 2 and load_checkpoint(final)["epoch"] == 1
    else:
        assert len(read_results(temp)) == 2 and len(read_results(final)) == 1
    before = sha256(final)
    kill_hard(child)

    assert sha256(final) == before
    if target == "last.pt":
        state = load_checkpoint_data(final)
        assert state["epoch"] == 1 and torch.equal(state["model"]["weight"], torch.full((256, 256), 1.0))
    else:
        (row,) = read_results(final)
        assert (row["epoch"], row["phase"], row["fitness"]) == ("0", "1", "0")
    # What a kill leaves: the hidden temp file, which nothing reads; the next write still works.
    assert stray_files(folder) == [temp.name]
    if target == "last.pt":
        save_checkpoint(final, _state(3))
        assert load_checkpoint(final)["epoch"] == 3


def _argv(tmp_path, name: str, *flags: str) -> list[str]:
    return train_argv(tmp_path / "data.yaml", tmp_path / "runs", name, *flags, records_flush_every=1)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["last.pt", "results.csv"])
def test_training_killed_while_writing_then_resumed(tmp_path, good_data, target) -> None:
    """Epoch 1's write of ``target`` is killed; epoch 0's files stay; --resume re-runs epoch 1 and
    results.csv ends with each epoch exactly once."""
    (tmp_path / "data.yaml").symlink_to(good_data)
    marker = tmp_path / "marker.json"
    child = start_module("smartcash.train", ["--epochs", "3", *_argv(tmp_path, "cut")], tmp_path,
                         fault={"block_replace": target, "count": 2, "marker": str(marker)})
    wait_for_marker(child, marker)
    kill_hard(child)
    run = tmp_path / "runs/train/cut/phase1"
    last = load_checkpoint_data(run / "weights/last.pt")
    assert last["epoch"] == 0
    rows = [row["epoch"] for row in read_results(run / "results.csv")]
    # results.csv is written before the checkpoints: killed at the checkpoint, epoch 1's row is there.
    assert rows == (["0", "1"] if target == "last.pt" else ["0"])

    resumed = run_module("smartcash.train", ["--resume", *_argv(tmp_path, "cut")], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load_checkpoint_data(run / "weights/last.pt")["epoch"] == 2
    assert [row["epoch"] for row in read_results(run / "results.csv")] == ["0", "1", "2"]
