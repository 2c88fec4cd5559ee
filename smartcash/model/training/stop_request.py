"""Ctrl-C and SIGTERM while the trainer validates: a stop request, not an exception mid-batch.

Inside ``deferred_interrupts()`` (main thread only) the first SIGINT or SIGTERM just sets the
Event it yields; the validation executor checks it every N batches and returns the batches done
as a ``partial`` result. When the block ends, the signal goes to the handler that was in place
before (Ctrl-C: KeyboardInterrupt; ``smartcash.train``'s SIGTERM handler: ``Terminated``), so the
run stops exactly as an interrupt anywhere else does, only at a batch boundary, with the loader
shut down by its own loop. A second signal does not wait: it goes to that handler at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _restore(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@contextmanager
def deferred_interrupts() -> Iterator[threading.Event]:
    """Yields the stop request; re-delivers the signal that set it when the block ends normally."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield requested
        return
    # An ignored signal stays ignored (e.g. SIGINT of a background job).
    previous = {signum: signal.getsignal(signum) for signum in _SIGNALS
                if signal.getsignal(signum) not in (signal.SIG_IGN, None)}
    received: list[int] = []
    owner = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:  # a loader worker forked in the block: behave as before it
            _restore(previous)
            signal.raise_signal(signum)
            return
        if received:  # the second one: stop now, as if this block were not here
            _restore(previous)
            signal.raise_signal(signum)
            return
        received.append(signum)
        requested.set()
        logger.warning("%s: validation stops at its next check, then the run saves and stops "
                       "(again to stop at once)", signal.Signals(signum).name)

    for signum in previous:
        signal.signal(signum, handler)
    try:
        yield requested
    finally:
        _restore(previous)
    if received:
        signal.raise_signal(received[0])  # the handler in place before runs now, in this thread
