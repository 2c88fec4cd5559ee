"""The pieces a run is assembled from, and what it leaves behind: loaders, the model at its starting
point (fresh, phase 1's best, or ``last.pt``), the run folder, final plots and the registry entry.

Plain functions with explicit arguments; the trainer calls them from ``before_train`` and
``after_train`` and keeps what they return.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from smartcash.config import TrainConfig
from smartcash.model.training.checkpoint import CheckpointError, load_checkpoint
from smartcash.taxonomy import Taxonomy

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from smartcash.data.checks import SplitReport
    from smartcash.data.dataset import YoloDataset
    from smartcash.model.training.core.validation_executor import ValidationExecutor, ValidationResult
    from smartcash.model.training.precise_bn import PreciseBatchNorm

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunData:
    taxonomy: Taxonomy
    train_loader: DataLoader  # of Batch, over a YoloDataset
    val_loader: DataLoader | None  # rank 0 only: the full val split


@dataclass(frozen=True)
class StartPoint:
    """Where the weights come from: nothing (phase 1), phase 1's best (phase 2) or ``last.pt``."""

    state: dict[str, Any] | None
    path: Path | None
    resume: bool


def build_data(config: TrainConfig, world_size: int, is_main: bool) -> RunData:
    """Train loader (sharded under DDP) and, on rank 0, the full val loader."""
    from smartcash.data.checks import no_boxes_reason
    from smartcash.data.dataset_config import load_dataset_config
    from smartcash.data.errors import DatasetError
    from smartcash.data.loader import build_dataloader

    dataset = load_dataset_config(config.data)
    train = build_dataloader(dataset, "train", config.imgsz, config.batch, config.workers,
                             augment=config.augment, shuffle=True, seed=config.seed,
                             distributed=world_size > 1)
    empty = no_boxes_reason(dataset, train.dataset.report)  # all backgrounds: nothing to learn
    if empty:
        raise DatasetError(f"{dataset.path}: {empty}")
    _respawn_workers_each_epoch(train)
    val = None
    if is_main:
        val = build_dataloader(dataset, "val", config.imgsz, config.batch, config.workers,
                               augment=False, shuffle=False, seed=config.seed, distributed=False)
    return RunData(dataset.taxonomy, train, val)


def _respawn_workers_each_epoch(loader: Any) -> None:
    """Turn off persistent workers so every epoch's workers are seeded from that epoch's seed.

    Persistent workers carry their augmentation RNG over from the previous epoch, which a resumed
    run cannot reproduce. DataLoader forbids setting this attribute after construction, hence the
    object.__setattr__ (wanted instead: a ``persistent_workers`` argument of build_dataloader).
    """
    if getattr(loader, "persistent_workers", False):
        object.__setattr__(loader, "persistent_workers", False)


#: Outputs of an earlier run of the same name and phase that a fresh run removes (not resume).
STALE_OUTPUTS = ("events.out.tfevents.*", "labels.png", "train_batch*.jpg", "val_batch0_*.jpg")

CALIBRATION_IMAGES = 256  # BatchNorm statistics settle well before this (YOLOv5 batches are 16-64)


def find_start_point(config: TrainConfig) -> StartPoint:
    """``last.pt`` on ``--resume``; phase 1's best for phase 2; else nothing."""
    if config.resume:
        path = config.run_dir / "weights" / "last.pt"
        hint = "nothing to resume: start without --resume"
        return StartPoint(load_checkpoint(path, what="checkpoint to resume", hint=hint), path, True)
    if config.phase == 2:
        path = Path(config.weights) if config.weights else config.phase_dir(1) / "weights" / "best.pt"
        hint = (f"run `python -m smartcash.train --phase 1 --name {config.name}` first, "
                "or pass --weights")
        return StartPoint(load_checkpoint(path, what="phase 1 best checkpoint", hint=hint), path, False)
    return StartPoint(None, None, False)


