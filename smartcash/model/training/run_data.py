"""What a training run reads: the train loader (sharded under DDP), on rank 0 the val loader, and
the fixed training sample of precise BatchNorm."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smartcash.config import TrainConfig
from smartcash.taxonomy import Taxonomy

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from smartcash.data.dataset import YoloDataset
    from smartcash.model.training.precise_bn import PreciseBatchNorm

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunData:
    taxonomy: Taxonomy
    train_loader: DataLoader  # of Batch, over a YoloDataset
    val_loader: DataLoader | None  # rank 0 only: the full val split


def build_data(config: TrainConfig, world_size: int, is_main: bool) -> RunData:
    """Train loader (sharded under DDP) and, on rank 0, the full val loader.

    The train loader's workers persist across epochs: every sample is seeded from (seed, epoch,
    index) (data/sampling.py), so a resumed run still replays its epochs exactly. Its image cache
    (``config.cache``) is filled here, before they fork; under DDP every rank fills its own. The
    val loader decodes full images for an exact letterbox and has none.
    """
    from smartcash.data.checks import no_boxes_reason
    from smartcash.data.dataset_config import load_dataset_config
    from smartcash.data.errors import DatasetError
    from smartcash.data.loader import build_dataloader

    dataset = load_dataset_config(config.data)
    train = build_dataloader(dataset, "train", config.imgsz, config.batch, config.workers,
                             augment=config.augment, shuffle=True, seed=config.seed,
                             distributed=world_size > 1, cache=config.cache)
    empty = no_boxes_reason(dataset, train.dataset.report)  # all backgrounds: nothing to learn
    if empty:
        raise DatasetError(f"{dataset.path}: {empty}")
    val = None
    if is_main:
        val = build_dataloader(dataset, "val", config.imgsz, config.batch, config.workers,
                               augment=False, shuffle=False, seed=config.seed, distributed=False)
        unmeasured = no_boxes_reason(dataset, val.dataset.report)  # all backgrounds: every mAP is 0
        if unmeasured:
            logger.warning("%s: %s", dataset.path, unmeasured)
    return RunData(dataset.taxonomy, train, val)


def build_precise_bn(config: TrainConfig, train: YoloDataset) -> PreciseBatchNorm:
    """The precise-BatchNorm hook over a fixed sample of the (non-augmented) training split.

    ``train``: the training loader's dataset, whose dataset config and scan are reused (its yaml's
    and its skipped images' warnings are given once).
    """
    from smartcash.data.dataset import YoloDataset
    from smartcash.model.training.precise_bn import PreciseBatchNorm

    dataset = YoloDataset(train.config, "train", config.imgsz, augment=False, report=train.report)
    return PreciseBatchNorm(dataset, config.precise_bn_images, config.seed, config.batch)
