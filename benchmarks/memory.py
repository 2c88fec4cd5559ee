"""Peak memory of a process and its descendants (a training run and its loader workers), from /proc.

``TreeMemorySampler(pid)`` reads, from a thread every ``interval`` seconds while the process runs
(PSS every ``pss_interval`` seconds: reading it walks each process's page tables, ~20 ms of CPU per
GiB resident, which a sampler on a 2-core machine must not spend 5 times a second):
- the process's own ``VmHWM`` (/proc/PID/status): the kernel's high-water mark of its resident set,
  exact (not sampled) up to the last sample; the process may add to it after that, so a training
  child also reports its own ``VmHWM`` at its end (``own_peak_rss_mib``; bench_training's
  ``peak_rss_main_mib`` is the larger of the two). Not ``ru_maxrss``: Linux carries it over fork
  and exec, so a child would report at least its parent's peak;
- its descendants (the loader workers; found by parent pid in /proc/*/stat, since
  /proc/PID/task/*/children needs a kernel option that not every kernel has), and for each sample:
  the sum of the descendants' ``VmRSS``, the sum of ``VmRSS`` over the whole tree, and the sum of
  ``Pss`` over the whole tree (/proc/PID/smaps_rollup: a page shared by k processes counts 1/k in
  each, so the sum counts it once). The peaks of those sums are sampled, so a spike shorter than
  ``interval`` (``pss_interval`` for PSS) can be missed. The RSS sum counts pages that forked
  workers share with the main process (copy-on-write: libraries, the model, the dataset's lists)
  once per process, so it overstates what the tree takes from the machine; the PSS sum is the
  honest total.
Linux only: elsewhere (no /proc) every figure is None.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

PROC = Path("/proc")
KIB_PER_MIB = 1024


def available() -> bool:
    return (PROC / "self" / "status").is_file()


def status_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of one process in KiB ({} once it is gone; a zombie has neither)."""
    values = {}
    try:
        text = (PROC / str(pid) / "status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def pss_kib(pid: int) -> int | None:
    """Proportional set size in KiB (/proc/PID/smaps_rollup), None when it cannot be read."""
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return None


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children, their children, ...), from /proc/*/stat."""
    parents: dict[int, int] = {}
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _mib(kib: int | None) -> float | None:
    return None if kib is None else kib / KIB_PER_MIB


class TreeMemorySampler:
    """Samples ``pid`` and its descendants every ``interval`` s from a daemon thread; see the module
    docstring for what each peak means. Use as a context manager around the process's lifetime."""

    def __init__(self, pid: int, interval: float = 0.2, pss_interval: float = 2.0) -> None:
        self.pid, self.interval, self.pss_interval = pid, interval, pss_interval
        self._last_pss: float | None = None
        self.samples = 0
        self.max_processes = 0
        self.main_hwm_kib: int | None = None
        self.workers_rss_kib: int | None = None
        self.tree_rss_kib: int | None = None
        self.tree_pss_kib: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"memory-sampler-{pid}", daemon=True)

    def __enter__(self) -> TreeMemorySampler:
        if available():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def sample(self) -> None:
        main = status_kib(self.pid)
        if "VmRSS" not in main:  # gone, or a zombie
            return
        workers = descendants(self.pid)
        worker_status = [status_kib(pid) for pid in workers]
        workers_rss = sum(status.get("VmRSS", 0) for status in worker_status)
        self.samples += 1
        self.max_processes = max(self.max_processes, 1 + sum("VmRSS" in status for status in worker_status))
        self.main_hwm_kib = max(self.main_hwm_kib or 0, main.get("VmHWM", main["VmRSS"]))
        self.workers_rss_kib = max(self.workers_rss_kib or 0, workers_rss)
        self.tree_rss_kib = max(self.tree_rss_kib or 0, main["VmRSS"] + workers_rss)
        now = time.monotonic()
        if self._last_pss is None or now - self._last_pss >= self.pss_interval:
            self._last_pss = now
            pss = [pss_kib(pid) for pid in (self.pid, *workers)]
            if pss[0] is not None:  # a worker that exited between the two reads counts 0
                self.tree_pss_kib = max(self.tree_pss_kib or 0, sum(value or 0 for value in pss))

    def summary(self) -> dict[str, Any]:
        """The peaks in MiB (None where nothing was read) and how they were taken."""
        return {"peak_rss_main_sampled_mib": _mib(self.main_hwm_kib),
                "peak_rss_workers_mib": _mib(self.workers_rss_kib),
                "peak_rss_tree_mib": _mib(self.tree_rss_kib),
                "peak_pss_tree_mib": _mib(self.tree_pss_kib),
                "max_processes": self.max_processes, "memory_samples": self.samples,
                "memory_sample_interval_s": self.interval, "pss_sample_interval_s": self.pss_interval}


def own_peak_rss_mib() -> float | None:
    """This process's peak resident set (``VmHWM``) in MiB; None without /proc."""
    peak = status_kib(os.getpid()).get("VmHWM")
    return None if peak is None else peak / KIB_PER_MIB
