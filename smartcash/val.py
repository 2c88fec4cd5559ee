"""``python -m smartcash.val``: evaluate a checkpoint on a dataset split, print per-class metrics,
save plots and optionally the full result as JSON.

The checkpoint is loaded with ``torch.load(weights_only=True)`` (data, never code); its EMA weights
are used when present, as YOLOv5 does.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m smartcash.val", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="checkpoint (.pt) written by smartcash.train")
    parser.add_argument("--data", help="dataset yaml (default: the checkpoint's dataset, else the synthetic set)")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--imgsz", type=int, help="input size (default: the checkpoint's, else 320)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=None, help="loader processes (default min(2, cpus))")
    parser.add_argument("--device", default="", help="cpu | cuda | cuda:N | N (default: cuda if available)")
    parser.add_argument("--mode", default="coco", choices=("coco", "yolo"), help="mAP semantics")
    parser.add_argument("--conf", type=float, default=0.001, help="confidence threshold")
    parser.add_argument("--iou", type=float, default=0.6, help="NMS IoU threshold")
    parser.add_argument("--precise-bn", type=int, default=0, metavar="N",
                        help="first re-estimate BatchNorm statistics on N training images of --data (seeded); "
                        "training already does this before each validation, so 0 (default) for its checkpoints")
    parser.add_argument("--progress-interval", type=int, default=10, help="batches between progress reports")
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


def _resolve_data(argument: str | None, checkpoint: dict[str, Any]) -> Path:
    if argument:
        return Path(argument)
    saved = (checkpoint.get("config") or {}).get("data")
    if saved and Path(saved).is_file():
        return Path(saved)
    from smartcash.data.synthetic import ensure_synthetic_dataset

    return ensure_synthetic_dataset()


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch

    from smartcash.config import ConfigError, resolve_device
    from smartcash.data.dataset_config import load_dataset_config
    from smartcash.data.errors import DatasetError
    from smartcash.data.loader import build_dataloader
    from smartcash.inference import checkpoint_imgsz, load_model
    from smartcash.model.training.checkpoint import CheckpointError
    from smartcash.model.training.core.validation_executor import ValidationExecutor

    try:
        device = torch.device(resolve_device(args.device, "--device"))
        model, taxonomy, checkpoint = load_model(args.weights)
        data = _resolve_data(args.data, checkpoint)
        dataset = load_dataset_config(data, taxonomy=taxonomy if taxonomy.is_smartcash else None)
        imgsz = checkpoint_imgsz(checkpoint, args.imgsz)
        loader = build_dataloader(dataset, args.split, imgsz, args.batch, workers=args.workers)
    except (CheckpointError, ConfigError, DatasetError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if dataset.taxonomy.num_classes != model.num_classes:
        print(f"error: {data} has {dataset.taxonomy.num_classes} classes, the model predicts {model.num_classes}",
              file=sys.stderr)
        return 2
    model.to(device)
    if args.precise_bn > 0:
        try:
            _precise_bn(model, dataset, imgsz, args, checkpoint, device)
        except DatasetError as error:
            print(f"error: --precise-bn needs the training split: {error}", file=sys.stderr)
            return 2
    executor = ValidationExecutor(taxonomy, mode=args.mode, conf_threshold=args.conf, iou_threshold=args.iou,
                                  progress_interval=args.progress_interval)
    result = executor.run(model, loader, device)

    print(f"\n{data} [{args.split}]: {result.num_images} images, imgsz {imgsz}, mode {result.mode}, "
          f"{result.images_per_second:.1f} images/s")
    print("\nFine classes\n" + class_table(result.fine, taxonomy.names, result.images_per_class, result.num_images))
    print("\nMain classes\n" + class_table(result.main, taxonomy.main_names, result.images_per_main_class,
                                            result.num_images))
    denomination = result.classification.denomination
    print(f"\nDenomination (per image): accuracy {denomination.accuracy:.3f}, precision {denomination.precision:.3f}, "
          f"recall {denomination.recall:.3f}, F1 {denomination.f1:.3f}; fitness {result.fitness:.4f}")
    if not args.no_plots:
        from smartcash.plots import plot_validation

        directory = run_directory(Path(args.weights), args.split, args.project, args.name)
        paths = plot_validation(result, directory, taxonomy)
        print(f"plots: {', '.join(str(path) for path in paths)}")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
        print(f"result: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
