"""The model registry: ``runs/registry.json``, the finished runs keyed by id.

The file holds ``{"version": 1, "runs": {id: entry}}``: lookup by id is one dict access; ``best``
scans the entries once. Updates are read-modify-write under an exclusive ``fcntl`` lock on a
sidecar ``.lock`` file (concurrent runs, DDP ranks) and the file is replaced atomically.
The id is ``NAME/phaseN``: a new run of the same name and phase replaces its entry when it finishes;
until then the entry follows the previous run to ``phaseN/previous/<time>/`` (``moved``). An unreadable file is renamed ``registry.json.corruptN`` by the
next ``add`` (which starts a new file), never overwritten; entries that are not valid are skipped
with a warning.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from smartcash.atomic import atomic_write_text
from smartcash.model.training.records import lower_is_better

logger = logging.getLogger(__name__)

REGISTRY_VERSION = 1


class RegistryError(RuntimeError):
    """The registry file is unreadable, or an id / metric is not in it."""


@dataclass(frozen=True)
class RegistryEntry:
    """One finished run."""

    id: str
    phase: int
    data: str
    model: str
    weights: str
    metrics: dict[str, float] = field(default_factory=dict)
    date: str = ""
    run_dir: str = ""
    epochs: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegistryEntry:
        """An entry from its JSON; RegistryError when a field is missing or of the wrong kind."""
        if not isinstance(data, dict):
            raise RegistryError(f"expected an object, got {type(data).__name__}")
        missing = [key for key in ("id", "phase", "data", "model", "weights") if key not in data]
        if missing:
            raise RegistryError(f"missing {', '.join(missing)}")
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        not_text = [key for key in ("id", "data", "model", "weights", "date", "run_dir")
                    if key in known and not isinstance(known[key], str)]
        if not_text:
            raise RegistryError(f"{', '.join(not_text)} not a string")
        if not isinstance(known.get("metrics", {}), dict):
            raise RegistryError("metrics is not an object")
        metrics = known.get("metrics", {})
        for name, value in metrics.items():
            if value is not None and not _is_number(value):
                raise RegistryError(f"metric {name!r} is {value!r}, not a number")
        try:
            return cls(**{**known, "phase": int(known["phase"]), "epochs": int(known.get("epochs", 0))})
        except (TypeError, ValueError) as error:
            raise RegistryError(str(error)) from error


class ModelRegistry:
    """A JSON registry of finished runs.

    Args:
        path: the registry file (created on the first ``add``).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def add(self, entry: RegistryEntry) -> None:
        """Insert or replace ``entry`` (by id), atomically and under the lock."""
        if not entry.date:
            now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            entry = RegistryEntry(**{**asdict(entry), "date": now})
        with self._locked():
            try:
                runs = self._read()
            except RegistryError as error:  # unreadable: keep it aside, start a new file with this run
                if not self.path.is_file():
                    raise
                runs = {}
                kept = self._set_aside()
                logger.warning("%s; kept it as %s and started a new registry", error, kept)
            runs[entry.id] = asdict(entry)
            self._write(runs)
        logger.info("registry %s: %s", self.path, entry.id)

    def moved(self, run_id: str, old_dir: Path, new_dir: Path) -> None:
        """Point ``run_id``'s entry at ``new_dir`` when it pointed into ``old_dir`` (a run kept aside
        by a fresh run of its name and phase), atomically and under the lock; else nothing."""
        if not self.path.is_file():
            return
        old_dir, new_dir = old_dir.resolve(), new_dir.resolve()
        with self._locked():
            try:
                runs = self._read()
            except RegistryError:  # unreadable: the next add keeps it aside
                return
            entry = runs.get(run_id)
            if not isinstance(entry, dict) or Path(str(entry.get("run_dir", ""))) != old_dir:
                return
            for key in ("run_dir", "weights"):
                path = Path(str(entry.get(key, "")))
                if path.is_relative_to(old_dir):
                    entry[key] = str(new_dir / path.relative_to(old_dir))
            self._write(runs)
        logger.info("registry %s: %s now points at %s", self.path, run_id, new_dir)

    def get(self, run_id: str) -> RegistryEntry:
        """The entry with ``run_id`` (O(1) after reading the file)."""
        runs = self._read()
        if run_id not in runs:
            raise RegistryError(f"{self.path}: no run {run_id!r} (known: {sorted(runs) or 'none'})")
        try:
            return RegistryEntry.from_dict(runs[run_id])
        except RegistryError as error:
            raise RegistryError(f"{self.path}: run {run_id!r} is not a valid entry ({error})") from error

    def entries(self) -> list[RegistryEntry]:
        """All valid entries, oldest first; invalid ones (edited by hand ...) are counted in one warning."""
        entries, invalid = [], []
        for run_id, data in self._read().items():
            try:
                entries.append(RegistryEntry.from_dict(data))
            except RegistryError as error:
                invalid.append(f"{run_id!r} ({error})")
        if invalid:
            logger.warning("%s: ignoring %d invalid entries: %s", self.path, len(invalid), ", ".join(invalid[:5]))
        return sorted(entries, key=lambda entry: (str(entry.date), entry.id))

    def best(self, metric: str, phase: int | None = None) -> RegistryEntry | None:
        """The entry with the best ``metric`` (highest; lowest for a ``*loss*`` metric).

        ``metric`` is a full name (``metrics/mAP50-95``) or a short one (``mAP50-95``).
        Entries without the metric, or with a value that is not finite, are ignored; None when no entry has it.
        """
        lower = lower_is_better(metric)
        best_entry, best_value = None, None
        for entry in self.entries():
            if phase is not None and entry.phase != phase:
                continue
            value = _metric(entry.metrics, metric)
            if value is None or not math.isfinite(value):  # NaN compares false: it would never be replaced
                continue
            if best_value is None or (value < best_value if lower else value > best_value):
                best_entry, best_value = entry, value
        return best_entry

    def _read(self) -> dict[str, dict[str, Any]]:
        if self.path.exists() and not self.path.is_file():
            raise RegistryError(f"{self.path}: is a folder, not a registry file (move it away)")
        if not self.path.is_file():
            return {}
        try:
            payload = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise RegistryError(f"{self.path}:{error.lineno}: invalid JSON ({error.msg}); "
                                "fix or delete the file") from error
        except UnicodeDecodeError as error:
            raise RegistryError(f"{self.path}: not a text file ({error.reason}); fix or delete the file") from error
        if not isinstance(payload, dict) or not isinstance(payload.get("runs"), dict):
            raise RegistryError(f"{self.path}: expected {{'version': 1, 'runs': {{...}}}}")
        return payload["runs"]

    def _write(self, runs: dict[str, dict[str, Any]]) -> None:
        """Replace the file (under the lock) with ``runs``."""
        payload = {"version": REGISTRY_VERSION, "runs": runs}
        atomic_write_text(self.path, json.dumps(payload, indent=2, sort_keys=True) + "\n")

    def _set_aside(self) -> Path:
        """Rename the unreadable registry to a free ``registry.json.corruptN`` (never replacing one)."""
        number = 1
        while (kept := self.path.with_name(f"{self.path.name}.corrupt{number}")).exists():
            number += 1
        os.replace(self.path, kept)
        return kept

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl  # POSIX only; imported here so reading works everywhere

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _metric(metrics: dict[str, float], name: str) -> float | None:
    for key in (name, f"metrics/{name}"):
        if key in metrics and metrics[key] is not None:
            return float(metrics[key])
    return None


def _is_number(value: object) -> bool:
    """An int or float that is a float too: not a bool (JSON's ``true`` is no metric), not a 400-digit int.
    NaN and Infinity are numbers (a diverged run's loss); ``best`` passes over them."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True
