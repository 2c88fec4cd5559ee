"""Training benchmark: images/s and peak memory of SmartCash's training vs ultralytics' trainer, same images.

    python -m benchmarks.bench_training [--quick] [--device cpu|cuda] [--data synthetic|vnd|DATA.yaml]
                                        [--recipe finetune|scratch] [--threads N] [--out NAME|PATH.json]

Every training run is its own child process (``python -m benchmarks.bench_training --child ...``):
SmartCash through its real CLI (``smartcash.train.main``), ultralytics through
``YOLO('yolov5nu.yaml').train(...)``. A process per run gives each its own peak memory, and keeps
ultralytics' process-wide settings (torch threads, deterministic algorithms) away from the next run.

Both sides: yolov5n-size model from scratch (no pretrained weights), imgsz 320, batch 16,
2 loader workers, mosaic + colour/geometric augmentation, EMA, a fixed number of epochs, each
tool at its default precision: SmartCash's ``amp: true`` runs the forward in bfloat16 on CUDA
(8.0+; float16 before) and on CPUs with native bfloat16 (AVX512-BF16 / AMX; smartcash/model/training/precision.py),
ultralytics' ``amp=True`` is CUDA-only (float32 on a CPU). Where SmartCash's default is not
float32, its two phases run again with ``amp: false`` (the ``float32`` rows), so the table shows
how much of the difference is the precision.
What is timed is the training epoch only:
- SmartCash: ``epoch_time_s`` of its own results.csv = ``Trainer.train_one_epoch`` (loader
  iteration, forward, loss, backward, clip, step, EMA, LR schedule). Its training loader's 2
  workers are persistent (started with the first epoch's iteration and kept for the run: samples
  are seeded by (seed, epoch, index), smartcash/data/sampling.py), so only the first epoch pays
  their start-up. Excluded: startup (data scan, model build, autoanchor), the validation after
  every epoch, checkpoints.
- ultralytics: ``on_train_epoch_start`` -> ``on_train_epoch_end`` (the batch loop; its workers
  are persistent too, started before the first epoch, so their start-up is in no epoch).
  Excluded: startup and its validation after the last epoch (``val=False`` skips the others).
The first epoch is a warm-up: the speed is the median over the later epochs (``--epochs`` >= 2);
the first epoch's speed and each run's whole wall time (all included) are reported too. The
``workers`` column is what each training loader ran with (ultralytics uses none when the train set
is a single batch, whatever it was asked).

Recipe and pairing. SmartCash's default (``--recipe auto``) for a run from scratch is the
``scratch`` recipe: phase 1 trains every layer, nominal batch 16. This benchmark passes
``--recipe finetune`` instead (unless ``--recipe scratch``), the recipe for a pretrained backbone:
phase 1 freezes the backbone (nominal batch 64, as ultralytics' ``nbs``), so it is compared with
ultralytics ``freeze=10`` (the 10 backbone layers of yolov5nu); phase 2 (every layer trains,
started from phase 1's best checkpoint) is compared with ultralytics training everything from
scratch. With ``--recipe scratch`` both SmartCash phases train every layer (nominal batch 16: a
step per batch, where ultralytics accumulates to 64) and both are compared with ultralytics
training everything. Full and ``--quick`` runs both do phases 1 and 2.

Memory (benchmarks/memory.py): each run's child process and its descendants (the training and
validation loader workers) are sampled from /proc every 0.2 s (PSS every 2 s) while the run lasts
(startup, training, validation: the whole run, not only the timed epochs), from a thread of this
process that costs about 3% of one core. Reported in MiB:
- ``peak_rss_main_mib``: the training process's own peak resident set (kernel high-water mark,
  ``VmHWM`` at its end, exact), workers not included;
- ``peak_rss_workers_mib``: the peak of the sum of its descendants' resident sets (sampled);
- ``peak_pss_tree_mib``: the peak of the sum of proportional set sizes over main process +
  workers (sampled every 2 s; a page the forked workers share with the main process counts once):
  the memory the whole run takes from the machine. ``peak_rss_tree_mib``, the plain RSS sum
  (shared pages counted once per process, so it overstates), is in the JSON only.

ultralytics' own CPU defaults differ from SmartCash's: it forces ``workers=0`` and sets torch's
threads to ``min(8, cores - 1)``. The ``as smartcash`` rows undo that (2 workers, the same
thread count as SmartCash); full runs add a row with its own defaults, and (on CPU) a SmartCash
phase 1 run with ultralytics' thread count, to show what the thread count alone does: torch's
default is one thread per core, which the 2 loader workers then compete with. The two models differ
(anchor-based YOLOv5 v6 head vs ultralytics' anchor-free yolov5nu head), and so do the losses:
each tool's own loss and mAP are shown as it reports them, not as a comparison of quality.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import memory, workloads
from benchmarks.common import RESULTS_DIR, format_table, machine_info, write_results

IMGSZ, BATCH, WORKERS, MODEL = 320, 16, 2, "yolov5n"
BACKBONE_LAYERS = 10  # yolov5nu.yaml: layers 0-9 are the backbone (Conv/C3 stages + SPPF)
REPO = Path(__file__).resolve().parents[1]
SAMPLE_INTERVAL_S, PSS_INTERVAL_S = 0.2, 2.0  # benchmarks/memory.py: PSS costs far more to read


def epoch_summary(seconds: list[float], images: int) -> dict[str, Any]:
    """Speed over the epochs after the first (the warm-up), and of the first."""
    measured = seconds[1:] or seconds
    median = statistics.median(measured)
    return {"epoch_seconds": seconds, "median_epoch_s": median, "images_per_epoch": images,
            "images_per_s": images / median, "first_epoch_images_per_s": images / seconds[0]}


def run_smartcash(data_yaml: Path, train_images: int, device: str, phase: int, epochs: int, project: Path,
                  name: str = "bench", threads: int | None = None, recipe: str = "finetune",
                  amp: bool = True) -> dict[str, Any]:
    """``python -m smartcash.train`` in this process; epoch times from its results.csv.
    ``threads``: its ``--threads`` (default: torch's thread count here). The trainer sets torch's
    threads from that flag (its default is one per core), so calling ``torch.set_num_threads``
    before it would not reach the training; the count reported is the one torch had when it ended.
    ``amp``: its config's ``amp`` (default true, as a user runs it: bfloat16 where the hardware has
    it natively, precision.py); false trains in float32, as ultralytics does on a CPU."""
    from smartcash import train
    from smartcash.model.training.precision import training_precision

    overrides = project / f"bench-config-{name}.yaml"
    overrides.write_text(f"plots: false\namp: {str(amp).lower()}\n", encoding="utf-8")
    argv = ["--phase", str(phase), "--data", str(data_yaml), "--model", MODEL, "--imgsz", str(IMGSZ),
            "--batch", str(BATCH), "--workers", str(WORKERS), "--epochs", str(epochs), "--device", device,
            "--project", str(project), "--name", name, "--patience", "0", "--seed", "0",
            "--recipe", recipe,  # finetune: phase 1 frozen, as the freeze=10 peer (auto would pick scratch)
            "--threads", str(threads or torch.get_num_threads()), "--config", str(overrides)]
    saved_threads = torch.get_num_threads()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # its "phase 1 done" line: keep stdout for the tables
            code = train.main(argv)
        threads = torch.get_num_threads()  # what the trainer trained with
    finally:
        torch.set_num_threads(saved_threads)
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"python -m smartcash.train {' '.join(argv)} exited with {code}")
    with open(project / "train" / name / f"phase{phase}" / "results.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    last = rows[-1]
    return {**epoch_summary([float(row["epoch_time_s"]) for row in rows], train_images),
            "wall_s": wall, "threads": threads, "workers": WORKERS, "recipe": recipe,
            "precision": training_precision(amp, torch.device(device)).name,
            "loss": sum(float(last[f"train/{part}_loss"]) for part in ("box", "obj", "cls")),
            "map50": float(last["metrics/mAP50"]), "map50_95": float(last["metrics/mAP50-95"])}


def run_ultralytics(data_yaml: Path, device: str, freeze: int | None, epochs: int, threads: int | None,
                    project: Path, name: str) -> dict[str, Any]:
    """``YOLO('yolov5nu.yaml').train(...)``; epoch times from its callbacks."""
    from ultralytics import YOLO

    marks: dict[str, Any] = {"epochs": []}

    def on_pretrain_routine_start(trainer: Any) -> None:
        if threads is not None:
            trainer.args.workers = WORKERS  # it forces workers=0 on CPU; the 'as smartcash' rows undo that
        marks["workers_asked"] = trainer.args.workers

    def on_train_epoch_start(trainer: Any) -> None:
        marks["threads"] = torch.get_num_threads()
        workloads.synchronize(device)
        marks["start"] = time.perf_counter()

    def on_train_epoch_end(trainer: Any) -> None:
        workloads.synchronize(device)
        marks["epochs"].append(time.perf_counter() - marks["start"])
        marks["images"] = len(trainer.train_loader.dataset)
        marks["workers"] = trainer.train_loader.num_workers  # it uses none for a single-batch dataset

    cuda = torch.device(device).type == "cuda"  # its default amp=True; it never uses AMP on a CPU
    torch.manual_seed(0)
    model = YOLO("yolov5nu.yaml")
    model.add_callback("on_pretrain_routine_start", on_pretrain_routine_start)
    model.add_callback("on_train_epoch_start", on_train_epoch_start)
    model.add_callback("on_train_epoch_end", on_train_epoch_end)
    with workloads.ultralytics_session(threads):
        start = time.perf_counter()
        model.train(data=str(data_yaml), epochs=epochs, imgsz=IMGSZ, batch=BATCH, workers=WORKERS,
                    device=workloads.ultralytics_device(device), pretrained=False, amp=cuda, plots=False,
                    val=False, close_mosaic=0, freeze=freeze, seed=0, project=str(project), name=name,
                    exist_ok=True, verbose=False)
        wall = time.perf_counter() - start
    trainer = model.trainer
    metrics = trainer.metrics or {}
    return {**epoch_summary(marks["epochs"], marks["images"]), "wall_s": wall, "threads": marks.get("threads"),
            "workers": marks.get("workers"), "workers_asked": marks.get("workers_asked"), "freeze": freeze,
            "precision": "AMP (its own choice)" if cuda else "float32",
            "loss": _total_loss(trainer.tloss),
            "map50": float(metrics.get("metrics/mAP50(B)", float("nan"))),
            "map50_95": float(metrics.get("metrics/mAP50-95(B)", float("nan")))}


def _total_loss(loss: Any) -> float:
    """ultralytics' running mean train loss (box + cls + dfl): a dict of parts in 8.4, a tensor before."""
    if loss is None:
        return float("nan")
    return float(sum(float(value) for value in loss.values())) if isinstance(loss, dict) else float(loss.sum())


