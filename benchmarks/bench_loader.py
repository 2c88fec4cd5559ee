"""Loader benchmark: SmartCash's training loader vs the training step rate: is the loader the bottleneck?

The training loader (augmentation on) with 0 and 2 workers, against the rate of the training step
alone on batches already in memory, and against ultralytics' training loader on the same images.

    python -m benchmarks.bench_loader [--quick] [--device cpu|cuda] [--data synthetic|vnd|DATA.yaml]
                                      [--cache none ram disk]

Rows (images/s over one pass of the train split, median of --repeats passes after a warm-up pass;
for the persistent loaders timed alone also the CPU milliseconds per image of this process and its
workers together, a steadier figure than images/s where other jobs share the machine):
- ``smartcash loader``: ``build_dataloader(augment=True, shuffle=True)`` iterated, each Batch
  moved to the device and nothing else: read + decode + mosaic/affine/colour/blur + letterbox +
  collate (float [0, 1]). ``persistent`` keeps its workers between passes, as the Trainer does
  (every sample is seeded from (seed, epoch, index), so workers need no restart for a resume to
  replay an epoch), and each pass is the next epoch, started as the last one ends
  (``TrainerPasses``: the Trainer starts epoch e + 1 before it validates epoch e), timed alone as
  ultralytics' loaders are (its never-ending loader runs on into the next pass the same way);
  ``respawned`` starts them every pass, as the Trainer did before: the start-up
  is then in every epoch. ``cache=ram`` / ``cache=disk`` (``--cache``, default all three): the
  same loader with its decoded-image cache (``smartcash.data.image_cache``), filled before the
  timing (``cache_fill_s`` in the results: building the loader, the fill included; disk: files
  written into the temporary copy of the dataset). The row of the Trainer's default cache
  (configs/default.yaml) is marked ``(as the Trainer)``; times are relative to ``cache=none``.
- ``ultralytics loader``: its ``build_yolo_dataset(mode='train')`` + ``build_dataloader`` with its
  default augmentation (mosaic, random perspective, HSV, flips), persistent workers; it hands
  over uint8 images (its trainer converts them on the device). With ``--cache ram|disk`` also
  its workers=2 loader with the same ``cache`` setting.
- ``training step``: ``trainer.optimization_step`` (forward, loss, backward, and every
  nominal_batch/batch steps: clip, AdamW step, EMA) plus the LR schedule, over pre-loaded
  batches: the rate the model can consume data at. Phase 1 (backbone frozen) and phase 2.
- ``loader + step``: the two together as in a training epoch (loader with 2 persistent workers,
  phase 1 step): on a small CPU machine the workers and the step compete for the same cores.
  Also with each ``--cache`` mode.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch

from benchmarks import workloads
from benchmarks.common import format_table, machine_info, time_call, time_interleaved, write_results
from benchmarks.workloads import synchronize
from smartcash.data.image_cache import CACHE_MODES

IMGSZ, BATCH, MODEL = 320, 16, "yolov5n"


def trainer_cache() -> str:
    """The Trainer's default image cache (configs/default.yaml)."""
    from smartcash.config import default_values

    return str(default_values()["cache"])


def loader_row(cache: str) -> str:
    """Row name of SmartCash's loader with 2 persistent workers and ``cache``; the Trainer's is marked."""
    return f"smartcash loader, workers=2, persistent, cache={cache}" + (
        " (as the Trainer)" if cache == trainer_cache() else "")


def loader_pass(loader: Any, device: str) -> int:
    """One pass over a SmartCash loader (or one epoch's iterator), each Batch copied to the device. Returns images."""
    images = 0
    for batch in loader:
        images += len(batch.to(device).images)
    synchronize(device)
    return images


