"""One worker thread that runs a run's side work (trackers, pictures) in order, off the training thread.

The training thread only puts a job on a queue, so a slow disk, a picture being drawn or a tracking
server that takes minutes to time out never holds up a batch. Jobs run one at a time in the order
they were submitted (a tracker's ``finish`` sees the pictures written before it). A job that raises
is logged as a warning and the next job runs; callers that must react to their own failures
(trackers: ``trackers.TrackerGroup``) catch them inside the job.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

_STOP = object()


class BackgroundJobs:
    """``submit(job, what)`` from any thread; ``close(timeout)`` waits for the queue to drain.

    Args:
        name: the thread's name (shows in stack dumps).
    """

    def __init__(self, name: str = "smartcash-side-jobs") -> None:
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        # A daemon: a job stuck on a dead server must never keep the process alive after training.
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None], what: str) -> None:
        """Queue ``job`` (no arguments; bind them with a closure or ``functools.partial``)."""
        if self._closed:
            logger.warning("side job %r submitted after close: skipped", what)
            return
        self._queue.put((job, what))

    def close(self, timeout: float | None = None) -> bool:
        """No more jobs; wait up to ``timeout`` seconds (None: no limit) for the queued ones.

        Returns True when every job finished, False when some were still running or waiting.
        """
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            job, what = item
            try:
                job()
            except Exception as error:  # noqa: BLE001 - a side job never ends the run; it is reported
                logger.warning("%s failed: %s: %s", what, type(error).__name__, error)
