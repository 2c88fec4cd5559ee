"""Learning benchmark: does SmartCash learn as well as ultralytics, at equal epochs and at equal wall time?

    python -m benchmarks.bench_learning [--data synthetic|vnd|DATA.yaml] [--epochs1 E1 --epochs2 E2]
        [--ultra-epochs E] [--imgsz 320] [--batch 16] [--threads N] [--workers W] [--seeds 0,1]
        [--recipes auto|finetune,scratch] [--weights W] [--loss-gains cls=0.5] [--quick]
        [--skip-ultralytics | --skip-smartcash] [--out NAME]

Not part of a plain ``python -m benchmarks`` (a full run takes tens of minutes): run it with
``python -m benchmarks --only learning`` or directly.

For each seed, one after the other (never in parallel), each in its own process:
- SmartCash, per recipe: ``python -m smartcash.train --phase 1 --epochs E1 --recipe R ...`` then
  ``--phase 2 --epochs E2`` (same run name: phase 2 starts from phase 1's best.pt). Besides the
  flags above: ``--patience 0`` (no early stop: equal epochs) and a ``--config`` with
  ``plots: false`` and ``records_flush_every: 1`` (a results.csv row per epoch, for the clock).
- ultralytics (``benchmarks.ultralytics_train``): ``YOLO("yolov5nu.yaml").train(...)`` from scratch,
  E1 + E2 epochs unless ``--ultra-epochs``, its defaults otherwise (``optimizer=auto``, its LR
  schedule and augmentation, ``close_mosaic=10``: runs of <= 10 epochs never use mosaic), with the
  same threads and workers as SmartCash (it would otherwise force workers=0 on CPU).
Both read the same images: a link tree of ``--data`` with one data.yaml (``workloads.prepare_dataset``).

Wall time is the parent's clock from starting the process: interpreter start, imports, data
scan and label caches, model build (and SmartCash's autoanchor), training, the validation after
every epoch, checkpoints; SmartCash's two phases add up. An epoch's ``wall_s`` is when its row
appeared in the run's results.csv (both tools write it after that epoch's validation; polled every
0.1 s); a run's total also includes what follows the last epoch (ultralytics validates best.pt
again). Where a row could not be stamped, the run's wall time is spread over its epochs in
proportion to their own epoch times (``wall_clock: proportional`` in the JSON).

mAP: each tool's own validator on its own model (SmartCash's mAP agrees with ultralytics' to 1e-9
on the same predictions, see README). Models differ (anchor-based YOLOv5 v6 head vs the
anchor-free yolov5nu head). With ``--weights``, SmartCash starts from them but ultralytics still
starts from random weights. Short runs are noisy: use >= 2 seeds and read the spread.
At equal wall time, per seed: SmartCash's best mAP50-95 among the epochs finished by the time the
ultralytics run ended, and ultralytics' mAP50-95 at SmartCash's total time (linear between its
epochs, from 0 at the start; its final value when SmartCash took longer).

Writes benchmarks/results/learning.json (``learning_quick.json`` with ``--quick``; ``--out``): the
per-epoch rows {trainer, recipe, seed, phase, epoch (counted over both SmartCash phases),
phase_epoch, mAP50, mAP50-95, wall_s}, per run the recipe SmartCash used and why (``recipe_used`` in
each phase's args.yaml) or the optimizer ultralytics chose (its log line and the built optimizer),
and the summary; prints it as Markdown tables. ``--quick`` is a smoke run: 8 + 4 synthetic images
of 64 px (or the first 8 + 4 of ``--data``), imgsz 64, batch 4, 0 workers, 1 + 1 epochs against 1.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from benchmarks import workloads
from benchmarks.common import RESULTS_DIR, machine_info, write_results
from benchmarks.learning_curves import print_tables, summarize

REPO = Path(__file__).resolve().parents[1]
RECIPES = ("auto", "finetune", "scratch")
POLL_S = 0.1
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclasses.dataclass(frozen=True)
class Settings:
    epochs1: int
    epochs2: int
    ultra_epochs: int
    imgsz: int
    batch: int
    threads: int
    workers: int
    seeds: tuple[int, ...]
    recipes: tuple[str, ...]
    weights: str | None
    device: str
    loss_gains: str | None = None


@dataclasses.dataclass(frozen=True)
class WatchedRun:
    """A child process's wall time and the seconds (from its start) at which its results.csv reached
    1, 2, ... rows; ``exact`` when every row arrived on its own (one stamp per row)."""

    wall_s: float
    row_seconds: tuple[float, ...]
    exact: bool


def count_rows(path: Path) -> int:
    """Complete data rows in a CSV being written (a line counts once its newline is there)."""
    try:
        return max(0, path.read_text(encoding="utf-8").count("\n") - 1)
    except (FileNotFoundError, UnicodeDecodeError):  # not written yet / caught mid-append
        return 0


def watch_run(label: str, command: list[str], results_csv: Path, log: Path, env: dict[str, str]) -> WatchedRun:
    """Run ``command`` (output to ``log``), stamping each new results.csv row; exit if it fails."""
    stamps: list[float] = []
    exact = True
    print(f"{label}: running", file=sys.stderr, flush=True)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as sink:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            while True:
                finished = process.poll() is not None
                now = time.perf_counter() - start
                rows = count_rows(results_csv)
                if rows > len(stamps):
                    exact &= rows == len(stamps) + 1
                    stamps += [now] * (rows - len(stamps))
                if finished:
                    break
                time.sleep(POLL_S)
        finally:
            if process.poll() is None:  # the parent failed or was interrupted: stop the child too
                process.kill()
                process.wait()
    if process.returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-30:])
        raise SystemExit(f"bench_learning: {label}: {' '.join(command)} exited with {process.returncode}:\n{tail}")
    return WatchedRun(now, tuple(stamps), exact)


def epoch_wall_seconds(run: WatchedRun, epoch_seconds: Sequence[float]) -> tuple[list[float], str]:
    """Wall seconds (from the process start) at the end of each epoch, and how they were found:
    ``stamped`` (results.csv rows as they appeared) or ``proportional`` (the run's wall time spread
    over the epochs in proportion to ``epoch_seconds``)."""
    if run.exact and len(run.row_seconds) == len(epoch_seconds):
        return list(run.row_seconds), "stamped"
    weights = [max(0.0, seconds) for seconds in epoch_seconds]
    if not sum(weights):
        weights = [1.0] * len(weights)
    cumulative, done = [], 0.0
    for weight in weights:
        done += weight
        cumulative.append(run.wall_s * done / sum(weights))
    return cumulative, "proportional"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:  # older ultralytics pads its columns
        return [{key.strip(): value.strip() for key, value in row.items()} for row in csv.DictReader(handle)]


def child_env(threads: int) -> dict[str, str]:
    return {**os.environ, "YOLO_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}  # cwd REPO: this checkout's code


def _run_args(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "args.yaml"
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}


def recipe_used(run_dir: Path) -> dict[str, Any] | None:
    """``recipe_used`` {name, reason} from a SmartCash phase's args.yaml (None where it is absent)."""
    used = _run_args(run_dir).get("recipe_used")
    return {"name": used.get("name"), "reason": used.get("reason")} if isinstance(used, dict) else None


