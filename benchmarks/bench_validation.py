"""Validation benchmark: SmartCash's ValidationExecutor vs bare forward passes and ultralytics' validator.

The forward passes over the same batches are the floor any validator sits on; ultralytics'
validator runs on the same images.

    python -m benchmarks.bench_validation [--quick] [--device cpu|cuda] [--data synthetic|vnd|DATA.yaml]

What each row times (wall clock, median of --repeats runs after one warm-up):
- ``executor, loader``: ``ValidationExecutor.run`` over the val DataLoader (workers, letterbox,
  collate, host->device copy, forward, loss, decode, NMS, matching, metrics, the final mAP).
- ``forward only, loader``: the same loader, the same batches, ``model(images)`` in eval mode
  under ``torch.inference_mode`` and nothing else. executor / this = the validation overhead
  (target <= 1.10).
- ``..., in memory`` rows: the same, over batches loaded once beforehand (already on the device),
  so data loading drops out and the model + post-processing cost is isolated; the breakdown rows
  add NMS, then the metrics, then the loss.
- ``forward only, Conv+BN fused``: the forward passes of the folded copy that SmartCash's validator
  evaluates (``smartcash.model.fuse``, as ultralytics' val fuses); the other ``forward only`` rows
  time the model as trained (unfused), so executor / forward includes what fusing saves.
- ``ultralytics val loop``: its validator from ``on_val_start`` to ``on_val_end`` (loop + metrics;
  on CPU it loads data in the main process: it forces workers=0); ``ultralytics val() call``: the
  whole call including its dataloader, model fuse and warm-up. Run with SmartCash's torch thread
  count, and (full runs) with its own default too.

Weights: random init (seeded) on both sides by default: the two are different networks
(SmartCash's anchor-based YOLOv5 v6 head vs ultralytics' anchor-free yolov5nu), so no weights can
be shared; with random init neither produces many boxes above conf 0.001, so NMS is cheap on both
(detections/image is reported). ``--smartcash-weights`` / ``--ultralytics-weights`` validate
trained checkpoints instead.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from typing import Any

import torch

from benchmarks import workloads
from benchmarks.common import format_table, machine_info, time_interleaved, write_results
from benchmarks.workloads import synchronize

IMGSZ, BATCH, WORKERS, MODEL = 320, 16, 2, "yolov5n"


@torch.inference_mode()
def forward_only(model: torch.nn.Module, batches: Any, device: str) -> int:
    """The floor: every batch to the device and through the model, results dropped. Returns images."""
    images = 0
    for batch in batches:
        model(batch.to(device).images)  # the executor copies the whole Batch too
        images += len(batch.images)
    synchronize(device)
    return images


@torch.inference_mode()
def forward_postprocess(model: torch.nn.Module, processor: Any, batches: Any, device: str) -> float:
    """Forward + PredictionProcessor.postprocess (decode is in the eval forward); detections per image."""
    images, counts = 0, []
    for batch in batches:
        batch = batch.to(device)
        decoded, _ = model(batch.images)
        counts.append(processor.postprocess(decoded, batch.letterbox, batch.original_shapes).counts.sum())
        images += len(batch.images)
    detections = int(torch.stack(counts).sum()) if counts else 0
    return detections / max(images, 1)


def fused_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy with BatchNorm folded into each ultralytics Conv (what ultralytics' fuse() does)."""
    from ultralytics.nn.modules import Conv
    from ultralytics.utils.torch_utils import fuse_conv_and_bn

    fused = copy.deepcopy(model)
    for module in fused.modules():
        if isinstance(module, Conv) and hasattr(module, "bn"):
            module.conv = fuse_conv_and_bn(module.conv, module.bn)
            delattr(module, "bn")
            module.forward = module.forward_fuse
    return fused.eval()


