"""One training process owns its run folder (``PROJECT/train/NAME/phaseN``) for its whole life.

The owner holds an exclusive ``fcntl`` lock on ``RUN_DIR/.lock`` from before it writes anything
until it has registered the run. The kernel drops the lock when the process ends, however it ends
(``kill -9`` included), so a lock is never stale. A second run of the same name and phase is
refused (``RunFolderBusyError``) rather than renamed ``exp2`` as ultralytics does: phase 2 and
``--resume`` find a run by its name, so a silent rename would make them pick up the other run.
The lock file itself stays (removing it would race with the next owner's open).
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class RunFolderBusyError(RuntimeError):
    """Another process holds the run folder's lock."""


def _owner() -> str:
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return f"pid {os.getpid()} on {socket.gethostname()}, since {started}"


def acquire(run_dir: Path) -> IO[str] | None:
    """Lock ``run_dir`` (made if needed) for this process until ``release``; the open lock file,
    or None where ``fcntl`` does not exist.

    Raises:
        RunFolderBusyError: another process holds it; the message names that process.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: nothing to lock with
        logger.warning("%s: no fcntl on this platform: the run folder is not locked", run_dir)
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / LOCK_NAME, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: held by another process (or another open file in this one)
        handle.seek(0)
        holder = handle.read()
        handle.close()
        raise _busy(run_dir, holder) from None
    handle.seek(0)
    handle.truncate()
    handle.write(_owner() + "\n")
    handle.flush()
    return handle


def ensure_free(run_dir: Path) -> None:
    """Raise ``RunFolderBusyError`` now if another process holds ``run_dir``; creates and writes
    nothing (the lock file keeps its last holder's line).

    A check before the slow set-up; only ``acquire`` makes the folder this process's.
    """
    path = run_dir / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # not POSIX: nothing to check with
        return
    if not path.is_file():
        return
    # A shared lock needs only read access (an exclusive one needs write access on NFS) and still
    # conflicts with the holder's exclusive lock; any other error is not "busy" and propagates.
    with open(path, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(run_dir, handle.read()) from None


def _busy(run_dir: Path, holder: str) -> RunFolderBusyError:
    return RunFolderBusyError(
        f"{run_dir} is in use by another training run ({holder.strip() or 'another process'}); choose "
        "another --name, or wait for that run to finish (nothing was written)")


def release(handle: IO[str] | None) -> None:
    """Unlock (closing the file releases the lock)."""
    if handle is not None:
        handle.close()