def child_main(argv: list[str]) -> int:
    """``--child SPEC_JSON --report PATH``: one training run (``run_smartcash`` or ``run_ultralytics``
    with SPEC's arguments) in this process; writes its record and this process's peak RSS to PATH."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_training --child")
    parser.add_argument("--child", required=True, help="JSON: {'tool': 'smartcash'|'ultralytics', ...arguments}")
    parser.add_argument("--report", required=True)
    args = parser.parse_args(argv)
    spec = json.loads(args.child)
    tool = spec.pop("tool")
    workloads.quiet_logging()
    for key in ("data_yaml", "project"):
        spec[key] = Path(spec[key])
    record = run_smartcash(**spec) if tool == "smartcash" else run_ultralytics(**spec)
    record["peak_rss_main_mib"] = memory.own_peak_rss_mib()
    Path(args.report).write_text(json.dumps(record), encoding="utf-8")
    return 0


def _child_stdout() -> Any:
    """The child's stdout goes to our stderr (stdout is for the tables); inherited where stderr has no fd."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, io.UnsupportedOperation, ValueError):
        return None


def run_child(tool: str, **spec: Any) -> dict[str, Any]:
    """One training run in a child process, its process tree's memory sampled meanwhile:
    the child's record + the sampled peaks (benchmarks/memory.py). ``spec``: the run function's arguments."""
    payload = json.dumps({"tool": tool, **{key: str(value) if isinstance(value, Path) else value
                                            for key, value in spec.items()}})
    with tempfile.TemporaryDirectory(prefix="smartcash-bench-run-") as folder:
        report = Path(folder) / "report.json"
        command = [sys.executable, "-m", "benchmarks.bench_training", "--child", payload, "--report", str(report)]
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONPATH": path}
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=_child_stdout())
        try:
            with memory.TreeMemorySampler(process.pid, SAMPLE_INTERVAL_S, PSS_INTERVAL_S) as sampler:
                code = process.wait()
        except BaseException:  # Ctrl-C: do not leave a training run behind
            process.kill()
            process.wait()
            raise
        if code != 0 or not report.is_file():
            raise RuntimeError(f"{tool} training run failed (exit {code}): {' '.join(command)}")
        record = json.loads(report.read_text(encoding="utf-8"))
    sampled = sampler.summary()
    own, seen = record.get("peak_rss_main_mib"), sampled["peak_rss_main_sampled_mib"]
    record["peak_rss_main_mib"] = max((value for value in (own, seen) if value is not None), default=None)
    return {**record, **{key: value for key, value in sampled.items() if key != "peak_rss_main_sampled_mib"}}


