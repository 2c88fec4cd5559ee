"""``python -m smartcash.val``: evaluate a checkpoint on a dataset split, print per-class metrics,
save plots and optionally the full result as JSON; ``validate(**flags)`` does the same from Python
(``from smartcash import validate``) and returns the result.

The checkpoint is loaded with ``torch.load(weights_only=True)`` (data, never code); its EMA weights
are used when present, as YOLOv5 does. The dataset's classes are mapped by name onto the
checkpoint's and must be the same. Exit codes (``smartcash.cli``): 0 done, 1 an unreadable
checkpoint or a result file that could not be written, 2 bad flags, missing weights or a bad
dataset, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    from smartcash.config import default_values

    defaults = default_values()  # configs/default.yaml: the trainer's validator uses the same numbers
    parser = argparse.ArgumentParser(prog="python -m smartcash.val", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="checkpoint (.pt) written by smartcash.train")
    parser.add_argument("--data", help="dataset yaml (default: the checkpoint's dataset, else the synthetic set)")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--imgsz", type=int, help="input size (default: the checkpoint's, else imgsz_cpu "
                        "of configs/default.yaml)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=None, help="loader processes (default min(2, cpus))")
    parser.add_argument("--device", default="", help="cpu | cuda | cuda:N | N (default: cuda if available)")
    parser.add_argument("--mode", default="coco", choices=("coco", "yolo"), help="mAP semantics")
    parser.add_argument("--conf", type=float, default=defaults["val_conf"], help="confidence threshold")
    parser.add_argument("--iou", type=float, default=defaults["val_iou"], help="NMS IoU threshold")
    parser.add_argument("--precise-bn", type=int, default=0, metavar="N",
                        help="first re-estimate BatchNorm statistics on N training images of --data (seeded); "
                        "training already does this before each validation, so 0 (default) for its checkpoints")
    parser.add_argument("--progress-interval", type=int, default=10, help="batches between refreshes of the bar's loss")
    parser.add_argument("--json", help="write the full result to this JSON file")
    parser.add_argument("--project", default="runs", help="runs root for weights outside a run dir")
    parser.add_argument("--name", default="exp", help="PROJECT/val/NAME when the weights are outside a run dir")
    parser.add_argument("--no-plots", action="store_true", help="skip the PR-curve and confusion-matrix PNGs")
    return parser


def run_directory(weights: Path, split: str, project: str, name: str) -> Path:
    """``<run dir>/val_<split>`` for weights inside ``<run dir>/weights/``, else ``PROJECT/val/NAME``."""
    if weights.parent.name == "weights":
        return weights.parent.parent / f"val_{split}"
    return Path(project) / "val" / name


def _cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def class_table(map_result: Any, names: tuple[str, ...], images_per_class: np.ndarray, num_images: int) -> str:
    """YOLOv5-style table: class, images, instances, P, R, mAP50, mAP50-95; "all" first."""
    header = f"{'Class':>24} {'Images':>8} {'Instances':>10} {'P':>7} {'R':>7} {'mAP50':>7} {'mAP50-95':>9}"
    lines = [header, f"{'all':>24} {num_images:>8} {int(map_result.num_targets_per_class.sum()):>10} "
             f"{_cell(map_result.mean_precision):>7} {_cell(map_result.mean_recall):>7} "
             f"{_cell(map_result.map50):>7} {_cell(map_result.map50_95):>9}"]
    for index, class_name in enumerate(names):
        if map_result.num_targets_per_class[index] == 0 and map_result.num_predictions_per_class[index] == 0:
            continue
        lines.append(f"{class_name:>24} {int(images_per_class[index]):>8} "
                     f"{int(map_result.num_targets_per_class[index]):>10} {_cell(map_result.precision[index]):>7} "
                     f"{_cell(map_result.recall[index]):>7} {_cell(map_result.ap50[index]):>7} "
                     f"{_cell(map_result.ap50_95[index]):>9}")
    return "\n".join(lines)


def _resolve_data(argument: str | None, checkpoint: dict[str, Any], weights: str) -> Path:
    """``--data``, else the dataset the checkpoint trained on; the synthetic set only when that was
    the built-in one (regenerated if its cache was cleared) or the checkpoint names none."""
    from smartcash.cli import UsageError
    from smartcash.data.synthetic import ensure_synthetic_dataset, is_builtin_synthetic

    if argument:
        return Path(argument)
    saved = (checkpoint.get("config") or {}).get("data")
    if saved and Path(saved).is_file():
        return Path(saved)
    if saved and not is_builtin_synthetic(saved):
        raise UsageError(f"{weights} was trained on {saved}, which no longer exists; pass --data with "
                         "that dataset's yaml (the built-in synthetic set would give other numbers)")
    return ensure_synthetic_dataset()


def _check_class_names(data: Path, dataset_names: tuple[str, ...], model_names: tuple[str, ...],
                       weights: str) -> None:
    """The dataset's classes (after mapping by name) must be the checkpoint's, in its order."""
    from smartcash.cli import UsageError

    if dataset_names != model_names:
        raise UsageError(f"{data}: its classes {list(dataset_names)} are not the classes {weights} was trained on "
                         f"{list(model_names)}; evaluate with that dataset, or map the names with a class_map in "
                         "the yaml")


def _check_arguments(args: argparse.Namespace) -> None:
    """Raises UsageError for a bad flag (exit 2), CheckpointError for weights that are no checkpoint (exit 1)."""
    from smartcash.cli import (at_least, checkpoint_file, image_size, in_range, input_file, output_file,
                               plain_folder_name)

    input_file("--weights", args.weights)
    if args.data:
        input_file("--data", args.data)  # missing: a wrong input (exit 2); a broken dataset: exit 1, as training
    plain_folder_name("--name", args.name)
    at_least("--batch", args.batch, 1)
    at_least("--workers", args.workers, 0)
    image_size("--imgsz", args.imgsz)
    at_least("--precise-bn", args.precise_bn, 0)
    at_least("--progress-interval", args.progress_interval, 1)
    in_range("--conf", args.conf, 0.0, 1.0, high_open=True)
    in_range("--iou", args.iou, 0.0, 1.0, low_open=True)
    if args.json:
        output_file("--json", args.json, inputs=[args.weights, *([args.data] if args.data else [])],
                    suffixes=(".json",))
    checkpoint_file("--weights", args.weights)  # last: a wrong flag is reported first


def _precise_bn(model: Any, dataset: Any, imgsz: int, args: argparse.Namespace, checkpoint: dict[str, Any],
                device: Any) -> None:
    """Re-estimate the model's BatchNorm statistics on ``args.precise_bn`` training images; a backbone
    that its training phase kept frozen keeps its statistics, as in training."""
    from smartcash.data.dataset import YoloDataset
    from smartcash.model.training.precise_bn import PreciseBatchNorm

    recipe = checkpoint.get("recipe") or {}
    phase = f"phase{checkpoint.get('phase', 1)}"
    model.backbone_norm_frozen = bool((recipe.get(phase) or {}).get("freeze_backbone", False))
    seed = int((checkpoint.get("config") or {}).get("seed", 0))
    hook = PreciseBatchNorm(YoloDataset(dataset, "train", imgsz, augment=False), args.precise_bn, seed, args.batch)
    report = hook(model, device)
    model.eval()
    print(f"precise BN: {report.layers} BatchNorm layers re-estimated on {report.images} training images "
          f"in {report.seconds:.1f} s")


@dataclass(frozen=True)
class Evaluation:
    """What ``evaluate_checkpoint`` measured, with what it needs to report it."""

    result: Any  # ValidationResult: .metrics (.fine / .main MapResult, .classification, losses), .fitness
    taxonomy: Any
    data: Path
    imgsz: int


def evaluate_checkpoint(args: argparse.Namespace) -> Evaluation:
    """Validate ``args.weights`` on ``args.split`` of the dataset: the measuring part of
    ``python -m smartcash.val`` (nothing printed, nothing written).

    Raises:
        UsageError: bad flags, missing weights or dataset yaml, other classes (the CLI's exit 2).
        DatasetError: a dataset that cannot be evaluated: a bad yaml, a split not found or without a
            usable image (exit 1, as training reports it).
        CheckpointError: the weights file is no SmartCash checkpoint, or an unreadable one (exit 1).
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch

    from smartcash.cli import UsageError
    from smartcash.config import ConfigError, default_values, resolve_device
    from smartcash.data.dataset_config import load_dataset_config
    from smartcash.data.errors import DatasetError
    from smartcash.data.loader import build_dataloader
    from smartcash.inference import checkpoint_imgsz, load_model
    from smartcash.model.training.core.validation_executor import ValidationExecutor, ValidationSettings

    _check_arguments(args)
    try:
        device = torch.device(resolve_device(args.device, "--device"))
    except ConfigError as error:
        raise UsageError(str(error)) from error
    model, taxonomy, checkpoint = load_model(args.weights)  # CheckpointError: unreadable, exit 1
    try:
        data = _resolve_data(args.data, checkpoint, args.weights)
        dataset = load_dataset_config(data, taxonomy=taxonomy)
        _check_class_names(data, dataset.taxonomy.names, taxonomy.names, args.weights)
        loader = build_dataloader(dataset, args.split, checkpoint_imgsz(checkpoint, args.imgsz), args.batch,
                                  workers=args.workers)
    except (ConfigError, FileNotFoundError) as error:
        raise UsageError(str(error)) from error
    imgsz = loader.dataset.imgsz  # the size used: the dataset rounds --imgsz up to a multiple of 32
    if dataset.taxonomy.num_classes != model.num_classes:
        raise UsageError(f"{data} has {dataset.taxonomy.num_classes} classes, the model predicts {model.num_classes}")
    model.to(device)
    if args.precise_bn > 0:
        try:
            _precise_bn(model, dataset, imgsz, args, checkpoint, device)
        except DatasetError as error:
            raise UsageError(f"--precise-bn needs the training split: {error}") from error
    settings = ValidationSettings.from_values({**default_values(), "val_conf": args.conf, "val_iou": args.iou})
    executor = ValidationExecutor(taxonomy, settings=settings, mode=args.mode, progress_interval=args.progress_interval)
    return Evaluation(executor.run(model, loader, device), taxonomy, data, imgsz)


def write_outputs(args: argparse.Namespace, evaluation: Evaluation) -> tuple[list[Path], Path | None]:
    """The plots (unless ``--no-plots``) and the ``--json`` file; (plot paths, JSON path or None).

    Raises:
        OSError: a file could not be written (it names the file).
    """
    from smartcash.atomic import atomic_write_text

    plots: list[Path] = []
    if not args.no_plots:
        from smartcash.plots import plot_validation

        directory = run_directory(Path(args.weights), args.split, args.project, args.name)
        plots = plot_validation(evaluation.result, directory, evaluation.taxonomy)
    if args.json:
        atomic_write_text(args.json, json.dumps(evaluation.result.to_dict(), indent=2) + "\n")
    return plots, Path(args.json) if args.json else None


def validate(**flags: Any) -> Any:
    """Validate a checkpoint from Python: ``validate(weights="best.pt", data="data.yaml")``.

    Keywords are the flags of ``python -m smartcash.val`` without their dashes (``no_plots=True``,
    ``precise_bn=128`` ...), with the same defaults; plots and ``json=`` are written as the CLI does.

    Returns:
        ValidationResult: ``.metrics.fine`` and ``.metrics.main`` (``MapResult``: map50, map50_95,
        per-class AP ...), ``.metrics.classification`` (denomination accuracy, confusion matrix),
        losses, ``.fitness``.

    Raises:
        TypeError: an unknown keyword. UsageError (ValueError): bad flags, missing weights or dataset
        yaml. DatasetError (ValueError): a dataset that cannot be evaluated. CheckpointError
        (RuntimeError): an unreadable checkpoint. OSError: a plot or the JSON could not be written.
    """
    from smartcash.cli import parse_keywords

    args = parse_keywords(build_parser(), flags, "validate")
    evaluation = evaluate_checkpoint(args)
    write_outputs(args, evaluation)
    return evaluation.result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from smartcash.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError, print_error
    from smartcash.data.errors import DatasetError
    from smartcash.model.training.checkpoint import CheckpointError

    try:
        evaluation = evaluate_checkpoint(args)
    except UsageError as error:
        print_error(error)
        return EXIT_USAGE
    except (CheckpointError, DatasetError) as error:  # there but unreadable or broken: as training, exit 1
        print_error(error)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted: validation stopped, nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    result, taxonomy = evaluation.result, evaluation.taxonomy
    metrics = result.metrics
    print(f"\n{evaluation.data} [{args.split}]: {metrics.num_images} images, imgsz {evaluation.imgsz}, mode "
          f"{result.mode}, {result.images_per_second:.1f} images/s")
    print("\nFine classes\n" + class_table(metrics.fine, taxonomy.names, metrics.images_per_class, metrics.num_images))
    print("\nMain classes\n" + class_table(metrics.main, taxonomy.main_names, metrics.images_per_main_class,
                                            metrics.num_images))
    denomination = metrics.classification.denomination
    print(f"\nDenomination (per image): accuracy {denomination.accuracy:.3f}, precision {denomination.precision:.3f}, "
          f"recall {denomination.recall:.3f}, F1 {denomination.f1:.3f}; fitness {result.fitness:.4f}")
    try:
        plots, json_path = write_outputs(args, evaluation)
    except OSError as error:  # a full disk, a folder removed meanwhile: the error names the file
        print_error(f"{error} (the metrics above were computed; that file was not written)")
        return EXIT_FAILED
    if plots:
        print(f"plots: {', '.join(str(path) for path in plots)}")
    if json_path:
        print(f"result: {json_path}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
