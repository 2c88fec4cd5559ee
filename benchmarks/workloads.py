"""What the model benchmarks share: the dataset they run on, the devices, and a clean way to call
ultralytics next to SmartCash in one process.

The dataset is copied as a tree of symbolic links (``<dir>/{train,val}/{images,labels}``) with one
``data.yaml`` that both SmartCash and ultralytics read, so both see exactly the same images and
labels, optionally the first N of each split. The label caches that both tools write land in that
temporary tree, never in the source dataset (which may be read-only or shared).

ultralytics changes process-wide state when it runs: its import sets ``OMP_NUM_THREADS=1`` (so
torch must be imported first), its ``select_device`` sets torch's CPU threads to
``min(8, cpu_count - 1)`` (1 on a 2-core machine), and its trainer turns on deterministic
algorithms. ``ultralytics_session`` pins those for one call and restores them afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch  # before ultralytics, whose import would set OMP_NUM_THREADS=1 for torch
import yaml

os.environ.setdefault("YOLO_OFFLINE", "1")  # ultralytics: no settings sync, no downloads
os.environ.setdefault("YOLO_VERBOSE", "False")  # its per-batch bars and tables would bury ours

#: Where ``--data vnd`` finds the VND Roboflow export's data.yaml (SmartCash resolves its Colab paths).
VND_DATA_VARIABLE = "SMARTCASH_VND_DATA"
SPLITS = (("train", "train"), ("val", "val"))  # (SmartCash split, folder in the link tree)


def add_common_arguments(parser: argparse.ArgumentParser, repeats: int = 5) -> None:
    parser.add_argument("--quick", action="store_true", help="small sizes and fewer repeats (a smoke run)")
    parser.add_argument("--device", default=None,
                        help="cpu | cuda | cuda:N; default: cpu, and cuda too when it is available")
    parser.add_argument("--repeats", type=int, default=None, help=f"timed runs after warm-up (default {repeats}, "
                                                                   "fewer with --quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for SmartCash and the 'as smartcash' peer rows (default: torch's, "
                             "one per core; on a shared machine 1 gives steadier numbers)")


def apply_threads(threads: int | None) -> None:
    """--threads: set torch's CPU thread count for the whole run (before anything is measured)."""
    if threads is not None:
        if threads < 1:
            raise SystemExit("--threads must be >= 1")
        torch.set_num_threads(threads)


def devices(requested: str | None) -> list[str]:
    """The devices to measure on: the one asked for, else cpu (+ cuda when present)."""
    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise SystemExit(f"--device {requested}: torch sees no CUDA device")
        return [requested]
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def synchronize(device: str | torch.device) -> None:
    """Wait for queued GPU work, so a timer read after it measures the work itself."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def ultralytics_device(device: str) -> str:
    """Our device string in ultralytics' spelling: ``cpu``, or the CUDA index (``cuda:1`` -> ``1``)."""
    parsed = torch.device(device)
    return "cpu" if parsed.type == "cpu" else str(parsed.index or 0)


def resolve_data(name: str) -> Path:
    """``synthetic`` (SmartCash's built-in default set), ``synthetic-large`` (its notes cropped to fill
    the frame: benchmarks/large_objects.py), ``vnd`` (the shipped Roboflow export), or a data.yaml."""
    if name == "synthetic":
        from smartcash.data.synthetic import ensure_synthetic_dataset

        return ensure_synthetic_dataset()
    if name == "synthetic-large":
        from benchmarks.large_objects import ensure_large_object_dataset

        return ensure_large_object_dataset()
    if name == "vnd":
        location = os.environ.get(VND_DATA_VARIABLE)
        if not location or not Path(location).is_file():
            raise SystemExit(f"--data vnd: set {VND_DATA_VARIABLE} to the export's data.yaml "
                             f"(now {location or 'unset'}), or pass the data.yaml itself")
        return Path(location)
    path = Path(name)
    if not path.is_file():
        raise SystemExit(f"--data {name}: not 'synthetic', 'synthetic-large', 'vnd' or an existing data.yaml")
    return path


@dataclass(frozen=True)
class BenchData:
    """A dataset laid out for both tools. ``data_yaml`` works for SmartCash and ultralytics alike."""

    source: str  # what --data named
    source_yaml: Path
    data_yaml: Path
    root: Path
    names: tuple[str, ...]  # the dataset's own class names (ultralytics trains on these)
    num_classes: int  # SmartCash's taxonomy size for it (17 for names that map onto the Rupiah taxonomy)
    num_images: dict[str, int]  # per split

    def describe(self) -> str:
        counts = ", ".join(f"{split} {count}" for split, count in self.num_images.items())
        return f"{self.source} ({self.source_yaml}): {counts} images, {len(self.names)} classes"


