"""Misuse of ``smartcash.train`` that used to damage a run or end in a traceback (issue 13).

Each case: a one-line ``error:`` naming the input and the fix, the documented exit code (2 bad usage,
1 failed run, 130 Ctrl-C, 143 SIGTERM), and no run file lost or changed. The subprocess cases (two
real runs at once, SIGTERM, an end-to-end resume of a copied run) are ``slow``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from smartcash.config import ConfigError, build_config
from smartcash.data import check
from smartcash.model.training import run_lock
from smartcash.model.training.checkpoint import save_checkpoint
from smartcash.model.training.phases import EarlyStopping
from smartcash.model.training.records import read_results
from smartcash.model.training.run_folder import prepare_run_dir
from smartcash.model.training.registry import ModelRegistry
from smartcash.train import Terminated, main as train_main, resume_config, sigterm_as_interrupt

from .conftest import (copy_dataset, load_checkpoint_data, one_error_line, run_module, start_module, train_argv,
                       tree_digest, wait_for_marker)


def _fake_run(run_dir: Path) -> None:
    """The files a run in progress has written (contents do not matter: they must not change)."""
    (run_dir / "weights").mkdir(parents=True)
    for name in ("weights/last.pt", "weights/best.pt", "results.csv", "args.yaml"):
        (run_dir / name).write_text(f"{name} of the first run\n")


# ------------------------------------------------------------------------- two runs, one folder

def test_second_run_of_a_name_is_refused_while_the_first_holds_the_folder(tmp_path, good_data, capsys) -> None:
    project = tmp_path / "runs"
    run_dir = project / "train/same/phase1"
    _fake_run(run_dir)
    holder = run_lock.acquire(run_dir)  # the first run, still training
    try:
        before = tree_digest(run_dir)
        assert train_main(train_argv(good_data, project, "same", "--epochs", "1")) == 2
        error = one_error_line(capsys.readouterr().err)
        assert f"{run_dir} is in use by another training run (pid {os.getpid()}" in error
        assert "choose another --name" in error
        assert tree_digest(run_dir) == before  # nothing deleted, nothing written
    finally:
        run_lock.release(holder)
    run_lock.ensure_free(run_dir)  # free again once the first run ends: a lock is never stale


@pytest.mark.slow
def test_two_real_runs_of_one_name_at_once(tmp_path, good_data) -> None:
    project = tmp_path / "runs"
    first_dir = tmp_path / "first"
    first_dir.mkdir()
    marker = first_dir / "marker.json"
    argv = train_argv(good_data, project, "same", "--epochs", "2")
    first = start_module("smartcash.train", argv, first_dir, fault={"block_batch": [1, 0], "marker": str(marker)})
    try:
        wait_for_marker(first, marker)  # epoch 0 done: last.pt, best.pt, args.yaml written
        run_dir = project / "train/same/phase1"
        before = tree_digest(run_dir)
        second = run_module("smartcash.train", argv, tmp_path)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"pid {first.pid}" in one_error_line(second.stderr)
        assert tree_digest(run_dir) == before
    finally:
        first.kill()
        first.wait(timeout=30)


# ------------------------------------------------------------------------- --resume of a copied run

def _saved_last(run_dir: Path, config_argv: list[str]) -> None:
    """A last.pt whose saved config is the ORIGINAL run's (as a copied folder holds)."""
    config = build_config(config_argv)
    save_checkpoint(run_dir / "weights/last.pt", {"model": {}, "config": config.to_dict()})


def test_resume_continues_the_folder_the_user_named(tmp_path, good_data) -> None:
    original = ["--data", str(good_data), "--device", "cpu", "--project", str(tmp_path / "runs"), "--name", "orig"]
    copy_dir = tmp_path / "runs/train/copy/phase1"
    _saved_last(copy_dir, original)
    cli = build_config(["--device", "cpu", "--project", str(tmp_path / "runs"), "--name", "copy", "--resume"])
    resumed = resume_config(cli, {"device", "project", "name", "resume"})
    assert resumed.run_dir == copy_dir and resumed.name == "copy"

    elsewhere = tmp_path / "elsewhere"
    _saved_last(elsewhere / "train/orig/phase1", original)
    cli = build_config(["--device", "cpu", "--project", str(elsewhere), "--name", "orig", "--resume"])
    assert resume_config(cli, {"device", "project", "name", "resume"}).run_dir == elsewhere / "train/orig/phase1"


def test_resume_of_a_checkpoint_of_the_other_phase_is_refused(tmp_path, good_data, capsys) -> None:
    original = ["--data", str(good_data), "--device", "cpu", "--project", str(tmp_path / "runs"), "--phase", "2"]
    _saved_last(tmp_path / "runs/train/exp/phase1", original)
    assert train_main(["--device", "cpu", "--project", str(tmp_path / "runs"), "--resume"]) == 1
    assert "resume with --phase 2" in one_error_line(capsys.readouterr().err)