class TrainerPasses:
    """Passes over a training loader made as the Trainer makes its epochs: the workers get the next
    epoch (``start_epoch``) as soon as the last batch of one is taken (the Trainer then validates
    meanwhile), so a pass starts with its first batches under way, as each pass of ultralytics'
    never-ending loader does. Each pass is the next epoch (its own samples)."""

    def __init__(self, loader: Any, device: str) -> None:
        from smartcash.data.loader import start_epoch

        self.start_epoch = start_epoch
        self.loader, self.device, self.epoch = loader, device, 0
        self.batches: Any = None  # the first call (the warm-up pass) starts the workers

    def __call__(self) -> int:
        if self.batches is None:
            self.batches = self.start_epoch(self.loader, self.epoch)
        images = loader_pass(self.batches, self.device)
        self.epoch += 1
        self.batches = self.start_epoch(self.loader, self.epoch)
        return images


def process_tree_cpu_s() -> float:
    """CPU seconds (user + system) of this process and of its live child processes (loader workers)."""
    import psutil  # ultralytics' dependency: there wherever this benchmark runs

    total = 0.0
    me = psutil.Process()
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def timed_with_cpu(function: Any, repeats: int) -> tuple[tuple[Any, int], float]:
    """``time_call`` of a persistent loader's passes, and the CPU milliseconds per image they took in
    this process and its workers: on a machine other jobs load, a steadier figure than images/s."""
    function()  # warm-up: the workers start, the first pass is made
    before = process_tree_cpu_s()
    timing, images = time_call(function, repeats=repeats, warmup=0)
    return (timing, images), (process_tree_cpu_s() - before) * 1e3 / (images * repeats)


def ultralytics_pass(loader: Any, device: str) -> int:
    """One pass, each batch made the model's input as ultralytics' DetectionTrainer.preprocess does
    (copy, then float / 255 on the device): the same work ``Batch.to`` does for SmartCash."""
    images = 0
    for batch in loader:
        images += len(batch["img"].to(device, non_blocking=True).float() / 255)
    synchronize(device)
    return images


class StepRunner:
    """The training step of one phase, as ``Trainer.train_one_epoch`` runs it, on any batches."""

    def __init__(self, phase: int, num_classes: int, device: str, batches_per_epoch: int) -> None:
        from smartcash.config import build_config
        from smartcash.model.build import build_model
        from smartcash.model.loss import YoloLoss
        from smartcash.model.training.optim import ModelEMA
        from smartcash.model.training.phases import enter_phase
        from smartcash.model.training.precision import training_precision
        from smartcash.model.training.recipe import load_recipe
        from smartcash.taxonomy import load_loss_config

        self.config = build_config(["--device", device, "--imgsz", str(IMGSZ), "--batch", str(BATCH)])
        torch.manual_seed(0)
        self.model = build_model(MODEL, num_classes).to(device)
        self.precision = training_precision(self.config.amp, torch.device(device))  # as the Trainer
        if self.precision.amp:
            self.model.to(memory_format=torch.channels_last)
        # The finetune recipe's phases: 1 = backbone frozen, 2 = every layer.
        self.setup = enter_phase(phase, self.model, self.config, load_recipe("finetune").phase(phase),
                                 batches_per_epoch)
        self.loss = YoloLoss(self.model, load_loss_config())
        self.scaler = torch.amp.GradScaler(torch.device(device).type, enabled=self.precision.needs_grad_scaler)
        self.ema = ModelEMA(self.model, self.config.ema_decay, self.config.ema_tau)
        self.accumulate = self.setup.schedule.accumulate
        self.device = device
        self.iteration = 0

    def run(self, batches: Any) -> int:
        """One pass: schedule + optimization_step per batch (update every ``accumulate``). Returns images."""
        from smartcash.model.training.step import optimization_step

        self.model.train()
        images = 0
        for index, batch in enumerate(batches):
            self.setup.schedule.apply(self.setup.optimizer, self.iteration, 0)
            batch = batch.to(self.device)
            images_in = batch.images.contiguous(memory_format=torch.channels_last) if self.precision.amp else batch.images
            update = (index + 1) % self.accumulate == 0
            optimization_step(self.model, images_in, batch.targets, self.loss, self.setup.optimizer, self.scaler,
                              self.ema, update=update, clip_grad_norm=self.config.clip_grad_norm,
                              amp=self.precision.amp, amp_dtype=self.precision.dtype or torch.float32,
                              where=(0, index))
            images += len(batch.images)
            self.iteration += 1
        synchronize(self.device)
        return images


