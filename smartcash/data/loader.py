"""build_dataloader: YoloDataset + collate_batch in a seeded, optionally distributed DataLoader."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from smartcash.data.augment import AugmentConfig
from smartcash.data.dataset import YoloDataset, collate_batch
from smartcash.data.dataset_config import DatasetConfig


def default_loader_workers() -> int:
    """Two loader processes (or fewer CPUs): keeps both cores of a small machine busy."""
    return min(2, os.cpu_count() or 1)


def _seed_worker(worker_id: int) -> None:
    # torch gives each worker initial_seed = base_seed + worker_id, base_seed drawn from the
    # loader's seeded generator: so the augmentation streams are reproducible for a given seed.
    info = torch.utils.data.get_worker_info()
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(torch.initial_seed() % 2**32)


def build_dataloader(config: DatasetConfig, split: str, imgsz: int, batch_size: int,
                     workers: int | None = None, augment: bool = False, shuffle: bool = False,
                     seed: int = 0, distributed: bool = False,
                     hyp: AugmentConfig | dict[str, Any] | None = None,
                     persistent_workers: bool = True) -> DataLoader:
    """A DataLoader yielding ``Batch`` for one split.

    Args:
        config: the dataset.
        split: ``train``, ``val`` or ``test``.
        imgsz: input square side (rounded up to a multiple of 32).
        batch_size: images per batch (per process when distributed).
        workers: loader processes; default ``min(2, cpu count)``; 0 loads in this process.
        augment: training augmentation (mosaic, affine, colour, blur).
        shuffle: reshuffle every epoch (through the DistributedSampler when distributed; call
            ``loader.sampler.set_epoch(epoch)`` each epoch there).
        seed: seeds the shuffle order and the augmentation streams.
        distributed: shard the data over the processes of the initialised process group.
        hyp: augmentation strengths.
        persistent_workers: keep the worker processes between epochs (when ``workers > 0``); False
            starts them again each epoch, seeded from that epoch's seed (what training wants).
    """
    dataset = YoloDataset(config, split, imgsz, augment=augment, hyp=hyp, seed=seed)
    workers = default_loader_workers() if workers is None else workers
    if workers > 0:
        import cv2

        # Parallelism comes from the worker processes; OpenCV's own threads would only contend.
        # Set here, in the parent, before the fork: a forked child that reconfigures OpenCV's
        # thread pool (inherited without its threads) can hang forever.
        cv2.setNumThreads(1)
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed) if distributed else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None,
                      sampler=sampler, num_workers=workers, collate_fn=collate_batch,
                      pin_memory=torch.cuda.is_available(), persistent_workers=persistent_workers and workers > 0,
                      worker_init_fn=_seed_worker, generator=generator, drop_last=False)