@pytest.mark.slow
def test_resumed_copy_never_touches_the_original(tmp_path, good_data) -> None:
    project = tmp_path / "runs"
    assert train_main(train_argv(good_data, project, "orig", "--epochs", "1")) == 0
    shutil.copytree(project / "train/orig", project / "train/copy")
    original = tree_digest(project / "train/orig")
    registered = ModelRegistry(project / "registry.json").get("orig/phase1")

    assert train_main(train_argv(good_data, project, "copy", "--epochs", "2", "--resume")) == 0
    assert tree_digest(project / "train/orig") == original
    copy_dir = project / "train/copy/phase1"
    assert [row["epoch"] for row in read_results(copy_dir / "results.csv")] == ["0", "1"]
    assert load_checkpoint_data(copy_dir / "weights/last.pt")["config"]["name"] == "copy"
    registry = ModelRegistry(project / "registry.json")
    assert registry.get("orig/phase1") == registered
    assert registry.get("copy/phase1").weights == str((copy_dir / "weights/best.pt").resolve())


# ------------------------------------------------------------------------- SIGTERM

def test_sigterm_raises_the_interrupt_that_saves_the_run() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises long before
    assert isinstance(Terminated(), KeyboardInterrupt)  # the trainer's Ctrl-C path: save, flush, re-raise
    assert signal.getsignal(signal.SIGTERM) == previous  # restored


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.is_file() else []


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return status.is_file() and "State:\tZ" not in status.read_text()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads loader workers from /proc")
def test_sigterm_saves_last_pt_and_results_and_ends_the_loader_workers(tmp_path, good_data) -> None:
    marker = tmp_path / "marker.json"
    # records_flush_every 5: epoch 0's row is only buffered when the signal comes.
    argv = [*train_argv(good_data, tmp_path / "runs", "term", "--epochs", "3", records_flush_every=5),
            "--workers", "1"]
    child = start_module("smartcash.train", argv, tmp_path, fault={"block_batch": [1, 1], "marker": str(marker)})
    wait_for_marker(child, marker)
    workers = _children(child.pid)
    assert workers, "expected a loader worker process"
    run_dir = tmp_path / "runs/train/term/phase1"
    assert not (run_dir / "results.csv").exists()
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=120) == 143, (tmp_path / "child.err").read_text()[-3000:]
    assert [row["epoch"] for row in read_results(run_dir / "results.csv")] == ["0"]
    assert load_checkpoint_data(run_dir / "weights/last.pt")["interrupted"] is True
    assert "terminated (SIGTERM)" in (tmp_path / "child.err").read_text()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


# ------------------------------------------------------------------------- config and weights at the edge

def test_device_zero_in_a_config_yaml_means_gpu_zero(tmp_path, monkeypatch) -> None:
    (tmp_path / "gpu.yaml").write_text("device: 0\n")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device '0' asked for CUDA"):  # as `--device 0` does
        build_config(["--config", str(tmp_path / "gpu.yaml")])
    with pytest.raises(ConfigError, match="device '0' asked for CUDA"):
        build_config(["--device", "0"])


def test_config_naming_a_folder(tmp_path, capsys) -> None:
    assert train_main(["--config", str(tmp_path), "--device", "cpu"]) == 2
    assert one_error_line(capsys.readouterr().err) == f"error: {tmp_path}: is a folder; --config takes a YAML file"


def test_early_stop_metric_typo_is_refused_before_training(tmp_path, good_data, capsys) -> None:
    assert train_main(train_argv(good_data, tmp_path / "runs", "typo", early_stop_metric="mAP")) == 2
    error = one_error_line(capsys.readouterr().err)
    assert "early_stop_metric='mAP': must be one of fitness, " in error and "metrics/mAP50-95" in error
    assert not (tmp_path / "runs/train").exists()


def test_early_stopping_on_a_loss_keeps_the_lowest_epoch() -> None:
    tracker = EarlyStopping("val/box_loss", patience=2)
    assert [tracker.update(epoch, value) for epoch, value in enumerate([0.5, 0.4, 0.45, 0.6])] == \
        [True, True, False, False]
    assert (tracker.best, tracker.best_epoch) == (0.4, 1) and tracker.should_stop(3)
    assert not tracker.update(4, float("nan"))
    fitness = EarlyStopping("fitness", patience=2)
    assert [fitness.update(epoch, value) for epoch, value in enumerate([0.1, 0.3, 0.2])] == [True, True, False]