def load_smartcash_weights(model: torch.nn.Module, path: str) -> None:
    """A SmartCash checkpoint's EMA weights (the validated ones), or a plain state dict."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state.get("ema", state.get("model", state)) if isinstance(state, dict) else state)


def run_ultralytics(data: workloads.BenchData, device: str, threads: int | None, weights: str | None,
                    repeats: int) -> dict[str, Any]:
    """Time ``YOLO(...).val(...)`` on the same val images: its loop (callbacks) and the whole call."""
    from benchmarks.common import time_call

    if weights:
        from ultralytics import YOLO

        model = YOLO(weights)
    else:
        model = workloads.ultralytics_model(len(data.names))
    marks: dict[str, Any] = {"loops": [], "detections": 0}

    def on_val_start(validator: Any) -> None:
        marks["threads"] = torch.get_num_threads()
        synchronize(device)
        marks["start"] = time.perf_counter()

    def on_val_batch_end(validator: Any) -> None:
        marks["detections"] = sum(len(c) for c in validator.metrics.stats["conf"])

    def on_val_end(validator: Any) -> None:
        marks["loops"].append(time.perf_counter() - marks["start"])
        marks["images"] = validator.seen

    model.add_callback("on_val_start", on_val_start)
    model.add_callback("on_val_batch_end", on_val_batch_end)
    model.add_callback("on_val_end", on_val_end)
    project = data.root.parent / "ultralytics"
    with workloads.ultralytics_session(threads):
        timing, metrics = time_call(lambda: model.val(
            data=str(data.data_yaml), imgsz=IMGSZ, batch=BATCH, device=workloads.ultralytics_device(device),
            workers=WORKERS, plots=False, save_json=False, project=str(project), name="val", exist_ok=True,
            verbose=False), repeats=repeats)
    loops = marks["loops"][-repeats:]
    return {"call": timing, "loop_median_s": sorted(loops)[len(loops) // 2], "loop_runs_s": loops,
            "map50": float(metrics.box.map50), "map50_95": float(metrics.box.map),
            "detections_per_image": marks["detections"] / max(marks.get("images", 0), 1),
            "threads": marks.get("threads")}


def run_device(device: str, data: workloads.BenchData, args: argparse.Namespace, repeats: int) -> dict[str, Any]:
    from smartcash.data.dataset_config import load_dataset_config
    from smartcash.data.loader import build_dataloader
    from smartcash.model.build import build_model
    from smartcash.model.training.core.validation_executor import ValidationExecutor

    config = load_dataset_config(data.data_yaml)
    torch.manual_seed(0)
    model = build_model(MODEL, config.taxonomy.num_classes).to(device).eval()
    if args.smartcash_weights:
        load_smartcash_weights(model, args.smartcash_weights)
    fused = fused_copy(model).to(device)
    loader = build_dataloader(config, "val", IMGSZ, BATCH, workers=WORKERS, augment=False, shuffle=False)
    executor = ValidationExecutor(config.taxonomy, show_progress=False)
    quiet = ValidationExecutor(config.taxonomy, show_progress=False)
    in_memory = [batch.to(device) for batch in loader]  # loaded once: data loading drops out
    num_images = sum(len(batch.images) for batch in in_memory)
    smartcash_threads = torch.get_num_threads()

    from_loader = time_interleaved({
        "smartcash executor, loader": lambda: executor.run(model, loader, device),
        "forward only, loader": lambda: forward_only(model, loader, device),
    }, repeats=repeats)
    in_memory_functions = {
        "smartcash executor, in memory": lambda: executor.run(model, in_memory, device),
        "executor without loss, in memory": lambda: quiet.run(model, in_memory, device, compute_loss=False),
        "forward + NMS, in memory": lambda: forward_postprocess(model, executor.processor, in_memory, device),
        "forward only, in memory": lambda: forward_only(model, in_memory, device),
        "forward only, Conv+BN fused, in memory": lambda: forward_only(fused, in_memory, device),
    }
    if args.quick:  # the breakdown rows only in full runs
        for name in ("executor without loss, in memory", "forward only, Conv+BN fused, in memory"):
            del in_memory_functions[name]
    from_memory = time_interleaved(in_memory_functions, repeats=repeats)
    result = from_loader["smartcash executor, loader"][1]
    detections_per_image = from_memory["forward + NMS, in memory"][1]
    tools: dict[str, dict[str, Any]] = {}
    for group, base in ((from_loader, "forward only, loader"), (from_memory, "forward only, in memory")):
        for name, (timing, _) in group.items():
            tools[name] = {"median_s": timing.median_s, "min_s": timing.min_s, "runs_s": timing.runs_s,
                           "threads": smartcash_threads,
                           "vs_forward_only": timing.median_s / group[base][0].median_s}
    for name in ("smartcash executor, loader", "smartcash executor, in memory"):
        tools[name].update(map50=result.metrics.fine.map50, map50_95=result.metrics.fine.map50_95,
                           detections_per_image=detections_per_image)
    for label, threads in workloads.ultralytics_thread_variants(args.quick):
        peer = run_ultralytics(data, device, threads, args.ultralytics_weights, repeats)
        common = {"map50": peer["map50"], "map50_95": peer["map50_95"], "threads": peer["threads"],
                  "detections_per_image": peer["detections_per_image"]}
        tools[f"ultralytics val loop, {label}"] = {"median_s": peer["loop_median_s"], "min_s": min(peer["loop_runs_s"]),
                                                   "runs_s": peer["loop_runs_s"], **common}
        tools[f"ultralytics val() call, {label}"] = {"median_s": peer["call"].median_s, "min_s": peer["call"].min_s,
                                                     "runs_s": peer["call"].runs_s, **common}
    reference = tools["smartcash executor, loader"]["median_s"]
    for record in tools.values():
        record["ratio_to_smartcash"] = record["median_s"] / reference
        record["images_per_s"] = num_images / record["median_s"]
    return {"device": device, "images": num_images, "tools": tools,
            "overhead_vs_forward_loader": tools["smartcash executor, loader"]["vs_forward_only"],
            "overhead_vs_forward_in_memory": tools["smartcash executor, in memory"]["vs_forward_only"]}


def print_table(record: dict[str, Any]) -> None:
    rows = []
    for name, tool in record["tools"].items():
        forward = tool.get("vs_forward_only")
        rows.append([name, tool["median_s"], tool["min_s"], f"{tool['ratio_to_smartcash']:.2f}x",
                     "" if forward is None else f"{forward:.2f}x", f"{tool['images_per_s']:.1f}",
                     tool.get("threads", ""), _fmt(tool.get("map50")), _fmt(tool.get("map50_95")),
                     _fmt(tool.get("detections_per_image"), 1)])
    headers = ["tool", "time_s (median)", "min_s", "vs smartcash", "vs forward only", "images/s", "threads", "mAP50",
               "mAP50-95", "det/image"]
    print(f"\nvalidation on {record['device']}: {record['images']} images, {MODEL} imgsz {IMGSZ} batch {BATCH}")
    print(format_table(headers, rows))
    print(f"overhead of validation over the bare forward passes: {record['overhead_vs_forward_loader']:.3f}x "
          f"through the loader (target <= 1.10), {record['overhead_vs_forward_in_memory']:.3f}x in memory")


def _fmt(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    workloads.add_common_arguments(parser)
    parser.add_argument("--data", default="synthetic", help="synthetic (default) | synthetic-large | vnd | path to a data.yaml")
    parser.add_argument("--smartcash-weights", help="SmartCash checkpoint to validate (default: random init)")
    parser.add_argument("--ultralytics-weights", help="ultralytics .pt to validate (default: random init)")
    args = parser.parse_args(argv)
    workloads.apply_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 5)
    workloads.quiet_logging()
    limits = {"train": 1, "val": 32 if args.quick else None}
    with workloads.dataset_workspace(args.data, limits) as data:
        print(f"data: {data.describe()}", file=sys.stderr)
        records = [run_device(device, data, args, repeats) for device in workloads.devices(args.device)]
    for record in records:
        print_table(record)
    weights = "trained checkpoints" if args.smartcash_weights or args.ultralytics_weights else "random init (seeded)"
    print(f"weights: {weights}; SmartCash {MODEL} (anchor-based, evaluated fused) vs ultralytics yolov5nu (anchor-free, fused); "
          f"ratio = time / SmartCash executor over the loader")
    info = machine_info(records[0]["device"])
    print(f"machine: {info}")
    path = write_results("validation_quick" if args.quick else "validation", {
        "machine": info, "data": data.describe(), "model": MODEL, "imgsz": IMGSZ, "batch": BATCH, "workers": WORKERS,
        "weights": weights, "repeats": repeats, "devices": records})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
