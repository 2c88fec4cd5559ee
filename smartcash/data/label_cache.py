"""Cache of a split's scan (parsed labels, image sizes, problems), invalidated when any file changes.

The cache is JSON (no pickle: a cache file is data, never code), written atomically
(``smartcash.atomic``) next to the labels folder (``train/labels.train.cache``) or, when that
folder is not writable, under ``$SMARTCASH_CACHE/labels`` (default ``~/.cache/smartcash``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from smartcash.data.checks import Problem, Sample, SplitReport, scan_split
from smartcash.atomic import atomic_write_text
from smartcash.data.dataset_config import DatasetConfig

logger = logging.getLogger(__name__)

#: Bump when the scan's rules or this file's layout change: old caches are then rescanned.
CACHE_VERSION = 4  # 2: OpenCV-unreadable formats are bad images; a UTF-8 BOM is allowed; 3: images sharing
# a label file are skipped; 4: .jfif / .jpe read, macOS ._* files left out, orphan labels name an unread image


def _stat(path: Path) -> tuple[str, int, int]:
    try:
        info = path.stat()
        return str(path), info.st_size, info.st_mtime_ns
    except OSError:
        return str(path), -1, -1


def split_fingerprint(config: DatasetConfig, split: str) -> str:
    """sha256 of (cache version, class count, path/size/mtime of every image and label file)."""
    images = config.images(split)
    label_folders = sorted({config.label_path(image).parent for image in images})
    labels = sorted(p for folder in label_folders if folder.is_dir() for p in folder.glob("*.txt"))
    payload = json.dumps([CACHE_VERSION, config.num_source_classes,
                          [_stat(p) for p in images], [_stat(p) for p in labels]])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def cache_paths(config: DatasetConfig, split: str) -> tuple[Path, Path]:
    """(next to the labels folder, under $SMARTCASH_CACHE) for ``split``'s cache file."""
    images = config.images(split)
    labels_dir = config.label_path(images[0]).parent if images else config.root / "labels"
    local = labels_dir.parent / f"{labels_dir.name}.{split}.cache"
    digest = hashlib.sha256(str(local).encode("utf-8")).hexdigest()[:16]
    return local, cache_root() / "labels" / f"{digest}.{split}.cache"


def cache_root() -> Path:
    """SmartCash's cache folder: ``$SMARTCASH_CACHE``, else ``~/.cache/smartcash`` (label caches,
    image caches of read-only datasets, the synthetic dataset)."""
    return Path(os.environ.get("SMARTCASH_CACHE") or Path.home() / ".cache" / "smartcash")


def _to_json(report: SplitReport, fingerprint: str) -> dict:
    return {"version": CACHE_VERSION, "fingerprint": fingerprint, "split": report.split,
            "num_images": report.num_images, "num_labels": report.num_labels,
            "samples": [[s.image, s.label, s.width, s.height, s.boxes.tolist()] for s in report.samples],
            "problems": [[p.path, p.line, p.reason, p.kind] for p in report.problems]}


def _from_json(data: dict) -> SplitReport:
    samples = tuple(Sample(image, label, np.asarray(boxes, dtype=np.float32).reshape(-1, 5), width, height)
                    for image, label, width, height, boxes in data["samples"])
    problems = tuple(Problem(path, line, reason, kind) for path, line, reason, kind in data["problems"])
    return SplitReport(split=data["split"], samples=samples, problems=problems,
                       num_images=data["num_images"], num_labels=data["num_labels"])


def _read(path: Path, fingerprint: str) -> SplitReport | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):  # `[]`, `null` ...: not a cache this module wrote
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        if data.get("version") != CACHE_VERSION or data.get("fingerprint") != fingerprint:
            return None
        return _from_json(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        logger.warning("%s: unreadable label cache, rescanning (%s)", path, error)
        return None


def writable_folder(folder: Path) -> bool:
    """Writable, and not marked read-only (root ignores permission bits: respect the intent)."""
    try:
        return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)
    except OSError:
        return False


def _write_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not writable_folder(path.parent):
        raise PermissionError(f"{path.parent}: read-only")
    atomic_write_text(path, json.dumps(data, separators=(",", ":")))


def load_split_report(config: DatasetConfig, split: str, workers: int | None = None) -> SplitReport:
    """The scan of ``split`` from its cache when no file changed, else a fresh scan (then cached).

    Raises:
        DatasetError: the split is missing.
    """
    fingerprint = split_fingerprint(config, split)
    candidates = cache_paths(config, split)
    for path in candidates:
        report = _read(path, fingerprint)
        if report is not None:
            logger.debug("%s: labels from cache", path)
            return report
    report = scan_split(config, split, workers)
    data = _to_json(report, fingerprint)
    for path in candidates:
        try:
            _write_atomic(path, data)
            logger.info("%s: label cache written (%d images)", path, report.num_images)
            break
        except OSError as error:
            logger.debug("%s: cannot write label cache (%s)", path, error)
    else:
        logger.warning("label cache not written (%s and %s not writable); set SMARTCASH_CACHE",
                       *candidates)
    return report