def loss_used(run_dir: Path) -> dict[str, Any] | None:
    """``loss_used`` (weights, gains, their source, the labels' layout) from a phase's args.yaml."""
    return _run_args(run_dir).get("loss_used")


def run_smartcash(settings: Settings, data_yaml: Path, recipe: str, seed: int, work: Path) -> dict[str, Any]:
    """Phase 1 then phase 2 as ``python -m smartcash.train`` processes; per-epoch rows over both."""
    name = f"{Path(recipe).stem}-seed{seed}"
    config = work / "smartcash-bench.yaml"
    config.write_text("plots: false\nrecords_flush_every: 1\n", encoding="utf-8")
    rows, phases, offset = [], [], 0.0
    for phase, epochs in ((1, settings.epochs1), (2, settings.epochs2)):
        command = [sys.executable, "-m", "smartcash.train", "--phase", str(phase), "--epochs", str(epochs),
                   "--data", str(data_yaml), "--imgsz", str(settings.imgsz), "--batch", str(settings.batch),
                   "--threads", str(settings.threads), "--workers", str(settings.workers), "--seed", str(seed),
                   "--recipe", recipe, "--project", str(work / "smartcash"), "--name", name,
                   "--device", settings.device, "--patience", "0", "--config", str(config)]
        if phase == 1 and settings.weights:
            command += ["--weights", settings.weights]
        if settings.loss_gains:  # a run's override: both phases take it
            command += ["--loss-gains", settings.loss_gains]
        run_dir = work / "smartcash" / "train" / name / f"phase{phase}"
        watched = watch_run(f"smartcash {recipe} seed {seed} phase {phase}", command, run_dir / "results.csv",
                            work / f"{name}-phase{phase}.log", child_env(settings.threads))
        results = read_csv(run_dir / "results.csv")
        wall, clock = epoch_wall_seconds(watched, [float(row["epoch_time_s"]) for row in results])
        for row, seconds in zip(results, wall):
            rows.append({"trainer": "smartcash", "recipe": recipe, "seed": seed, "phase": phase,
                         "epoch": len(rows) + 1, "phase_epoch": int(float(row["epoch"])),
                         "mAP50": float(row["metrics/mAP50"]), "mAP50-95": float(row["metrics/mAP50-95"]),
                         "wall_s": offset + seconds, "train_epoch_s": float(row["epoch_time_s"])})
        phases.append({"phase": phase, "epochs": len(results), "wall_s": watched.wall_s, "wall_clock": clock,
                       "recipe_used": recipe_used(run_dir), "loss_used": loss_used(run_dir),
                       "command": " ".join(command[1:])})
        offset += watched.wall_s
        print(f"smartcash {recipe} seed {seed} phase {phase}: {watched.wall_s:.1f} s, "
              f"mAP50-95 {rows[-1]['mAP50-95'] if rows else float('nan'):.4f}", file=sys.stderr)
    return {"trainer": "smartcash", "recipe": recipe, "seed": seed, "wall_s": offset, "phases": phases,
            "rows": rows}