def ultralytics_loader(data: workloads.BenchData, workers: int, cache: str = "none") -> Any:
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader, build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    config = get_cfg(overrides={"imgsz": IMGSZ, "batch": BATCH, "workers": workers,
                                "cache": False if cache == "none" else cache})
    dataset_info = check_det_dataset(str(data.data_yaml))
    dataset = build_yolo_dataset(config, dataset_info["train"], BATCH, dataset_info, mode="train", stride=32)
    return build_dataloader(dataset, BATCH, workers, shuffle=True)


def run_device(device: str, data: workloads.BenchData, args: argparse.Namespace, repeats: int) -> dict[str, Any]:
    from smartcash.data.dataset_config import load_dataset_config
    from smartcash.data.loader import build_dataloader

    config = load_dataset_config(data.data_yaml)

    def smartcash_loader(workers: int, augment: bool = True, persistent_workers: bool = True,
                         cache: str = "none") -> Any:
        return build_dataloader(config, "train", IMGSZ, BATCH, workers=workers, augment=augment, shuffle=True, seed=0,
                                persistent_workers=persistent_workers, cache=cache)

    in_memory = [batch.to(device) for batch in smartcash_loader(0)]  # one augmented epoch, kept
    num_images = sum(len(batch.images) for batch in in_memory)
    steps = {phase: StepRunner(phase, config.taxonomy.num_classes, device, len(in_memory)) for phase in (1, 2)}
    def one_pass(loader: Any) -> Any:
        return lambda: loader_pass(loader, device)

    persistent = smartcash_loader(2)  # as the Trainer builds it, less the image cache
    functions = {
        "smartcash loader, workers=0": one_pass(smartcash_loader(0)),
        "smartcash loader, workers=2, respawned": one_pass(smartcash_loader(2, persistent_workers=False)),
    }
    pipelined = {loader_row("none"): TrainerPasses(persistent, device)}
    cache_fill_s, cached = {}, {}
    for cache in (mode for mode in args.cache if mode != "none"):
        started = time.perf_counter()
        cached[cache] = smartcash_loader(2, cache=cache)
        cache_fill_s[cache] = time.perf_counter() - started
        pipelined[loader_row(cache)] = TrainerPasses(cached[cache], device)
    if not args.quick:
        functions["smartcash loader, no augmentation, workers=0"] = one_pass(smartcash_loader(0, augment=False))
    loaders = time_interleaved(functions, repeats=repeats)
    cpu_ms: dict[str, float] = {}  # CPU per image, this process and its workers, on the rows timed alone
    for name, passes in pipelined.items():
        # Timed alone, as ultralytics' loaders below: the next epoch's first batches are made
        # between two passes, which would otherwise be inside another row's timing.
        loaders[name], cpu_ms[name] = timed_with_cpu(passes, repeats)
    with workloads.ultralytics_session(torch.get_num_threads()):
        peers = [(0, "none"), (2, "none")] + [(2, mode) for mode in args.cache if mode != "none"]
        for workers, cache in peers:
            # Timed alone, then closed: its infinite loader's workers keep prefetching the next
            # epoch after a pass, which would steal the CPU from whatever is timed next.
            loader = ultralytics_loader(data, workers, cache)
            name = f"ultralytics loader, workers={workers}, persistent"
            name += f", cache={cache}" if cache != "none" else ""
            loaders[name], cpu_ms[name] = timed_with_cpu(lambda: ultralytics_pass(loader, device), repeats)
            loader.close()
    step_functions = {
        "training step, phase 1 (backbone frozen), in memory": lambda: steps[1].run(in_memory),
        "training step, phase 2 (all layers), in memory": lambda: steps[2].run(in_memory),
        "loader (workers=2, persistent) + phase 1 step": lambda: steps[1].run(persistent),
    }
    for cache, loader in cached.items():  # does the cache change what training sees per second?
        step_functions[f"loader (workers=2, persistent, cache={cache}) + phase 1 step"] = (
            lambda loader=loader: steps[1].run(loader))
    timed = {**loaders, **time_interleaved(step_functions, repeats=repeats)}
    reference = timed[loader_row("none")][0].median_s
    tools = {}
    for name, (timing, images) in timed.items():
        tools[name] = {"median_s": timing.median_s, "min_s": timing.min_s, "runs_s": timing.runs_s,
                       "images": images, "images_per_s": images / timing.median_s,
                       "ratio_to_smartcash": timing.median_s / reference}
        if name in cpu_ms:
            tools[name]["cpu_ms_per_image"] = cpu_ms[name]
    trainer = loader_row(trainer_cache()) if trainer_cache() in cached else loader_row("none")
    loader_rate = tools[trainer]["images_per_s"]
    step_rate = tools["training step, phase 1 (backbone frozen), in memory"]["images_per_s"]
    return {"device": device, "images_per_pass": num_images, "tools": tools, "cache_fill_s": cache_fill_s,
            "loader_for_step_ratio": trainer,
            "loader_over_step_phase1": loader_rate / step_rate,
            "loader_over_step_phase2": loader_rate / tools["training step, phase 2 (all layers), in memory"]["images_per_s"]}


