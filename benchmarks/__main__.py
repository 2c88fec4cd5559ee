"""Run every benchmark in sequence, each in its own Python process, and print each one's table.

    python -m benchmarks [--quick] [--device cpu|cuda] [--only map,validation,...] [--data synthetic|vnd|DATA.yaml]
                         [--threads N]

A process per benchmark: ultralytics changes process-wide settings (torch threads, determinism)
and a benchmark that fails does not stop the others. Each writes benchmarks/results/<name>.json
(``<name>_quick.json`` with --quick). ``--quick`` is a smoke run of about two minutes on an idle
2-core machine; it skips ``install``, which downloads and installs everything into a new venv.
``learning`` (SmartCash vs ultralytics learning curves, tens of minutes) runs only when named:
``--only learning``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from benchmarks.common import RESULTS_DIR

#: Run order: the cheap ones first.
BENCHMARKS = ("map", "extractor", "validation", "loader", "training", "install", "learning")
ONLY_WHEN_NAMED = {"learning"}  # too long for the default sequence
TAKES_DATA = {"validation", "loader", "training", "learning"}
TAKES_THREADS = {"extractor", "validation", "loader", "training", "learning"}


def commands(name: str, args: argparse.Namespace, cuda: bool) -> list[list[str]]:
    """The command line(s) for one benchmark (bench_map runs once per device: it measures one)."""
    base = [sys.executable, "-m", f"benchmarks.bench_{name}"] + (["--quick"] if args.quick else [])
    if args.data and name in TAKES_DATA:
        base += ["--data", args.data]
    if args.threads and name in TAKES_THREADS:
        base += ["--threads", str(args.threads)]
    if args.device:
        return [base + ["--device", args.device]]
    if name == "map" and cuda:
        return [base + ["--device", "cpu"], base + ["--device", "cuda"]]
    return [base]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer repeats (~2 minutes)")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cpu, and cuda when present)")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(BENCHMARKS)} "
                                                     f"(default: all but {','.join(sorted(ONLY_WHEN_NAMED))})")
    parser.add_argument("--data", default=None,
                        help="dataset for validation/loader/training/learning (default synthetic)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for the model benchmarks (default: one per core)")
    args = parser.parse_args(argv)
    default = tuple(name for name in BENCHMARKS if name not in ONLY_WHEN_NAMED)
    chosen = default if not args.only else tuple(name.strip() for name in args.only.split(",") if name.strip())
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    import torch

    cuda = torch.cuda.is_available()
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    summary = []
    for name in chosen:
        for command in commands(name, args, cuda):
            print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
            start = time.perf_counter()
            code = subprocess.run(command, env=env).returncode
            summary.append((name, " ".join(command[3:]), code, time.perf_counter() - start))
    print("\n=== summary")
    for name, flags, code, seconds in summary:
        print(f"{name:<11} {flags:<36} {'ok' if code == 0 else f'FAILED (exit {code})':<16} {seconds:7.1f} s")
    print(f"total {sum(seconds for *_, seconds in summary):.1f} s; results in {RESULTS_DIR}/")
    return 0 if all(code == 0 for _, _, code, _ in summary) else 1


if __name__ == "__main__":
    raise SystemExit(main())
