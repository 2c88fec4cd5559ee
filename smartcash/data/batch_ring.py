"""BatchRing: loader workers write each batch's pixels into shared memory reused for the whole run.

A DataLoader worker normally hands a batch over by moving its image tensor into a new shared
memory segment (allocate, page-fault, copy), passing the segment's file descriptor through a
socket, and the main process then maps it and faults it in again: about 5 ms of worker CPU for
a batch of 16 images of 320 px, a tenth of what making the batch costs. Here each worker owns a
few fixed slots of one anonymous shared mapping made before the workers fork: it stacks a
batch's images straight into a free slot and sends only the slot's number; the main process
reads the slot in place (``Batch.images`` is a view of it) and the slot is free again as soon
as nothing references that view any more (the trainer's ``Batch.to`` makes the model's floats
from it, then drops it).

A worker whose slots are all still held (a caller that keeps many batches, ``list(loader)``)
hands that batch over the ordinary way: nothing waits, nothing is overwritten. The ring needs
persistent workers made by ``fork`` (they inherit the mapping; one set of workers per ring, so a
worker id owns its slots); anywhere else the loader collates as before.
"""

from __future__ import annotations

import logging
import mmap
import multiprocessing
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import get_worker_info

from smartcash.data.dataset import Batch, DatasetItem, collate_batch, stack_channels_first
from smartcash.data.image_cache import available_memory

logger = logging.getLogger(__name__)

#: Slots per worker: a DataLoader worker has at most 2 batches in flight (its prefetch factor)
#: while the trainer holds the one it is using and the first one it keeps for pictures. Measured,
#: 2 epochs of the main job: 3 slots a worker took 47 of its 52 batches, 4 took 51.
SLOTS_PER_WORKER = 4
#: The ring may take at most this share of the memory available when the loader is built.
MAX_SHARE_OF_AVAILABLE = 0.1
FREE, HELD = 0, 1

_rings: weakref.WeakValueDictionary[int, BatchRing] = weakref.WeakValueDictionary()


class BatchRing:
    """``workers`` x ``SLOTS_PER_WORKER`` slots of ``(batch_size, 3, size, size)`` uint8 each, and
    one state byte per slot, in one anonymous shared mapping (inherited by forked workers)."""

    def __init__(self, workers: int, batch_size: int, size: int) -> None:
        self.workers, self.batch_size, self.size = workers, batch_size, size
        self.slot_shape = (batch_size, 3, size, size)
        self.slot_bytes = batch_size * 3 * size * size
        count = workers * SLOTS_PER_WORKER
        header = -(-count // mmap.PAGESIZE) * mmap.PAGESIZE  # the state bytes, then page-aligned slots
        self._memory = mmap.mmap(-1, header + count * self.slot_bytes)  # MAP_SHARED | MAP_ANONYMOUS
        self._state = np.frombuffer(self._memory, dtype=np.uint8, count=count)
        self._slots = np.frombuffer(self._memory, dtype=np.uint8, offset=header).reshape(count, *self.slot_shape)
        self._next = 0  # in a worker: the slot of its own it tries next
        self._owner = os.getpid()  # only this process frees slots (a forked child's GC must not)
        self._fell_back = False  # in a worker: logged the first batch that found no free slot
        self.token = id(self)
        _rings[self.token] = self

    def collate(self, items: list[DatasetItem]) -> Batch:
        """In a worker: the batch with its images in a free slot of this worker's (a batch that
        fits none is collated the ordinary way)."""
        info = get_worker_info()
        images = [item.image for item in items]
        if info is None or info.id >= self.workers or not images or len(images) > self.batch_size or any(
                tuple(image.shape) != self.slot_shape[1:] or image.dtype != torch.uint8 for image in images):
            return collate_batch(items)
        for attempt in range(SLOTS_PER_WORKER):
            slot = info.id * SLOTS_PER_WORKER + (self._next + attempt) % SLOTS_PER_WORKER
            if self._state[slot] == FREE:
                self._next = (self._next + attempt + 1) % SLOTS_PER_WORKER
                break
        else:  # every slot still held by the caller
            if not self._fell_back:
                self._fell_back = True
                logger.debug("loader worker %d: every batch slot is held; handing batches over the ordinary way "
                             "until one is free", info.id)
            return collate_batch(items)
        self._state[slot] = HELD
        stack_channels_first(images, out=torch.from_numpy(self._slots[slot, :len(images)]))
        batch = collate_batch(items, images=torch.empty(0, dtype=torch.uint8))
        return RingBatch(batch.images, batch.targets, batch.paths, batch.original_shapes, batch.letterbox,
                         slot=SlotRef(self.token, slot, len(images)))

    def lease(self, slot: int, count: int) -> torch.Tensor:
        """In the main process: (count, 3, S, S) view of a slot; the slot is free again once the
        view (and every tensor made from it without a copy) is gone."""
        pixels = self._slots[slot, :count]  # an array object of its own, finalised alone
        weakref.finalize(pixels, self._release, slot).atexit = False  # nothing to free at exit
        return torch.from_numpy(pixels)

    def _release(self, slot: int) -> None:
        if os.getpid() == self._owner:  # a leased batch collected in a forked child frees nothing
            self._state[slot] = FREE

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("a BatchRing lives in shared memory inherited by forked workers; it cannot be pickled")


@dataclass(frozen=True)
class SlotRef:
    """Which slot of which ring holds a batch's images, and how many images it holds."""

    ring: int
    slot: int
    count: int


@dataclass
class RingBatch(Batch):
    """A worker's Batch whose images wait in a ring slot: it pickles to a plain ``Batch`` whose
    images are the main process's view of that slot."""

    slot: SlotRef | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return _batch_from_slot, (self.slot, self.targets, self.paths, self.original_shapes, self.letterbox)


def _batch_from_slot(slot: SlotRef, targets: torch.Tensor, paths: list[str], original_shapes: torch.Tensor,
                     letterbox: torch.Tensor) -> Batch:
    ring = _rings.get(slot.ring)
    if ring is None:
        raise RuntimeError("a loader batch arrived after its loader's shared memory was released")
    return Batch(ring.lease(slot.slot, slot.count), targets, paths, original_shapes, letterbox)


class HandOver(NamedTuple):
    """How a loader's workers hand batches over: its ``collate_fn`` and ``multiprocessing_context``."""

    collate: Callable[[list[DatasetItem]], Batch]
    context: BaseContext | None  # fork, pinned, when the collate is a ring's; else the default


def batch_hand_over(workers: int, batch_size: int, size: int, persistent: bool) -> HandOver:
    """``BatchRing.collate`` (workers forked whatever the start method becomes later) when the
    workers persist, would be forked anyway and the ring fits in memory; else ``collate_batch``."""
    ordinary = HandOver(collate_batch, None)
    start_method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
    if workers <= 0 or not persistent or start_method != "fork":
        return ordinary
    needed = workers * SLOTS_PER_WORKER * batch_size * 3 * size * size
    available = available_memory()
    if available is not None and needed > MAX_SHARE_OF_AVAILABLE * available:
        logger.info("loader: %d MiB of shared batch slots would exceed %d%% of the %d MiB available; "
                    "batches are handed over the ordinary way", needed >> 20, MAX_SHARE_OF_AVAILABLE * 100,
                    available >> 20)
        return ordinary
    return HandOver(BatchRing(workers, batch_size, size).collate, multiprocessing.get_context("fork"))
