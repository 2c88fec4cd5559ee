"""build_dataloader: YoloDataset + collate_batch (through a BatchRing with workers) in a seeded,
optionally distributed DataLoader."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler, SequentialSampler

from smartcash.data.augment import AugmentConfig
from smartcash.data.batch_ring import batch_hand_over
from smartcash.data.dataset import YoloDataset
from smartcash.data.dataset_config import DatasetConfig
from smartcash.data.sampling import EpochSampler


def default_loader_workers() -> int:
    """Two loader processes (or fewer CPUs): keeps both cores of a small machine busy."""
    return min(2, os.cpu_count() or 1)


def build_dataloader(config: DatasetConfig, split: str, imgsz: int, batch_size: int,
                     workers: int | None = None, augment: bool = False, shuffle: bool = False,
                     seed: int = 0, distributed: bool = False,
                     hyp: AugmentConfig | dict[str, Any] | None = None,
                     persistent_workers: bool = True, cache: str = "none") -> DataLoader:
    """A DataLoader yielding ``Batch`` for one split.

    Args:
        config: the dataset.
        split: ``train``, ``val`` or ``test``.
        imgsz: input square side (rounded up to a multiple of 32).
        batch_size: images per batch (per process when distributed).
        workers: loader processes; default ``min(2, cpu count)``; 0 loads in this process.
        augment: training augmentation (mosaic, affine, colour, blur).
        shuffle: reshuffle every epoch.
        seed: seeds the shuffle order and the augmentation.
        distributed: shard the data over the processes of the initialised process group.
        hyp: augmentation strengths.
        persistent_workers: keep the worker processes between epochs (when ``workers > 0``).
        cache: decoded-image cache of the augmented path, ``none | ram | disk`` (``image_cache``):
            filled here, in this process, before the workers fork (they share a ``ram`` cache).

    With ``augment`` or ``shuffle`` the loader's sampler is an ``EpochSampler``: call
    ``loader.sampler.set_epoch(epoch, mosaic)`` before each epoch; every sample is then a function
    of (seed, epoch, index) alone, whatever the workers did before (see ``sampling.py``).
    """
    dataset = YoloDataset(config, split, imgsz, augment=augment, hyp=hyp, seed=seed, cache=cache)
    workers = default_loader_workers() if workers is None else workers
    if workers > 0:
        import cv2

        # Parallelism comes from the worker processes; OpenCV's own threads would only contend.
        # Set here, in the parent, before the fork: a forked child that reconfigures OpenCV's
        # thread pool (inherited without its threads) can hang forever.
        cv2.setNumThreads(1)
    if augment or shuffle:
        sampler: Sampler = EpochSampler(dataset, shuffle, seed, distributed)
    elif distributed:
        sampler = DistributedSampler(dataset, shuffle=False, seed=seed)
    else:
        sampler = SequentialSampler(dataset)
    # Persistent workers stack each batch's images into shared memory reused all run (batch_ring.py).
    persistent = persistent_workers and workers > 0
    hand_over = batch_hand_over(workers, batch_size, dataset.imgsz, persistent)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=hand_over.collate, multiprocessing_context=hand_over.context,
                      pin_memory=torch.cuda.is_available(), persistent_workers=persistent, drop_last=False)


def start_epoch(loader: DataLoader, epoch: int, mosaic: bool = True) -> Iterator[Any]:
    """The iterator over ``epoch``'s batches of a training loader, its workers already at work.

    With persistent workers, creating the iterator is what sends the workers the epoch's first
    indices (two batches each): call it as soon as the previous epoch's last batch is taken, and the
    first batches of the next epoch are made while the trainer validates, instead of after it.
    What the batches hold does not depend on when this is called: each sample is a function of
    (seed, epoch, index) (``sampling.py``).
    """
    loader.sampler.set_epoch(epoch, mosaic)
    return iter(loader)
