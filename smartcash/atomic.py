"""Atomic file writes: a temp file in the target's folder, fsync, then ``os.replace``.

A reader (or a crash at any moment) sees either the old file or the complete new one, never a
half-written file; a failed write leaves the old file intact and no temp file behind, and raises
an OSError of the same errno that names the target (``[Errno 28] No space left on device: 'last.pt'``).
A process killed between the write and the rename leaves only its hidden ``.NAME.*.tmp`` file.
Used by checkpoints, ``results.csv``, ``args.yaml`` and the model registry.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb",
                encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temp file next to ``path``; on a clean exit it replaces ``path`` atomically.

    Args:
        path: the file to (re)write; its folder is created if needed.
        mode: ``"wb"`` or ``"w"``.
        encoding: text encoding for ``"w"`` (default utf-8).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', not {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target: os.replace is only atomic within one file system.
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                             dir=target.parent)
    try:
        if hasattr(os, "fchmod"):  # POSIX: mkstemp made it 0600; give it the mode open() would
            os.fchmod(descriptor, _mode_for(target))
        with os.fdopen(descriptor, mode, encoding=(encoding or "utf-8") if mode == "w" else None) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # the bytes are on disk before the name points at them
        os.replace(temp_name, target)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        if isinstance(error, OSError) and error.errno is not None:
            # A failed write/fsync names no file (and a failed rename the temp one): name the target.
            raise OSError(error.errno, error.strerror or os.strerror(error.errno), str(target)) from error
        raise
    _fsync_folder(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w", encoding=encoding) as handle:
        handle.write(text)


def _mode_for(target: Path) -> int:
    """The permission bits of a rewrite: the existing file's, else 0666 less the umask."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~current_umask()


def current_umask() -> int:
    """The process umask (read from /proc where it can be: setting it to read it is not thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass  # no /proc (macOS, BSD): the set-and-restore below
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename has still happened
    finally:
        os.close(descriptor)
