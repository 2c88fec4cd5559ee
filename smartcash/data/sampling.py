"""Training samples keyed by (epoch, index): augmentation seeded per sample, workers that persist.

The training sampler yields ``SampleKey(epoch, index, mosaic)`` instead of a bare index, and the
dataset seeds a sample's augmentation from ``(seed, epoch, index)``. What a sample looks like then
depends on nothing a worker process carries from one epoch to the next, so the loader keeps its
workers alive across epochs (no respawn, no re-import, no re-opened files) and a run resumed at
epoch e still sees exactly the batches an uninterrupted run saw. The epoch and the closing
epochs' mosaic switch travel with the key because a persistent worker holds its own copy of the
dataset: attributes set on the parent's copy after the workers started never reach it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import NamedTuple

import torch
from torch.utils.data import DistributedSampler, Sampler


class SampleKey(NamedTuple):
    """What ``YoloDataset.__getitem__`` needs to make one training sample reproducibly."""

    epoch: int
    index: int
    mosaic: bool  # False in a recipe's closing epochs


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of one sample: a function of the run seed, the epoch and the index only."""
    return (seed * 1_000_003 + epoch * 100_003 + index * 7_919) % 2**32


class EpochSampler(Sampler[SampleKey]):
    """Shuffled (or ordered) indices per epoch as ``SampleKey``; sharded over processes when distributed.

    Call ``set_epoch(epoch, mosaic)`` before each epoch (in the process that iterates the loader).
    """

    def __init__(self, dataset: Sized, shuffle: bool, seed: int, distributed: bool = False) -> None:
        self.size = len(dataset)
        self.shuffle = shuffle
        self.seed = seed
        self.shards = DistributedSampler(dataset, shuffle=shuffle, seed=seed) if distributed else None
        self.epoch = 0
        self.mosaic = True

    def set_epoch(self, epoch: int, mosaic: bool = True) -> None:
        self.epoch, self.mosaic = epoch, mosaic
        if self.shards is not None:
            self.shards.set_epoch(epoch)

    def _indices(self) -> list[int]:
        if self.shards is not None:
            return list(self.shards)
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator()
        generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[SampleKey]:
        epoch, mosaic = self.epoch, self.mosaic
        return (SampleKey(epoch, index, mosaic) for index in self._indices())

    def __len__(self) -> int:
        return len(self.shards) if self.shards is not None else self.size