def print_table(record: dict[str, Any]) -> None:
    rows = [[name, tool["median_s"], tool["min_s"], f"{tool['ratio_to_smartcash']:.2f}x", f"{tool['images_per_s']:.1f}",
             f"{tool['cpu_ms_per_image']:.2f}" if "cpu_ms_per_image" in tool else ""]
            for name, tool in record["tools"].items()]
    print(f"\nloader vs training step on {record['device']}: {record['images_per_pass']} images per pass, "
          f"{MODEL} imgsz {IMGSZ} batch {BATCH}, augmentation on")
    print(format_table(["tool", "time_s (median)", "min_s", "vs smartcash, cache=none", "images/s",
                        "CPU ms/image (main + workers)"], rows))
    for cache, seconds in record["cache_fill_s"].items():
        print(f"cache={cache}: loader built and its cache filled in {seconds:.2f} s")
    for phase in (1, 2):
        ratio = record[f"loader_over_step_phase{phase}"]
        verdict = "the loader is the bottleneck" if ratio < 1 else "the step is the bottleneck"
        print(f"{record['loader_for_step_ratio']} / phase {phase} step rate = {ratio:.2f}: {verdict} "
              f"(when both get the machine alone)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    workloads.add_common_arguments(parser)
    parser.add_argument("--data", default="synthetic", help="synthetic (default) | synthetic-large | vnd | path to a data.yaml")
    parser.add_argument("--cache", nargs="+", choices=CACHE_MODES, default=list(CACHE_MODES),
                        help="SmartCash image caches to time besides none, the reference (default: all); "
                             "ram/disk also time ultralytics' loader with the same cache")
    parser.add_argument("--train-images", type=int, default=None,
                        help="use the first N train images (default 160; 64 with --quick)")
    args = parser.parse_args(argv)
    workloads.apply_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 5)
    workloads.quiet_logging()
    limits = {"train": args.train_images or (64 if args.quick else 160), "val": 1}
    with workloads.dataset_workspace(args.data, limits) as data:
        print(f"data: {data.describe()}", file=sys.stderr)
        records = [run_device(device, data, args, repeats) for device in workloads.devices(args.device)]
        description = data.describe()
    for record in records:
        print_table(record)
    info = machine_info(records[0]["device"])
    print(f"machine: {info}")
    path = write_results("loader_quick" if args.quick else "loader", {
        "machine": info, "data": description, "model": MODEL, "imgsz": IMGSZ, "batch": BATCH, "repeats": repeats,
        "devices": records})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