def run_ultralytics(settings: Settings, data_yaml: Path, seed: int, work: Path) -> dict[str, Any]:
    """``benchmarks.ultralytics_train`` in a process; per-epoch rows from its results.csv."""
    name, report = f"ultralytics-seed{seed}", work / f"ultralytics-seed{seed}.json"
    command = [sys.executable, "-m", "benchmarks.ultralytics_train", "--data", str(data_yaml),
               "--epochs", str(settings.ultra_epochs), "--imgsz", str(settings.imgsz),
               "--batch", str(settings.batch), "--workers", str(settings.workers),
               "--threads", str(settings.threads), "--seed", str(seed),
               "--device", workloads.ultralytics_device(settings.device), "--project", str(work / "ultralytics"),
               "--name", name, "--report", str(report)]
    log = work / f"{name}.log"
    env = {**child_env(settings.threads), "YOLO_VERBOSE": "True"}  # it logs its optimizer choice at INFO
    watched = watch_run(f"ultralytics seed {seed}", command, work / "ultralytics" / name / "results.csv", log, env)
    results = read_csv(work / "ultralytics" / name / "results.csv")
    cumulative = [float(row["time"]) for row in results]  # seconds since its training started
    wall, clock = epoch_wall_seconds(watched, [b - a for a, b in zip([0.0, *cumulative], cumulative)])
    rows = [{"trainer": "ultralytics", "recipe": "default", "seed": seed, "phase": None, "epoch": index + 1,
             "phase_epoch": int(float(row["epoch"])) - 1, "mAP50": float(row["metrics/mAP50(B)"]),
             "mAP50-95": float(row["metrics/mAP50-95(B)"]), "wall_s": seconds}
            for index, (row, seconds) in enumerate(zip(results, wall))]
    optimizer_lines = [ANSI.sub("", line).strip() for line in log.read_text(encoding="utf-8", errors="replace")
                       .splitlines() if "optimizer:" in ANSI.sub("", line)]
    print(f"ultralytics seed {seed}: {watched.wall_s:.1f} s, mAP50-95 {rows[-1]['mAP50-95']:.4f}", file=sys.stderr)
    return {"trainer": "ultralytics", "recipe": "default", "seed": seed, "wall_s": watched.wall_s,
            "phases": [{"phase": None, "epochs": len(results), "wall_s": watched.wall_s, "wall_clock": clock,
                        "command": " ".join(command[1:])}],
            "optimizer_log": optimizer_lines, **json.loads(report.read_text(encoding="utf-8")), "rows": rows}


def source_state() -> dict[str, Any]:
    """The commit measured, and whether the working tree had uncommitted changes."""
    def git(*args: str) -> str | None:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain")
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted_changes": None if status is None else bool(status)}


