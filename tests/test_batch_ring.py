"""BatchRing: worker batches handed over through reused shared-memory slots, bit-identical to the
in-process loader, never overwritten while the caller holds them."""

import gc
import multiprocessing
import os
import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from smartcash.data import batch_ring
from smartcash.data.batch_ring import SLOTS_PER_WORKER, BatchRing, RingBatch, batch_hand_over
from smartcash.data.dataset import Batch, YoloDataset, collate_batch
from smartcash.data.dataset_config import load_dataset_config
from smartcash.data.loader import build_dataloader, start_epoch

VND_SUBSET = Path(__file__).parent / "data" / "vnd_subset"


@pytest.fixture
def vnd(tmp_path):
    shutil.copytree(VND_SUBSET, tmp_path / "vnd")
    return load_dataset_config(tmp_path / "vnd" / "data.yaml")


def _inside(tensor: torch.Tensor, ring: BatchRing) -> bool:
    start = ring._slots.ctypes.data
    return start <= tensor.data_ptr() < start + ring._slots.nbytes


def _fields(batch: Batch) -> tuple:
    return batch.paths, batch.images.clone(), batch.targets, batch.letterbox, batch.original_shapes


def _equal(first: tuple, second: tuple) -> bool:
    return first[0] == second[0] and all(torch.equal(a, b) for a, b in zip(first[1:], second[1:]))


FORKED = (multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]) == "fork"
# With CUDA the loader pins each batch: the caller gets a pinned copy, not the slot's view.
RING_VIEWS = pytest.mark.skipif(not FORKED or torch.cuda.is_available(),
                                reason="the ring needs forked workers; with CUDA batches arrive pinned")


@RING_VIEWS
def test_worker_batches_come_through_the_ring_as_the_in_process_loader_makes_them(vnd):

    def loader(workers: int):
        return build_dataloader(vnd, "train", 128, batch_size=1, workers=workers, augment=True, shuffle=True,
                                seed=2, hyp={"mosaic": 1.0})

    forked, in_process = loader(2), loader(0)
    ring = forked.collate_fn.__self__
    assert isinstance(ring, BatchRing) and in_process.collate_fn is collate_batch
    for epoch in range(2):  # 8 batches a worker over two epochs: each of its 4 slots is taken twice
        expected = [_fields(batch) for batch in start_epoch(in_process, epoch)]
        got = []
        for batch in start_epoch(forked, epoch):
            # A view of a slot, not a copy: a worker never runs out (2 in flight + 1 held < 4 slots).
            assert type(batch) is Batch and _inside(batch.images, ring)
            got.append(_fields(batch))
            del batch  # released: its slot can take a later batch
        assert len(got) == len(expected) == 8 and all(_equal(a, b) for a, b in zip(got, expected))
    gc.collect()
    assert not ring._state.any()  # every slot free once no batch is held


@RING_VIEWS
def test_batches_the_caller_keeps_are_never_overwritten(vnd):
    forked = build_dataloader(vnd, "train", 128, batch_size=1, workers=1, augment=True, shuffle=True, seed=4)
    in_process = build_dataloader(vnd, "train", 128, batch_size=1, workers=0, augment=True, shuffle=True, seed=4)
    kept = list(start_epoch(forked, 0))  # 8 batches held at once: more than the worker's slots
    expected = list(start_epoch(in_process, 0))
    ring = forked.collate_fn.__self__
    assert sum(_inside(batch.images, ring) for batch in kept) == SLOTS_PER_WORKER  # the rest came the ordinary way
    assert all(_equal(_fields(a), _fields(b)) for a, b in zip(kept, expected)) and len(kept) == 8


