"""The model a run starts from: fresh (pretrained backbone and autoanchor), phase 1's best, or
``last.pt``; and the BatchNorm statistics of a random backbone that a recipe freezes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from smartcash.config import TrainConfig
from smartcash.model.training.checkpoint import CheckpointError, StartPoint
from smartcash.taxonomy import Taxonomy

if TYPE_CHECKING:
    from smartcash.data.dataset import YoloDataset

logger = logging.getLogger(__name__)

CALIBRATION_IMAGES = 256  # BatchNorm statistics settle well before this (YOLOv5 batches are 16-64)


@dataclass(frozen=True)
class StartingModel:
    """The model at its starting point, and whether ``--weights`` gave it a pretrained backbone."""

    model: nn.Module
    pretrained_backbone: bool
    backbone_trained_on: str = ""  # the dataset yaml of the SmartCash checkpoint --weights came from


def build_detector(config: TrainConfig, taxonomy: Taxonomy, start: StartPoint, train_dataset: YoloDataset,
                   device: torch.device) -> StartingModel:
    """The model on ``device`` with its starting weights and anchors (autoanchor for a fresh phase 1)."""
    from smartcash.model.build import build_model

    if start.state is None:
        model = build_model(config.model, taxonomy.num_classes)
        loaded: tuple[str, ...] = ()
        trained_on = ""
        if config.weights:
            from smartcash.model.weights import load_pretrained

            report = load_pretrained(model, config.weights)
            loaded, trained_on = report.loaded, report.trained_on
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
        return StartingModel(model.to(device), pretrained, trained_on if pretrained else "")
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
    images = estimate_backbone_statistics(model, (batch.to(device).images for batch in loader))
    logger.warning("recipe freezes a backbone that has no pretrained weights: estimated its BatchNorm "
                   "statistics from %d training images (weights stay random); expect modest accuracy "
                   "until the backbone trains (--recipe scratch trains it from the start)", images)


def dataset_box_sizes(dataset: YoloDataset, imgsz: int) -> np.ndarray:
    """(n, 2) label (w, h) in pixels after letterboxing to ``imgsz`` (for autoanchor)."""
    from smartcash.model.anchors import scaled_box_sizes

    sizes = [np.asarray(labels, dtype=np.float64).reshape(-1, 5)[:, 3:5] for labels in dataset.labels]
    width_height = np.asarray(dataset.shapes, dtype=np.float64).reshape(-1, 2)[:, ::-1]  # (h, w) -> (w, h)
    return scaled_box_sizes(sizes, width_height, imgsz)
