"""Test-only fault injection for subprocesses (``python -m smartcash.train`` and small scripts).

This folder is put on PYTHONPATH only by tests/reliability, so Python imports this file at start-up
(no other sitecustomize exists in the venv). It does nothing unless ``SMARTCASH_FAULT`` holds a JSON
object:

- ``{"block_replace": "last.pt", "count": 2, "marker": PATH}``: the ``count``-th ``os.replace`` onto
  a file named ``last.pt`` first writes ``PATH`` (JSON: pid, temp file, target), then blocks forever,
  so the test can ``kill -9`` the process between "temp file written and fsynced" and "renamed".
- ``{"block_batch": [EPOCH, BATCH], "marker": PATH}``: the trainer blocks before that optimisation
  step (mid-epoch, gradients half accumulated), after writing ``PATH``.
- ``{"nan_batch": [EPOCH, BATCH], "marker": PATH}``: that batch's images become NaN (a poisoned
  batch); ``PATH`` gets the sha256 of ``weights/*.pt`` as they were just before.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import json
import os
import sys
import threading
from pathlib import Path

_FAULT = json.loads(os.environ.get("SMARTCASH_FAULT") or "null")


def _write_marker(path: str, payload: dict) -> None:
    temporary = f"{path}.part"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump({"pid": os.getpid(), **payload}, handle)
    os.replace(temporary, path)  # the test never sees half a marker


def _block_forever() -> None:
    threading.Event().wait()  # only SIGKILL (the test) ends this process


def _install_replace_block(fault: dict) -> None:
    original = os.replace
    seen = {"count": 0}

    def replace(source, destination, *args, **kwargs):
        if Path(destination).name == fault["block_replace"]:
            seen["count"] += 1
            if seen["count"] == fault["count"]:
                _write_marker(fault["marker"], {"temp": os.fspath(source), "target": os.fspath(destination)})
                _block_forever()
        return original(source, destination, *args, **kwargs)

    os.replace = replace


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _patch_trainer(module, fault: dict) -> None:
    original = module.optimization_step

    def optimization_step(model, images, *args, where, **kwargs):
        if "block_batch" in fault and list(where) == fault["block_batch"]:
            _write_marker(fault["marker"], {"where": list(where)})
            _block_forever()
        if "nan_batch" in fault and list(where) == fault["nan_batch"]:
            weights = Path(fault["weights"])
            _write_marker(fault["marker"], {"where": list(where),
                                            "sha256": {p.name: _sha256(p) for p in sorted(weights.glob("*.pt"))}})
            images = images * float("nan")  # (B, 3, H, W), every pixel NaN
        return original(model, images, *args, where=where, **kwargs)

    module.optimization_step = optimization_step


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Runs ``patch(module)`` right after ``name`` is first imported."""

    def __init__(self, name: str, patch) -> None:
        self.name, self.patch = name, patch

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            self.patch(module)

        spec.loader.exec_module = exec_module
        return spec


if isinstance(_FAULT, dict):
    if "block_replace" in _FAULT:
        _install_replace_block(_FAULT)
    if "block_batch" in _FAULT or "nan_batch" in _FAULT:
        sys.meta_path.insert(0, _PatchAfterImport("smartcash.model.training.trainer",
                                                  lambda module: _patch_trainer(module, _FAULT)))