@pytest.mark.slow
def test_training_on_a_loss_metric_keeps_its_lowest_epoch(tmp_path, good_data, capsys) -> None:
    argv = train_argv(good_data, tmp_path / "runs", "loss", "--epochs", "3", early_stop_metric="val/obj_loss")
    assert train_main(argv) == 0
    run_dir = tmp_path / "runs/train/loss/phase1"
    losses = [float(row["val/obj_loss"]) for row in read_results(run_dir / "results.csv")]
    best = load_checkpoint_data(run_dir / "weights/best.pt")
    assert best["epoch"] == losses.index(min(losses))  # the lowest loss, not the highest
    assert best["early_stopping"]["best"] == pytest.approx(min(losses), rel=1e-5)


@pytest.mark.parametrize("content", [b"", b"this is not a checkpoint\n", "truncated"],
                         ids=["empty", "text", "truncated"])
def test_bad_weights_in_phase_1_is_one_error_line(content, tmp_path, good_data, capsys) -> None:
    weights = tmp_path / "pretrained.pt"
    if content == "truncated":
        buffer = tmp_path / "whole.pt"
        torch.save({"model.0.conv.weight": torch.zeros(16, 3, 6, 6)}, buffer)
        content = buffer.read_bytes()[:200]
    weights.write_bytes(content)
    code = train_main(train_argv(good_data, tmp_path / "runs", "w", "--epochs", "1", "--weights", str(weights)))
    assert code == 1
    error = one_error_line(capsys.readouterr().err)
    assert error.startswith(f"error: {weights}: not a weights file")


def test_dataset_without_a_single_box_is_refused(tmp_path, good_data, capsys) -> None:
    data = copy_dataset(good_data, tmp_path / "ds")
    for label in (data.parent / "labels/train").glob("*.txt"):
        label.write_text("")
    assert check.main(["--data", str(data)]) == 1
    assert "train split has no boxes: its 8 usable images are all backgrounds" in capsys.readouterr().out
    assert train_main(train_argv(data, tmp_path / "runs", "empty", "--epochs", "1")) == 1
    assert "train split has no boxes" in one_error_line(capsys.readouterr().err)


def test_a_val_split_without_a_single_box_is_trained_with_a_warning(tmp_path, good_data, caplog) -> None:
    data = copy_dataset(good_data, tmp_path / "ds")
    for label in (data.parent / "labels/val").glob("*.txt"):
        label.write_text("")
    with caplog.at_level("WARNING"):
        assert train_main(train_argv(data, tmp_path / "runs", "unmeasured", "--epochs", "1")) == 0
    assert "val split has 4 usable images and no labelled boxes" in caplog.text
    assert "mAP, best.pt and early stopping cannot be measured" in caplog.text


def test_lock_file_is_in_the_run_folder_and_names_its_holder(tmp_path) -> None:
    holder = run_lock.acquire(tmp_path / "run")
    try:
        assert f"pid {os.getpid()} on " in (tmp_path / "run" / run_lock.LOCK_NAME).read_text()
        with pytest.raises(run_lock.RunFolderBusyError, match="nothing was written"):
            run_lock.ensure_free(tmp_path / "run")
        # Another process sees it too (flock locks are per open file, and this is another process).
        probe = subprocess.run([sys.executable, "-c", "import fcntl,sys; f=open(sys.argv[1]); "
                                "fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)", str(tmp_path / "run/.lock")],
                               capture_output=True, text=True)
        assert probe.returncode != 0 and "BlockingIOError" in probe.stderr
    finally:
        run_lock.release(holder)


# ------------------------------------------------------------------------- a fresh run where one exists

def _mark_unfinished(run_dir: Path) -> None:
    """Make the run's last.pt say what a Ctrl-C'd run's says (saved mid-run, epochs left)."""
    path = run_dir / "weights/last.pt"
    state = load_checkpoint_data(path)
    state["interrupted"], state["config"]["epochs"] = True, 5
    save_checkpoint(path, state)


def test_a_fresh_run_keeps_the_previous_finished_run_aside(tmp_path, good_data, caplog) -> None:
    project = tmp_path / "runs"
    run_dir = project / "train/again/phase1"
    assert train_main(train_argv(good_data, project, "again", "--epochs", "1")) == 0
    before = tree_digest(run_dir)
    with caplog.at_level("WARNING"):
        assert train_main(train_argv(good_data, project, "again", "--epochs", "1", "--seed", "1")) == 0
    kept = [folder for folder in (run_dir / "previous").iterdir()]
    assert len(kept) == 1
    assert tree_digest(kept[0]) == {name: digest for name, digest in before.items() if name != ".lock"}
    assert "1 of 1 epochs, finished" in caplog.text and str(kept[0]) in caplog.text
    assert (run_dir / "weights/best.pt").is_file() and load_checkpoint_data(run_dir / "weights/last.pt")["config"]["seed"] == 1
    # the registry followed the kept run until this one replaced it
    assert ModelRegistry(project / "registry.json").get("again/phase1").weights == str(run_dir.resolve() / "weights/best.pt")
    # --exist-ok replaces the run in the folder (its checkpoints, not the user's files) and leaves the kept one alone
    (run_dir / "weights/best.onnx").write_bytes(b"an export of the second run")
    assert train_main(train_argv(good_data, project, "again", "--epochs", "1", "--exist-ok")) == 0
    assert [folder for folder in (run_dir / "previous").iterdir()] == kept
    assert load_checkpoint_data(run_dir / "weights/last.pt")["config"]["seed"] == 0
    assert (run_dir / "weights/best.onnx").read_bytes() == b"an export of the second run"