@dataclass(frozen=True)
class StartingModel:
    """The model at its starting point, and whether ``--weights`` gave it a pretrained backbone."""

    model: nn.Module
    pretrained_backbone: bool


def build_detector(config: TrainConfig, taxonomy: Taxonomy, start: StartPoint, train_dataset: YoloDataset,
                   device: torch.device) -> StartingModel:
    """The model on ``device`` with its starting weights and anchors (autoanchor for a fresh phase 1)."""
    from smartcash.model.build import build_model

    if start.state is None:
        model = build_model(config.model, taxonomy.num_classes)
        loaded: tuple[str, ...] = ()
        if config.weights:
            from smartcash.model.weights import load_pretrained

            report = load_pretrained(model, config.weights)
            loaded = report.loaded
            logger.info("pretrained %s: loaded %d tensors, skipped %d, %d of ours not loaded",
                        config.weights, report.loaded_count, report.skipped_count, len(report.missing))
        if config.autoanchor:
            from smartcash.model.anchors import check_anchors

            # A head whose box outputs were learnt (loaded) keeps its anchors unless recall is low;
            # a fresh one has learnt nothing with them, so the anchors are fitted to the data.
            head_loaded = any(name.startswith("detect.convs.") for name in loaded)
            check_anchors(model, dataset_box_sizes(train_dataset, config.imgsz), config.imgsz, seed=config.seed,
                          refit="low-recall" if head_loaded else "always")
        pretrained = any(name.startswith("backbone.") and name.endswith("running_var") for name in loaded)
        return StartingModel(model.to(device), pretrained)
    state, path = start.state, start.path
    saved_names = tuple(c["name"] for c in state.get("taxonomy", {}).get("fine_classes", []))
    if saved_names and saved_names != taxonomy.names:
        raise CheckpointError(f"{path}: trained on classes {list(saved_names)}, but the dataset maps to "
                              f"{list(taxonomy.names)}; use the same dataset (or taxonomy) as phase 1")
    if state.get("model_name", config.model) != config.model:
        raise CheckpointError(f"{path}: holds a {state['model_name']} model, but --model is {config.model}")
    model = build_model(config.model, taxonomy.num_classes, anchors=state["anchors"])
    # Resume continues the raw weights (the EMA is restored separately); phase 2 starts from
    # phase 1's EMA weights, the ones that were validated and chosen as best.
    key = "model" if start.resume else "ema"
    model.load_state_dict(state[key])
    logger.info("weights: %s[%r] (epoch %d)", path, key, int(state.get("epoch", -1)))
    return StartingModel(model.to(device), False)


def build_precise_bn(config: TrainConfig, device: torch.device,
                     report: SplitReport | None = None) -> PreciseBatchNorm:
    """The precise-BatchNorm hook over a fixed sample of the (non-augmented) training split.

    ``report``: the training dataset's scan, reused so that its skipped-images warning is given once.
    """
    from smartcash.data.dataset import YoloDataset
    from smartcash.data.dataset_config import load_dataset_config
    from smartcash.model.training.precise_bn import PreciseBatchNorm

    dataset = YoloDataset(load_dataset_config(config.data), "train", config.imgsz, augment=False, report=report)
    return PreciseBatchNorm(dataset, config.precise_bn_images, config.seed, config.batch)


def estimate_random_backbone_statistics(model: nn.Module, train_dataset: YoloDataset, config: TrainConfig,
                                        device: torch.device) -> None:
    """BatchNorm statistics of a randomly initialised backbone that a recipe freezes, from up to
    CALIBRATION_IMAGES training images (evenly spaced, augmented as in training, reseeded: the
    same on every rank). Frozen with its initial statistics (mean 0, variance 1) it would give the
    neck nothing to learn from."""
    from torch.utils.data import DataLoader, Subset

    from smartcash.data.dataset import collate_batch
    from smartcash.model.freeze import estimate_backbone_statistics

    count = min(len(train_dataset), CALIBRATION_IMAGES)
    if count == 0:
        return
    indices = np.linspace(0, len(train_dataset) - 1, count).round().astype(int).tolist()
    if hasattr(train_dataset, "reseed"):
        train_dataset.reseed(config.seed)
    loader = DataLoader(Subset(train_dataset, indices), batch_size=config.batch, shuffle=False,
                        num_workers=0, collate_fn=collate_batch)
    images = estimate_backbone_statistics(model, (batch.images.to(device) for batch in loader))
    logger.warning("recipe freezes a backbone that has no pretrained weights: estimated its BatchNorm "
                   "statistics from %d training images (weights stay random); expect modest accuracy "
                   "until the backbone trains (--recipe scratch trains it from the start)", images)