def run_device(device: str, data: workloads.BenchData, args: argparse.Namespace, epochs: int,
               directory: Path) -> dict[str, Any]:
    from smartcash.model.training.precision import training_precision

    phases = (1, 2)
    frozen = args.recipe == "finetune"
    ours = torch.get_num_threads()
    tools: dict[str, dict[str, Any]] = {}
    project = directory / f"smartcash-{device.replace(':', '-')}"
    project.mkdir(parents=True, exist_ok=True)
    common = {"data_yaml": data.data_yaml, "device": device, "epochs": epochs}
    smartcash = {**common, "train_images": data.num_images["train"], "project": project, "recipe": args.recipe}
    # Its default precision first (the ratios are to these rows), then float32 where that differs.
    precisions = [("", True)]
    if training_precision(True, torch.device(device)).amp:
        precisions.append((", float32 (amp false)", False))
    for suffix, amp in precisions:
        for phase in phases:  # phase 2 starts from the phase 1 run's best.pt, found by --name
            layers = "backbone frozen" if phase == 1 and frozen else "all layers"
            tools[f"smartcash phase {phase} ({layers}, recipe {args.recipe}){suffix}"] = {
                **run_child("smartcash", **smartcash, phase=phase, threads=ours, amp=amp,
                            name="bench" if amp else "bench-float32"), "phase": phase}
    fewer = max(1, (os.cpu_count() or 1) - 1)  # ultralytics' CPU choice: leaves a core to the loader workers
    if not args.quick and torch.device(device).type == "cpu" and fewer != ours:
        layers = "backbone frozen" if frozen else "all layers"
        tools[f"smartcash phase 1 ({layers}, recipe {args.recipe}), threads={fewer}"] = {
            **run_child("smartcash", **smartcash, phase=1, name="bench-threads", threads=fewer), "phase": 1}
    if not args.skip_ultralytics:
        for phase in phases:
            freeze = BACKBONE_LAYERS if phase == 1 and frozen else None
            for label, threads in workloads.ultralytics_thread_variants(args.quick):
                what = f"freeze={BACKBONE_LAYERS}" if freeze else "all layers"
                forced = threads is None and torch.device(device).type == "cpu"
                workers = "workers=0 (its CPU default)" if forced else f"workers={WORKERS}"
                name = f"ultralytics {what}, {workers}, {label}, peer of phase {phase}"
                tools[name] = {**run_child("ultralytics", **common, freeze=freeze, threads=threads,
                                           project=directory / "ultralytics", name=f"p{phase}-{len(tools)}"),
                               "phase": phase}
    for record in tools.values():
        base = next(t for n, t in tools.items() if n.startswith(f"smartcash phase {record['phase']}"))
        record["ratio_to_smartcash"] = record["median_epoch_s"] / base["median_epoch_s"]
    return {"device": device, "epochs": epochs, "recipe": args.recipe, "tools": tools}


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def print_table(record: dict[str, Any], data: workloads.BenchData) -> None:
    rows = [[name, tool["median_epoch_s"], f"{tool['ratio_to_smartcash']:.2f}x", f"{tool['images_per_s']:.1f}",
             f"{tool['first_epoch_images_per_s']:.1f}", tool["wall_s"], _mib(tool["peak_rss_main_mib"]),
             _mib(tool["peak_rss_workers_mib"]), _mib(tool["peak_pss_tree_mib"]), tool["threads"], tool["workers"],
             tool.get("precision", "-"),
             f"{tool['loss']:.3f}", f"{tool['map50']:.4f}", f"{tool['map50_95']:.4f}"]
            for name, tool in record["tools"].items()]
    headers = ["tool", "epoch_s (median)", "vs smartcash", "images/s", "1st epoch img/s", "run wall_s (all)",
               "peak RSS main MiB", "peak RSS workers MiB (sum)", "peak PSS main+workers MiB", "threads", "workers",
               "precision",
               "own train loss", "mAP50", "mAP50-95"]
    print(f"\ntraining on {record['device']}: {data.num_images['train']} train images, {record['epochs']} epochs "
          f"(speed: median over epochs 2..{record['epochs']}), {MODEL} imgsz {IMGSZ} batch {BATCH}, "
          f"SmartCash recipe {record['recipe']}")
    print(format_table(headers, rows))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child_main(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    workloads.add_common_arguments(parser)
    parser.add_argument("--data", default="synthetic", help="synthetic (default) | synthetic-large | vnd | path to a data.yaml")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 3; 2 with --quick)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="use the first N train images (default: all; 64 with --quick)")
    parser.add_argument("--val-images", type=int, default=None,
                        help="use the first N val images (default: all; 32 with --quick)")
    parser.add_argument("--recipe", choices=("finetune", "scratch"), default="finetune",
                        help="SmartCash's recipe (default finetune: phase 1 frozen, peer ultralytics freeze=10; "
                             "scratch, SmartCash's own default from scratch: every layer, peer without freeze)")
    parser.add_argument("--skip-ultralytics", action="store_true", help="SmartCash runs only (a smoke test)")
    parser.add_argument("--out", default=None, help="results name (benchmarks/results/NAME.json; default training, "
                                                    "training_quick with --quick) or a path ending in .json")
    args = parser.parse_args(argv)
    workloads.apply_threads(args.threads)
    epochs = args.epochs or (2 if args.quick else 3)
    workloads.quiet_logging()
    limits = {"train": args.train_images or (64 if args.quick else None),
              "val": args.val_images or (32 if args.quick else None)}
    with workloads.dataset_workspace(args.data, limits) as data:
        print(f"data: {data.describe()}", file=sys.stderr)
        records = [run_device(device, data, args, epochs, data.root.parent) for device in workloads.devices(args.device)]
        for record in records:
            print_table(record, data)
        description = data.describe()
    print("timed: the training epochs only (loader + forward/backward/step/EMA); startup and validation excluded; "
          "ratio = epoch time / SmartCash's in the same phase; losses are each tool's own (not comparable)")
    print(f"memory: each run is a child process, sampled every {SAMPLE_INTERVAL_S} s over its whole run; "
          "RSS main = its own peak (exact), workers not included; RSS workers = peak of the sum over its "
          f"loader workers; PSS main+workers = peak of the sum of proportional sizes (shared pages once; "
          f"every {PSS_INTERVAL_S} s)")
    info = machine_info(records[0]["device"])
    print(f"machine: {info}")
    out = args.out or ("training_quick" if args.quick else "training")
    directory, name = (Path(out).parent, Path(out).stem) if out.endswith(".json") else (RESULTS_DIR, out)
    path = write_results(name, {
        "machine": info, "data": description, "model": MODEL, "imgsz": IMGSZ, "batch": BATCH, "workers": WORKERS,
        "epochs": epochs, "recipe": args.recipe, "memory": {
            "sample_interval_s": SAMPLE_INTERVAL_S, "pss_sample_interval_s": PSS_INTERVAL_S,
            "scope": "the whole run of each child process (startup, training, validation)",
            "peak_rss_main_mib": "the training process's own peak RSS (its VmHWM, exact), workers not included",
            "peak_rss_workers_mib": "peak of the sum of its descendants' RSS (loader workers), sampled",
            "peak_rss_tree_mib": "peak of the sum of RSS over main + workers, sampled (shared pages once a process)",
            "peak_pss_tree_mib": "peak of the sum of PSS over main + workers, sampled (shared pages once)"},
        "devices": records}, directory)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