def prepare_dataset(source: str, directory: Path, limits: dict[str, int | None] | None = None) -> BenchData:
    """Link the first ``limits[split]`` images (all when None) of each split, with their labels,
    into ``directory`` and write its data.yaml (paths relative to an explicit ``path:`` root)."""
    from smartcash.data.dataset_config import load_dataset_config

    source_yaml = resolve_data(source)
    config = load_dataset_config(source_yaml)
    raw = yaml.safe_load(source_yaml.read_text(encoding="utf-8")) or {}
    counts = {}
    for split, folder in SPLITS:
        images = config.images(split)[: (limits or {}).get(split) or None]
        image_dir, label_dir = directory / folder / "images", directory / folder / "labels"
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(images):
            name = image.name if not (image_dir / image.name).exists() else f"{index:06d}_{image.name}"
            (image_dir / name).symlink_to(image.resolve())
            label = config.label_path(image)
            if label.is_file():  # no label file: a background image, for both tools
                (label_dir / f"{Path(name).stem}.txt").symlink_to(label.resolve())
        counts[split] = len(images)
    names = tuple(config.source_names)
    data = {"path": str(directory.resolve()), "train": "train/images", "val": "val/images",
            "names": {index: name for index, name in enumerate(names)}}
    if raw.get("class_map"):
        data["class_map"] = raw["class_map"]  # SmartCash's name mapping; ultralytics ignores the key
    data_yaml = directory / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return BenchData(source, source_yaml, data_yaml, directory, names, config.taxonomy.num_classes, counts)


@contextlib.contextmanager
def dataset_workspace(source: str, limits: dict[str, int | None] | None = None,
                      keep: bool = False) -> Iterator[BenchData]:
    """``prepare_dataset`` in a temporary folder, removed afterwards unless ``keep``."""
    directory = Path(tempfile.mkdtemp(prefix="smartcash-bench-"))
    try:
        yield prepare_dataset(source, directory / "data", limits)
    finally:
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)


def quiet_logging() -> None:
    """Library INFO logs off (the CLIs would otherwise print a line per epoch): tables stay readable."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("smartcash").setLevel(logging.WARNING)


@dataclass
class UltralyticsThreads:
    """What torch threads ultralytics actually ran with (read inside its callbacks)."""

    used: int | None = None


@contextlib.contextmanager
def ultralytics_session(threads: int | None) -> Iterator[UltralyticsThreads]:
    """Run ultralytics with ``threads`` torch CPU threads (None: its own choice, min(8, cores - 1)),
    then restore torch's thread count and determinism flags for the SmartCash code that follows."""
    from ultralytics.utils import torch_utils

    saved_threads, saved_setting = torch.get_num_threads(), torch_utils.NUM_THREADS
    saved_deterministic = torch.are_deterministic_algorithms_enabled()
    saved_cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    if threads is not None:
        torch_utils.NUM_THREADS = threads  # select_device() calls torch.set_num_threads(NUM_THREADS)
    try:
        yield UltralyticsThreads()
    finally:
        torch_utils.NUM_THREADS = saved_setting
        torch.set_num_threads(saved_threads)
        torch.use_deterministic_algorithms(saved_deterministic)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved_cudnn


def ultralytics_thread_variants(quick: bool) -> list[tuple[str, int | None]]:
    """(label, threads) for the ultralytics rows: SmartCash's thread count, and ultralytics' own
    default when that differs (left out of --quick runs to save time)."""
    from ultralytics.utils import torch_utils

    ours, theirs = torch.get_num_threads(), torch_utils.NUM_THREADS
    variants: list[tuple[str, int | None]] = [(f"threads={ours} (as smartcash)", ours)]
    if theirs != ours and not quick:
        variants.append((f"threads={theirs} (its default)", None))
    return variants


def ultralytics_model(num_classes: int, seed: int = 0) -> Any:
    """``YOLO('yolov5nu.yaml')`` (random init, seeded) with a head for ``num_classes`` classes."""
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = YOLO("yolov5nu.yaml")
    model.model = DetectionModel("yolov5nu.yaml", nc=num_classes, verbose=False)
    return model
