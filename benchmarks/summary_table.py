"""One table from a folder of benchmark results (and training runs), for ``gpu_check.sh``.

    python -m benchmarks.summary_table RESULTS_DIR [--runs RUNS_DIR]

Every ``*.json`` the suite wrote: per device, each tool's images/s (or median seconds) and its time
relative to SmartCash's (``ratio_to_smartcash``: above 1 = slower than SmartCash). With ``--runs``,
each ``train/NAME/phaseN/results.csv`` below it adds its mean training seconds per epoch (the first,
warm-up epoch included) and its last epoch's mAP50 / mAP50-95.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from benchmarks.common import format_table


def _tool_rows(benchmark: str, device: str, tools: dict[str, Any]) -> list[list[str]]:
    rows = []
    for tool, figures in tools.items():
        if not isinstance(figures, dict):
            continue
        if "images_per_s" in figures:
            speed = f"{figures['images_per_s']:.1f} img/s"
        elif "median_s" in figures or "time_s" in figures:  # time_s: one timed call (bench_map's dense case)
            speed = f"{figures.get('median_s', figures.get('time_s')) * 1000:.1f} ms"
        else:
            continue
        ratio = figures.get("ratio_to_smartcash")
        rows.append([benchmark, device, tool, speed, "" if ratio is None else f"{ratio:.2f}"])
    return rows


def result_rows(results_dir: Path) -> list[list[str]]:
    rows: list[list[str]] = []
    for path in sorted(results_dir.glob("*.json")):
        payload = json.loads(path.read_text())
        name = payload.get("benchmark", path.stem)
        if isinstance(payload.get("tools"), dict):  # bench_map: one device per file
            device = payload.get("machine", {}).get("device", "")
            rows += _tool_rows(name, str(device), payload["tools"])
        for record in payload.get("devices", []):
            tools = record.get("tools")
            if isinstance(tools, dict):
                rows += _tool_rows(name, str(record.get("device", "")), tools)
            for batch in record.get("batches", []):  # bench_extractor: per batch size
                rows += _tool_rows(f"{name} b{batch.get('batch_size')}", str(record.get("device", "")),
                                   batch.get("tools", {}))
    return rows


def run_rows(runs_dir: Path) -> list[list[str]]:
    rows = []
    for results in sorted(runs_dir.glob("train/*/phase*/results.csv")):
        with results.open(newline="") as handle:
            epochs = list(csv.DictReader(handle))
        if not epochs:
            continue
        seconds = [float(row["epoch_time_s"]) for row in epochs]
        last = epochs[-1]
        name = f"{results.parent.parent.name}/{results.parent.name}"
        rows.append(["training run", "", f"{name}, {len(epochs)} epochs",
                     f"{sum(seconds) / len(seconds):.1f} s/epoch",
                     f"mAP50 {float(last['metrics/mAP50']):.3f} mAP50-95 {float(last['metrics/mAP50-95']):.3f}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.summary_table", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="folder of the suite's *.json files")
    parser.add_argument("--runs", type=Path, default=None, help="a --project folder of training runs")
    args = parser.parse_args(argv)
    rows = result_rows(args.results) + (run_rows(args.runs) if args.runs else [])
    print(format_table(["benchmark", "device", "tool / run", "speed", "time / SmartCash's, or result"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
