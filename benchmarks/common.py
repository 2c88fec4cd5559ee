"""Shared benchmark harness: machine info, warm-up + median timing, table printing, atomic JSON results."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from smartcash.atomic import atomic_write_text

#: Where results go: benchmarks/results, or $SMARTCASH_BENCH_RESULTS (gpu_check.sh keeps a GPU
#: run's files apart from the CPU files the README quotes).
RESULTS_DIR = Path(os.environ.get("SMARTCASH_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else platform.processor()."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """What the numbers were measured on. Imports torch (benchmarks only, never library code)."""
    import numpy
    import torch

    info = {
        "cpu": cpu_model(),
        "cpu_cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if hasattr(os, "getloadavg"):  # a shared machine's other work shows here: read timings with it
        info["load_average_1_5_15_min"] = [round(value, 2) for value in os.getloadavg()]
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


@dataclass(frozen=True)
class Timing:
    """Seconds of `repeats` timed runs after `warmup` untimed ones."""

    median_s: float
    min_s: float
    runs_s: tuple[float, ...]


def time_call(function: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> tuple[Timing, Any]:
    """Run `function` warmup + repeats times; (Timing over the timed runs, last return value)."""
    value = None
    for _ in range(warmup):
        value = function()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        runs.append(time.perf_counter() - start)
    return Timing(statistics.median(runs), min(runs), tuple(runs)), value


def time_interleaved(functions: dict[str, Callable[[], Any]], repeats: int = 5,
                     warmup: int = 1) -> dict[str, tuple[Timing, Any]]:
    """Like ``time_call`` for several functions, run in turn (a, b, c, a, b, c ...) so that a
    change of machine load during the measurement hits all of them alike; {name: (Timing, last value)}."""
    values: dict[str, Any] = {}
    for _ in range(warmup):
        for name, function in functions.items():
            values[name] = function()
    runs: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            values[name] = function()
            runs[name].append(time.perf_counter() - start)
    return {name: (Timing(statistics.median(times), min(times), tuple(times)), values.get(name))
            for name, times in runs.items()}


def import_time(module: str, repeats: int = 3) -> float:
    """Median seconds for a fresh interpreter to `import module` (interpreter start-up subtracted)."""

    def run(code: str) -> float:
        command = [sys.executable, "-c", f"import time; s = time.perf_counter(); {code}; print(time.perf_counter() - s)"]
        out = subprocess.run(command, check=True, capture_output=True, text=True, env={**os.environ, "YOLO_OFFLINE": "1"})
        return float(out.stdout.strip().splitlines()[-1])

    return statistics.median(run(f"import {module}") for _ in range(repeats))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain aligned text table; floats with 4 significant decimals."""
    text = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(str(header)), *(len(row[i]) for row in text)) for i, header in enumerate(headers)]
    lines = ["  ".join(str(header).ljust(width) for header, width in zip(headers, widths))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(value.ljust(width) for value, width in zip(row, widths)) for row in text]
    return "\n".join(lines)


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?x?|nan|inf")


def format_markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """The same table in Markdown (pipes; numbers right-aligned), to paste into the README."""
    text = [[_cell(value) for value in row] for row in rows]
    numeric = [bool(text) and all(_NUMBER.fullmatch(row[i]) or not row[i] for row in text)
               for i in range(len(headers))]
    lines = ["| " + " | ".join(str(header) for header in headers) + " |",
             "|" + "|".join("---:" if right else "---" for right in numeric) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in text]
    return "\n".join(lines)


def write_results(name: str, payload: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """Write `directory/<name>.json` atomically (smartcash.atomic); returns the path."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}.json"
    payload = {"benchmark": name, "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **payload}
    atomic_write_text(target, json.dumps(payload, indent=2, default=_json_default) + "\n")
    return target


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
