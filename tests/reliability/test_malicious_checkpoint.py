"""A checkpoint whose pickle would run code (``__reduce__`` -> ``os.system`` / ``exec``), given to
every entry point that reads one: train ``--weights`` (phase 1 pretrained, phase 2 start),
train ``--resume`` and val ``--weights``. Each refuses it with an error naming the file, exits
non-zero, and the payload's marker file never appears. A control load with
``weights_only=False`` shows that the payload is live."""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from smartcash.train import main as train_main
from smartcash.val import main as val_main

from .conftest import train_argv


class SystemPayload:
    """Unpickling calls ``os.system("touch MARKER")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


class ExecPayload:
    """Unpickling calls ``exec(...)`` that writes MARKER."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def _evil_checkpoint(path: Path, marker: Path, payload: type) -> Path:
    """Looks like a SmartCash checkpoint; the payload hides in the config or in the weights."""
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {"detect.m.0.weight": torch.zeros(66, 64, 1, 1)}
    if payload is SystemPayload:
        state = {"model": weights, "ema": weights, "epoch": 0, "config": {"seed": payload(marker)}}
    else:
        state = {"model": {**weights, "detect.m.0.bias": payload(marker)}, "epoch": 0}
    torch.save(state, path)
    return path


@pytest.mark.parametrize("payload", [SystemPayload, ExecPayload], ids=["os.system", "exec"])
def test_payload_is_live_without_weights_only(tmp_path, payload) -> None:
    marker = tmp_path / "control_marker"
    path = _evil_checkpoint(tmp_path / "evil.pt", marker, payload)
    torch.load(path, map_location="cpu", weights_only=False)  # what SmartCash must never do
    assert marker.exists()


ENTRY_POINTS = ["train_phase1_weights", "train_phase2_weights", "train_resume", "val_weights"]


@pytest.mark.parametrize("payload", [SystemPayload, ExecPayload], ids=["os.system", "exec"])
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_malicious_checkpoint_is_refused(tmp_path, good_data, capsys, entry, payload) -> None:
    marker = tmp_path / "MARKER"
    project = tmp_path / "runs"
    evil = _evil_checkpoint(tmp_path / "downloads" / "evil.pt", marker, payload)
    if entry == "train_phase1_weights":
        code = train_main(train_argv(good_data, project, "p1", "--phase", "1", "--weights", str(evil)))
    elif entry == "train_phase2_weights":
        code = train_main(train_argv(good_data, project, "p2", "--phase", "2", "--weights", str(evil)))
    elif entry == "train_resume":
        evil = project / "train/r/phase1/weights/last.pt"
        shutil.copytree(tmp_path / "downloads", evil.parent)
        (evil.parent / "evil.pt").rename(evil)
        code = train_main(train_argv(good_data, project, "r", "--resume"))
    else:
        code = val_main(["--weights", str(evil), "--data", str(good_data), "--imgsz", "64", "--batch", "4",
                         "--workers", "0", "--device", "cpu", "--no-plots", "--project", str(project)])

    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("error: ") and str(evil) in err and "weights_only=True" in err, err[-2000:]
    assert "Traceback" not in err
    assert not marker.exists(), "the pickle payload ran"
    assert not list(project.glob("train/*/phase*/weights/best.pt"))  # nothing was trained