def test_a_slot_is_free_again_when_its_last_view_is_gone(vnd, monkeypatch):
    dataset = YoloDataset(vnd, "train", 64, augment=False)
    items = [dataset[i] for i in range(4)]
    monkeypatch.setattr(batch_ring, "SLOTS_PER_WORKER", 3)
    ring = BatchRing(workers=1, batch_size=4, size=64)
    monkeypatch.setattr(batch_ring, "get_worker_info", lambda: SimpleNamespace(id=0))
    sent = [ring.collate(items[:count]) for count in (4, 2, 1)]
    assert all(isinstance(batch, RingBatch) for batch in sent) and ring._state.tolist() == [1, 1, 1]
    overflow = ring.collate(items)  # every slot held: an ordinary batch
    assert type(overflow) is Batch and torch.equal(overflow.images, collate_batch(items).images)
    received = [pickle.loads(pickle.dumps(batch)) for batch in sent]  # what the main process gets
    for batch, count in zip(received, (4, 2, 1)):
        assert type(batch) is Batch and torch.equal(batch.images, collate_batch(items[:count]).images)
        assert torch.equal(batch.targets, collate_batch(items[:count]).targets)
    half = received[0].images[:2]  # a view outlives its batch: the slot stays held
    del received, batch
    gc.collect()
    assert ring._state.tolist() == [1, 0, 0]
    floats = half.float()  # a copy does not hold it
    del half
    gc.collect()
    assert ring._state.tolist() == [0, 0, 0] and floats.shape == (2, 3, 64, 64)
    assert isinstance(ring.collate(items), RingBatch)  # slots are taken again
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(ring)


@pytest.mark.skipif(not FORKED, reason="forks a child")
def test_a_forked_child_collecting_a_leased_batch_frees_nothing(vnd, monkeypatch):
    """A process forked while a leased view waits for the garbage collector (in a reference cycle)
    must not free the slot when its own collector runs: the slot is the parent's to free."""
    dataset = YoloDataset(vnd, "train", 64, augment=False)
    ring = BatchRing(workers=1, batch_size=1, size=64)
    monkeypatch.setattr(batch_ring, "get_worker_info", lambda: SimpleNamespace(id=0))
    batch = pickle.loads(pickle.dumps(ring.collate([dataset[0]])))
    cycle = [batch]
    cycle.append(cycle)  # only the collector can free it
    del batch, cycle
    gc.disable()
    try:
        pid = os.fork()
        if pid == 0:  # the child: collect, then leave without running the parent's atexit work
            gc.collect()
            os._exit(0)
        os.waitpid(pid, 0)
        assert ring._state.tolist()[0] == 1  # still held: the child freed nothing
    finally:
        gc.enable()
    gc.collect()
    assert ring._state.tolist()[0] == 0  # the parent's collector frees it


def test_ring_only_where_it_can_work(monkeypatch):
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "spawn")
    assert batch_hand_over(2, 16, 320, persistent=True) == (collate_batch, None)  # spawned workers inherit nothing
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "fork")
    assert batch_hand_over(0, 16, 320, persistent=False) == (collate_batch, None)  # no workers: nothing to hand over
    # Workers respawned each epoch: an older iterator's workers could share ids with the new ones.
    assert batch_hand_over(2, 16, 320, persistent=False) == (collate_batch, None)
    monkeypatch.setattr(batch_ring, "available_memory", lambda: 100 << 20)
    assert batch_hand_over(2, 64, 640, persistent=True).collate is collate_batch  # 629 MiB: over 10 % of 100 MiB
    monkeypatch.setattr(batch_ring, "available_memory", lambda: 64 << 30)
    ring_hand_over = batch_hand_over(2, 16, 64, persistent=True)
    assert isinstance(ring_hand_over.collate.__self__, BatchRing)
    assert ring_hand_over.context.get_start_method() == "fork"  # pinned: a later set_start_method cannot break it
    with monkeypatch.context() as patch:  # in a worker outside the ring's workers (or no worker): ordinary
        patch.setattr(batch_ring, "get_worker_info", lambda: None)
        items = [SimpleNamespace(image=torch.zeros(3, 64, 64, dtype=torch.uint8), targets=torch.zeros(0, 5),
                                 path="a.jpg", original_shape=(64, 64), letterbox=(1.0, 0.0, 0.0))]
        assert type(BatchRing(1, 1, 64).collate(items)) is Batch