def dataset_box_sizes(dataset: YoloDataset, imgsz: int) -> np.ndarray:
    """(n, 2) label (w, h) in pixels after letterboxing to ``imgsz`` (for autoanchor)."""
    from smartcash.model.anchors import scaled_box_sizes

    sizes = [np.asarray(labels, dtype=np.float64).reshape(-1, 5)[:, 3:5] for labels in dataset.labels]
    width_height = np.asarray(dataset.shapes, dtype=np.float64).reshape(-1, 2)[:, ::-1]  # (h, w) -> (w, h)
    return scaled_box_sizes(sizes, width_height, imgsz)


def prepare_run_dir(config: TrainConfig) -> None:
    """Create the run folder; a fresh run removes the previous run's weights of the same name/phase
    (so that a stale best.pt can never be picked up by phase 2)."""
    weights = config.run_dir / "weights"
    if not config.resume:
        stale = [path for path in (weights / "last.pt", weights / "best.pt") if path.exists()]
        if stale:
            logger.warning("%s: replacing the previous run of this name and phase", config.run_dir)
            for path in stale:
                path.unlink()
        # The previous run's TensorBoard events and pictures would mix with this run's.
        for pattern in STALE_OUTPUTS:
            for path in config.run_dir.glob(pattern):
                path.unlink()
    weights.mkdir(parents=True, exist_ok=True)
    # A process killed between writing and renaming leaves its hidden temp file (atomic.py): the
    # real file is intact, the temp file is garbage the size of a checkpoint.
    for folder in (weights, config.run_dir):
        for leftover in folder.glob(".*.tmp"):
            logger.info("removing %s, left by an interrupted write", leftover)
            leftover.unlink(missing_ok=True)


def write_final_plots(run_dir: Path, result: ValidationResult | None, taxonomy: Taxonomy) -> list[Path]:
    """Loss/metric curves from results.csv, and the PR curve + confusion matrix of ``result``."""
    from smartcash.model.training.curves import plot_curves

    written = [p for p in [plot_curves(run_dir / "results.csv", run_dir / "results.png")] if p]
    if result is None:
        return written
    from smartcash import plots

    written += plots.plot_validation(result, run_dir, taxonomy)
    return written


def register_run(config: TrainConfig, best_weights: Path, best_row: dict[str, float], epochs: int) -> None:
    """Add (or replace) ``NAME/phaseN`` in ``PROJECT/registry.json``."""
    from smartcash.model.training.registry import ModelRegistry, RegistryEntry

    metrics = {key: float(value) for key, value in best_row.items()
               if key.startswith(("metrics/", "val/")) or key in ("fitness", "epoch")}
    entry = RegistryEntry(id=f"{config.name}/phase{config.phase}", phase=config.phase, data=str(config.data),
                          model=config.model, weights=str(best_weights.resolve()), metrics=metrics,
                          run_dir=str(config.run_dir.resolve()), epochs=epochs)
    ModelRegistry(Path(config.project) / "registry.json").add(entry)


def validate_checkpoint(path: Path, model: nn.Module, validator: ValidationExecutor, loader: DataLoader,
                        device: torch.device) -> ValidationResult:
    """Validation result of a checkpoint's EMA weights (for the final plots after a resume)."""
    state = load_checkpoint(path)
    model.load_state_dict(state["ema"])
    return validator.run(model, loader, device)