def test_the_registry_entry_follows_a_run_kept_aside(tmp_path, good_data) -> None:
    project = tmp_path / "runs"
    run_dir = project / "train/moved/phase1"
    assert train_main(train_argv(good_data, project, "moved", "--epochs", "1")) == 0
    # a second run of the name has set up its folder (and not finished: the entry is still the first run's)
    prepare_run_dir(build_config(["--data", str(good_data), "--project", str(project), "--name", "moved"]))
    (kept,) = (run_dir / "previous").iterdir()
    entry = ModelRegistry(project / "registry.json").get("moved/phase1")
    assert entry.run_dir == str(kept.resolve()) and entry.weights == str(kept.resolve() / "weights/best.pt")
    assert Path(entry.weights).is_file() and not (run_dir / "weights/best.pt").exists()


def test_a_fresh_run_over_an_unfinished_one_is_refused(tmp_path, good_data, capsys) -> None:
    project = tmp_path / "runs"
    run_dir = project / "train/forgot/phase1"
    assert train_main(train_argv(good_data, project, "forgot", "--epochs", "1")) == 0
    _mark_unfinished(run_dir)
    capsys.readouterr()
    before = tree_digest(run_dir)
    time.sleep(1.1)  # a rewritten lock-holder line would show (it carries the time to the second)
    assert train_main(train_argv(good_data, project, "forgot", "--epochs", "5")) == 2
    error = one_error_line(capsys.readouterr().err)
    assert f"{run_dir} holds an unfinished run (weights/last.pt, weights/best.pt: 1 of 5 epochs" in error
    # the hint reaches this run: its --project is not the default
    assert f"python -m smartcash.train --phase 1 --name forgot --project {project} --resume" in error
    assert "--exist-ok" in error
    assert tree_digest(run_dir) == before  # nothing moved, nothing written
    assert train_main(train_argv(good_data, project, "forgot", "--epochs", "1", "--exist-ok")) == 0
    assert not (run_dir / "previous").exists() and load_checkpoint_data(run_dir / "weights/last.pt")["epoch"] == 0


def test_phase_2_from_an_unfinished_phase_1_says_so(tmp_path, good_data, caplog) -> None:
    project = tmp_path / "runs"
    assert train_main(train_argv(good_data, project, "early", "--epochs", "1")) == 0
    _mark_unfinished(project / "train/early/phase1")
    with caplog.at_level("WARNING"):
        assert train_main(train_argv(good_data, project, "early", "--epochs", "1", "--phase", "2")) == 0
    assert "stopped before its end (weights/last.pt, weights/best.pt: 1 of 5 epochs" in caplog.text
    assert f"--phase 1 --name early --project {project} --resume" in caplog.text


def test_resume_with_no_epochs_left_says_so_and_ends_the_run(tmp_path, good_data, caplog) -> None:
    project = tmp_path / "runs"
    assert train_main(train_argv(good_data, project, "done", "--epochs", "1")) == 0
    _mark_unfinished(project / "train/done/phase1")  # 1 of 5 epochs, Ctrl-C'd
    with caplog.at_level("WARNING"):
        assert train_main(train_argv(good_data, project, "done", "--resume", "--epochs", "1")) == 0
    assert "has already trained 1 epochs; nothing is left to train" in caplog.text
    # the resume ended the run: its last.pt says so, and a fresh run keeps it aside instead of refusing
    assert train_main(train_argv(good_data, project, "done", "--epochs", "1")) == 0
    assert (project / "train/done/phase1/previous").is_dir()


def test_a_yaml_root_that_does_not_exist_is_named_once_per_run(tmp_path, good_data, caplog) -> None:
    data = copy_dataset(good_data, tmp_path / "ds")
    data.write_text(data.read_text() + "path: neww\n")  # a typo: the splits still resolve next to the yaml
    with caplog.at_level("WARNING"):
        assert train_main(train_argv(data, tmp_path / "runs", "typo", "--epochs", "1")) == 0
    warnings = [r.getMessage() for r in caplog.records if "path: neww not found" in r.getMessage()]
    assert len(warnings) == 1 and str(data.parent) in warnings[0]
