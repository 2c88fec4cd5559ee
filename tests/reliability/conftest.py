"""Shared set-up of the reliability tests: one tiny good dataset, copies of it to break, tiny
training runs in this process or as a real ``python -m smartcash.train`` subprocess, and the
fault-injection hook (``hooks/sitecustomize.py``) for subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from smartcash.data.synthetic import ensure_synthetic_dataset

REPO = Path(__file__).resolve().parents[2]
HOOKS = Path(__file__).resolve().parent / "hooks"
#: Every run: 64 px, batch 4, in this process's loader (workers 0), CPU.
TINY_FLAGS = ("--imgsz", "64", "--batch", "4", "--workers", "0", "--device", "cpu")


@pytest.fixture(scope="session")
def good_data(tmp_path_factory) -> Path:
    """data.yaml of a clean synthetic set: 8 train / 4 val images of 64 px (never modified)."""
    root = tmp_path_factory.mktemp("good")
    return ensure_synthetic_dataset(root=root, num_train=8, num_val=4, imgsz=64)


def copy_dataset(data_yaml: Path, destination: Path) -> Path:
    """A private copy of a dataset (label caches left behind) to add bad files to; its data.yaml."""
    shutil.copytree(data_yaml.parent, destination, ignore=shutil.ignore_patterns("*.cache"))
    return destination / data_yaml.name


def write_tiny_config(folder: Path, **values) -> Path:
    """A --config YAML: no plots, short warm-up, plus ``values``."""
    settings = {"plots": False, "warmup_epochs": 0.5, **values}
    path = folder / "tiny.yaml"
    path.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in settings.items()))
    return path


def train_argv(data: Path | str, project: Path, name: str, *flags: str, **config) -> list[str]:
    """Arguments of a tiny CPU run (``--config`` written next to the project folder)."""
    project.mkdir(parents=True, exist_ok=True)
    tiny = write_tiny_config(project, **config)
    return ["--data", str(data), *TINY_FLAGS, "--project", str(project), "--name", name,
            "--config", str(tiny), *flags]


def subprocess_env(fault: dict | None = None) -> dict[str, str]:
    """Environment of a child Python: offline, this checkout first, the fault hook when asked."""
    env = {**os.environ, "YOLO_OFFLINE": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(HOOKS)])}
    env.pop("SMARTCASH_FAULT", None)
    if fault is not None:
        env["SMARTCASH_FAULT"] = json.dumps(fault)
    return env


def run_module(module: str, argv: list[str], cwd: Path, fault: dict | None = None,
               timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGV`` to completion."""
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=cwd, env=subprocess_env(fault),
                          capture_output=True, text=True, timeout=timeout)


def start_module(module: str, argv: list[str], cwd: Path, fault: dict | None = None) -> subprocess.Popen:
    """``python -m MODULE ARGV`` in the background; its stderr goes to ``cwd/child.err``."""
    with open(cwd / "child.out", "w") as out, open(cwd / "child.err", "w") as err:
        return subprocess.Popen([sys.executable, "-m", module, *argv], cwd=cwd, env=subprocess_env(fault),
                                stdout=out, stderr=err)


def wait_for_marker(process: subprocess.Popen, marker: Path, timeout: float = 240) -> dict:
    """The hook's marker once written; fails (with the child's stderr) if the child exits first."""
    deadline = time.monotonic() + timeout
    while not marker.is_file():
        if process.poll() is not None:
            pytest.fail(f"child exited {process.returncode} before the fault point:\n"
                        + _tail(marker.parent / "child.err"))
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail("fault point not reached in time:\n" + _tail(marker.parent / "child.err"))
        time.sleep(0.05)  # polls a condition; the kill itself waits on the child being blocked there
    return json.loads(marker.read_text())


def kill_hard(process: subprocess.Popen) -> None:
    """``kill -9`` and reap; no handler, ``finally`` or atexit in the child runs."""
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


def _tail(path: Path, size: int = 4000) -> str:
    return path.read_text(errors="replace")[-size:] if path.is_file() else ""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_checkpoint_data(path: Path) -> dict:
    """A checkpoint as data (what every SmartCash reader does)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def stray_files(folder: Path) -> list[str]:
    """Temp files of the atomic writer (``.NAME.XXXX.tmp``) left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def make_checkpoint(path: Path, names: list[str] | None = None, data: Path | str | None = None,
                    imgsz: int = 64) -> Path:
    """A SmartCash checkpoint of an untrained yolov5n (seeded): what val/predict/export read, made in
    a second instead of a training run. ``names``: an identity taxonomy; default the SmartCash one."""
    from smartcash.model.build import build_model
    from smartcash.model.training.checkpoint import save_checkpoint
    from smartcash.taxonomy import Taxonomy, load_taxonomy

    taxonomy = load_taxonomy() if names is None else Taxonomy.identity(names)
    torch.manual_seed(0)
    model = build_model("yolov5n", taxonomy.num_classes)
    weights = model.state_dict()
    save_checkpoint(path, {"phase": 1, "epoch": 0, "model_name": "yolov5n", "num_classes": taxonomy.num_classes,
                           "anchors": model.detect.anchors.detach().clone(), "model": weights, "ema": weights,
                           "config": {"imgsz": imgsz, "data": None if data is None else str(data), "seed": 0},
                           "taxonomy": taxonomy.to_dict()})
    return path


def one_error_line(stderr: str) -> str:
    """The ``error: ...`` line of a CLI's stderr; fails on a traceback or on no error line."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> digest): "nothing changed" checks."""
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
