"""Training benchmark: images/s of SmartCash's training epochs vs ultralytics' trainer, same images.

SmartCash runs through its real CLI (``python -m smartcash.train``, called in this process).

    python -m benchmarks.bench_training [--quick] [--device cpu|cuda] [--data synthetic|vnd|DATA.yaml]

Both sides: yolov5n-size model from scratch (no pretrained weights), imgsz 320, batch 16,
2 loader workers, mosaic + colour/geometric augmentation, nominal batch 64 (gradient
accumulation), EMA, no AMP, a fixed number of epochs. What is timed is the training epoch only:
- SmartCash: ``epoch_time_s`` of its own results.csv = ``Trainer.train_one_epoch`` (loader
  iteration, which respawns the 2 workers each epoch for reproducibility, forward, loss,
  backward, clip, step, EMA, LR schedule). Excluded: startup (data scan, model build,
  autoanchor), the validation after every epoch, checkpoints.
- ultralytics: ``on_train_epoch_start`` -> ``on_train_epoch_end`` (the batch loop; its workers
  are persistent, started before the first epoch, so their start-up is not in the epoch).
  Excluded: startup and its validation after the last epoch (``val=False`` skips the others).
The first epoch is a warm-up: the speed is the median over the later epochs (``--epochs`` >= 2);
the first epoch's speed and each run's whole wall time (all included) are reported too.

Phases: SmartCash phase 1 freezes the backbone, so it is compared with ultralytics ``freeze=10``
(the 10 backbone layers of yolov5nu); phase 2 (everything trains, started from phase 1's best
checkpoint) with ultralytics training everything. Full runs do both; --quick does phase 1 only.

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
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import workloads
from benchmarks.common import format_table, machine_info, write_results

IMGSZ, BATCH, WORKERS, MODEL = 320, 16, 2, "yolov5n"
BACKBONE_LAYERS = 10  # yolov5nu.yaml: layers 0-9 are the backbone (Conv/C3 stages + SPPF)


def epoch_summary(seconds: list[float], images: int) -> dict[str, Any]:
    """Speed over the epochs after the first (the warm-up), and of the first."""
    measured = seconds[1:] or seconds
    median = statistics.median(measured)
    return {"epoch_seconds": seconds, "median_epoch_s": median, "images_per_epoch": images,
            "images_per_s": images / median, "first_epoch_images_per_s": images / seconds[0]}


def run_smartcash(data: workloads.BenchData, device: str, phase: int, epochs: int, project: Path,
                  name: str = "bench", threads: int | None = None) -> dict[str, Any]:
    """``python -m smartcash.train`` in this process; epoch times from its results.csv.
    ``threads``: torch CPU threads for this run (default: as they are, torch's default = cores)."""
    from smartcash import train

    overrides = project / "bench-config.yaml"
    overrides.write_text("plots: false\namp: false\n", encoding="utf-8")  # amp off: ultralytics runs with amp=False
    argv = ["--phase", str(phase), "--data", str(data.data_yaml), "--model", MODEL, "--imgsz", str(IMGSZ),
            "--batch", str(BATCH), "--workers", str(WORKERS), "--epochs", str(epochs), "--device", device,
            "--project", str(project), "--name", name, "--patience", "0", "--seed", "0",
            "--recipe", "finetune",  # phase 1 frozen, as the freeze=10 peer; scratch would train all
            "--config", str(overrides)]
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads or saved_threads)
    threads = torch.get_num_threads()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # its "phase 1 done" line: keep stdout for the tables
            code = train.main(argv)
    finally:
        torch.set_num_threads(saved_threads)
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"python -m smartcash.train {' '.join(argv)} exited with {code}")
    with open(project / "train" / name / f"phase{phase}" / "results.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    last = rows[-1]
    return {**epoch_summary([float(row["epoch_time_s"]) for row in rows], data.num_images["train"]),
            "wall_s": wall, "threads": threads, "workers": WORKERS,
            "loss": sum(float(last[f"train/{part}_loss"]) for part in ("box", "obj", "cls")),
            "map50": float(last["metrics/mAP50"]), "map50_95": float(last["metrics/mAP50-95"])}


def run_ultralytics(data: workloads.BenchData, device: str, freeze: int | None, epochs: int, threads: int | None,
                    project: Path, name: str) -> dict[str, Any]:
    """``YOLO('yolov5nu.yaml').train(...)``; epoch times from its callbacks."""
    from ultralytics import YOLO

    marks: dict[str, Any] = {"epochs": []}

    def on_pretrain_routine_start(trainer: Any) -> None:
        if threads is not None:
            trainer.args.workers = WORKERS  # it forces workers=0 on CPU; the 'as smartcash' rows undo that
        marks["workers"] = trainer.args.workers

    def on_train_epoch_start(trainer: Any) -> None:
        marks["threads"] = torch.get_num_threads()
        workloads.synchronize(device)
        marks["start"] = time.perf_counter()

    def on_train_epoch_end(trainer: Any) -> None:
        workloads.synchronize(device)
        marks["epochs"].append(time.perf_counter() - marks["start"])
        marks["images"] = len(trainer.train_loader.dataset)

    torch.manual_seed(0)
    model = YOLO("yolov5nu.yaml")
    model.add_callback("on_pretrain_routine_start", on_pretrain_routine_start)
    model.add_callback("on_train_epoch_start", on_train_epoch_start)
    model.add_callback("on_train_epoch_end", on_train_epoch_end)
    with workloads.ultralytics_session(threads):
        start = time.perf_counter()
        model.train(data=str(data.data_yaml), epochs=epochs, imgsz=IMGSZ, batch=BATCH, workers=WORKERS,
                    device=workloads.ultralytics_device(device), pretrained=False, amp=False, plots=False,
                    val=False, close_mosaic=0, freeze=freeze, seed=0, project=str(project), name=name,
                    exist_ok=True, verbose=False)
        wall = time.perf_counter() - start
    trainer = model.trainer
    metrics = trainer.metrics or {}
    return {**epoch_summary(marks["epochs"], marks["images"]), "wall_s": wall, "threads": marks.get("threads"),
            "workers": marks.get("workers"),
            "loss": _total_loss(trainer.tloss),
            "map50": float(metrics.get("metrics/mAP50(B)", float("nan"))),
            "map50_95": float(metrics.get("metrics/mAP50-95(B)", float("nan")))}


def _total_loss(loss: Any) -> float:
    """ultralytics' running mean train loss (box + cls + dfl): a dict of parts in 8.4, a tensor before."""
    if loss is None:
        return float("nan")
    return float(sum(float(value) for value in loss.values())) if isinstance(loss, dict) else float(loss.sum())


def run_device(device: str, data: workloads.BenchData, args: argparse.Namespace, epochs: int,
               directory: Path) -> dict[str, Any]:
    phases = (1,) if args.quick else (1, 2)
    tools: dict[str, dict[str, Any]] = {}
    project = directory / f"smartcash-{device.replace(':', '-')}"
    project.mkdir(parents=True, exist_ok=True)
    for phase in phases:  # phase 2 starts from the phase 1 run's best.pt, found by --name
        tools[f"smartcash phase {phase}" + (" (backbone frozen)" if phase == 1 else " (all layers)")] = {
            **run_smartcash(data, device, phase, epochs, project), "phase": phase}
    fewer = max(1, (os.cpu_count() or 1) - 1)  # ultralytics' CPU choice: leaves a core to the loader workers
    if not args.quick and torch.device(device).type == "cpu" and fewer != torch.get_num_threads():
        tools[f"smartcash phase 1 (backbone frozen), threads={fewer}"] = {
            **run_smartcash(data, device, 1, epochs, project, name="bench-threads", threads=fewer), "phase": 1}
    for phase in phases:
        freeze = BACKBONE_LAYERS if phase == 1 else None
        for label, threads in workloads.ultralytics_thread_variants(args.quick):
            what = f"freeze={BACKBONE_LAYERS}" if freeze else "all layers"
            forced = threads is None and torch.device(device).type == "cpu"
            workers = "workers=0 (its CPU default)" if forced else f"workers={WORKERS}"
            name = f"ultralytics {what}, {workers}, {label}"
            tools[name] = {**run_ultralytics(data, device, freeze, epochs, threads, directory / "ultralytics",
                                             f"p{phase}-{len(tools)}"), "phase": phase}
    for record in tools.values():
        base = next(t for n, t in tools.items() if n.startswith(f"smartcash phase {record['phase']}"))
        record["ratio_to_smartcash"] = record["median_epoch_s"] / base["median_epoch_s"]
    return {"device": device, "epochs": epochs, "tools": tools}


def print_table(record: dict[str, Any], data: workloads.BenchData) -> None:
    rows = [[name, tool["median_epoch_s"], f"{tool['ratio_to_smartcash']:.2f}x", f"{tool['images_per_s']:.1f}",
             f"{tool['first_epoch_images_per_s']:.1f}", tool["wall_s"], tool["threads"], tool["workers"],
             f"{tool['loss']:.3f}", f"{tool['map50']:.4f}", f"{tool['map50_95']:.4f}"]
            for name, tool in record["tools"].items()]
    headers = ["tool", "epoch_s (median)", "vs smartcash", "images/s", "1st epoch img/s", "run wall_s (all)",
               "threads", "workers", "own train loss", "mAP50", "mAP50-95"]
    print(f"\ntraining on {record['device']}: {data.num_images['train']} train images, {record['epochs']} epochs "
          f"(speed: median over epochs 2..{record['epochs']}), {MODEL} imgsz {IMGSZ} batch {BATCH}")
    print(format_table(headers, rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    workloads.add_common_arguments(parser)
    parser.add_argument("--data", default="synthetic", help="synthetic (default) | synthetic-large | vnd | path to a data.yaml")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 3; 2 with --quick)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="use the first N train images (default: all; 64 with --quick)")
    args = parser.parse_args(argv)
    workloads.apply_threads(args.threads)
    epochs = args.epochs or (2 if args.quick else 3)
    workloads.quiet_logging()
    limits = {"train": args.train_images or (64 if args.quick else None), "val": 32 if args.quick else None}
    with workloads.dataset_workspace(args.data, limits) as data:
        print(f"data: {data.describe()}", file=sys.stderr)
        records = [run_device(device, data, args, epochs, data.root.parent) for device in workloads.devices(args.device)]
        for record in records:
            print_table(record, data)
        description = data.describe()
    print("timed: the training epochs only (loader + forward/backward/step/EMA); startup and validation excluded; "
          "ratio = epoch time / SmartCash's in the same phase; losses are each tool's own (not comparable)")
    info = machine_info(records[0]["device"])
    print(f"machine: {info}")
    path = write_results("training_quick" if args.quick else "training", {
        "machine": info, "data": description, "model": MODEL, "imgsz": IMGSZ, "batch": BATCH, "workers": WORKERS,
        "epochs": epochs, "devices": records})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