def _checked_loss_gains(text: str) -> str:
    """The flag's text, passed on to SmartCash as given, once its parser accepts it."""
    from smartcash.config import loss_gains_problem, parse_loss_gains

    problem = loss_gains_problem(parse_loss_gains(text))
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return text


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic", help="synthetic (default) | synthetic-large | vnd | path to a data.yaml")
    parser.add_argument("--epochs1", type=int, default=None, help="SmartCash phase 1 epochs (default 10; 1 --quick)")
    parser.add_argument("--epochs2", type=int, default=None, help="SmartCash phase 2 epochs (default 10; 1 --quick)")
    parser.add_argument("--ultra-epochs", type=int, default=None,
                        help="ultralytics epochs (default E1 + E2; 1 with --quick)")
    parser.add_argument("--imgsz", type=int, default=None, help="default 320 (64 with --quick)")
    parser.add_argument("--batch", type=int, default=None, help="default 16 (4 with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per run (default: cores)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers per run (default 2; 0 --quick)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    parser.add_argument("--recipes", default="auto", help="comma-separated SmartCash recipes: auto, finetune, "
                                                          "scratch or recipe YAML paths (default auto)")
    parser.add_argument("--weights", default=None, help="SmartCash phase 1 --weights (ultralytics stays random)")
    parser.add_argument("--loss-gains", default=None, metavar="PART=GAIN[,...]", type=_checked_loss_gains,
                        help="SmartCash --loss-gains for both phases (default: the recipe's)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 + 4 synthetic 64 px images, 1 + 1 epochs")
    parser.add_argument("--skip-ultralytics", action="store_true", help="SmartCash runs only")
    parser.add_argument("--skip-smartcash", action="store_true",
                        help="ultralytics runs only (its curve is deterministic per seed: measure it once)")
    parser.add_argument("--out", default=None, help="results name (benchmarks/results/NAME.json; default learning, "
                                                    "learning_quick with --quick) or a path ending in .json")
    args = parser.parse_args(argv)
    if args.skip_ultralytics and args.skip_smartcash:
        parser.error("--skip-ultralytics and --skip-smartcash leave nothing to run")
    quick = args.quick

    def pick(value: int | None, full: int, small: int) -> int:
        return value if value is not None else (small if quick else full)

    epochs1, epochs2 = pick(args.epochs1, 10, 1), pick(args.epochs2, 10, 1)
    try:
        seeds = tuple(int(seed) for seed in args.seeds.split(",") if seed.strip())
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: expected integers separated by commas")
    recipes = tuple(recipe.strip() for recipe in args.recipes.split(",") if recipe.strip())
    for recipe in recipes:
        if recipe not in RECIPES and not Path(recipe).is_file():
            parser.error(f"--recipes: {recipe!r} is not one of {', '.join(RECIPES)} or an existing recipe YAML")
    recipes = tuple(recipe if recipe in RECIPES else str(Path(recipe).resolve()) for recipe in recipes)
    if len({Path(recipe).stem for recipe in recipes}) < len(recipes):  # the stem names the run folder
        parser.error(f"--recipes {args.recipes}: give each recipe once, with distinct file names")
    if args.weights and not Path(args.weights).is_file():
        parser.error(f"--weights {args.weights}: no such file")
    settings = Settings(
        epochs1, epochs2, pick(args.ultra_epochs, epochs1 + epochs2, 1), pick(args.imgsz, 320, 64),
        pick(args.batch, 16, 4), args.threads or len(os.sched_getaffinity(0)), pick(args.workers, 2, 0), seeds,
        recipes, str(Path(args.weights).resolve()) if args.weights else None, args.device, args.loss_gains)
    if min(epochs1, epochs2, settings.ultra_epochs, settings.threads, settings.batch) < 1 or not seeds or not recipes:
        parser.error("epochs, threads and batch must be >= 1, and --seeds / --recipes not empty")
    return args, settings


def main(argv: list[str] | None = None) -> int:
    args, settings = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="smartcash-learning-") as temporary:
        work = Path(temporary)
        source, limits = args.data, None
        if args.quick:
            limits = {"train": 8, "val": 4}
            if args.data == "synthetic":
                from smartcash.data.synthetic import ensure_synthetic_dataset

                source = str(ensure_synthetic_dataset(root=work / "synthetic", num_train=8, num_val=4, imgsz=64,
                                                      workers=1))
        data = workloads.prepare_dataset(source, work / "data", limits)
        print(f"data: {data.describe()}", file=sys.stderr)
        runs = []
        for seed in settings.seeds:  # seed by seed, so a change of machine load hits both trainers alike
            if not args.skip_ultralytics:
                runs.append(run_ultralytics(settings, data.data_yaml, seed, work))
            if not args.skip_smartcash:
                runs += [run_smartcash(settings, data.data_yaml, recipe, seed, work) for recipe in settings.recipes]
    summary = summarize(runs)
    print_tables(runs, summary)
    info = {**machine_info(settings.device), "threads_per_run": settings.threads}
    print(f"\nmachine: {info}")
    out = args.out or ("learning_quick" if args.quick else "learning")
    directory, name = (Path(out).parent, Path(out).stem) if out.endswith(".json") else (RESULTS_DIR, out)
    path = write_results(name, {
        "machine": info, "source": source_state(), "data": data.describe(), "settings": dataclasses.asdict(settings),
        "wall_time_includes": "process start, imports, data scan, model build, training, validation after "
                              "every epoch, checkpoints (SmartCash: both phases)",
        "runs": [{key: value for key, value in run.items() if key != "rows"} for run in runs],
        "epochs": [row for run in runs for row in run["rows"]], "summary": summary}, directory)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
