"""--cache none|ram|disk: identical batches, the RAM check, disk invalidation and its fallback folder."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from smartcash.data import image_cache
from smartcash.data.dataset import YoloDataset
from smartcash.data.dataset_config import load_dataset_config
from smartcash.data.images import read_image
from smartcash.data.loader import build_dataloader
from tests.tiny_training import tiny_dataset

# (height, width, suffix): JPEGs whose long side allows a reduced decode at imgsz 64, a PNG (whose
# reduced decode rounds where JPEG's rounds up), odd sides and both orientations: letterbox pads.
SHAPES = [(101, 150, "jpg"), (150, 97, "png"), (70, 90, "jpg"), (131, 131, "png"), (64, 160, "jpg")]


def _picture(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth random texture (JPEG keeps it recognisable): (H, W, 3) uint8."""
    noise = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return (np.cumsum(noise, axis=1, dtype=np.int64) % 256).astype(np.uint8)


@pytest.fixture
def odd(tmp_path) -> Path:
    """data.yaml of five small images of odd shapes, two boxes each."""
    images, labels = tmp_path / "odd" / "images", tmp_path / "odd" / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for index, (height, width, suffix) in enumerate(SHAPES):
        Image.fromarray(_picture(height, width, index)).save(images / f"{index}.{suffix}")
        (labels / f"{index}.txt").write_text("1 0.4 0.5 0.3 0.2\n0 0.7 0.3 0.2 0.4\n")
    (tmp_path / "odd" / "d.yaml").write_text(yaml.safe_dump({"train": "images", "names": ["l3_sign", "001"]}))
    return tmp_path / "odd" / "d.yaml"


def _epochs(loader) -> list:
    """Epoch 0 with mosaic, epoch 1 without (a recipe's closing epochs): every batch's tensors."""
    batches = []
    for epoch, mosaic in ((0, True), (1, False)):
        loader.sampler.set_epoch(epoch, mosaic)
        batches += [(batch.paths, batch.images, batch.targets, batch.letterbox, batch.original_shapes)
                    for batch in loader]
    return batches


def _same(first: list, second: list) -> bool:
    return len(first) == len(second) and all(
        a[0] == b[0] and all(torch.equal(x, y) for x, y in zip(a[1:], b[1:])) for a, b in zip(first, second))


@pytest.mark.parametrize("which", ["synthetic", "odd"])
def test_every_cache_mode_gives_bit_identical_batches(which, odd, tmp_path, monkeypatch):
    monkeypatch.setenv("SMARTCASH_CACHE", str(tmp_path / "cache"))
    data = load_dataset_config(tiny_dataset(tmp_path) if which == "synthetic" else odd)

    def loader(cache: str, workers: int = 0):
        return build_dataloader(data, "train", 64, batch_size=4, workers=workers, augment=True, shuffle=True,
                                seed=7, hyp={"mosaic": 0.5}, cache=cache)

    reference = _epochs(loader("none"))
    assert any((letterbox[:, 0] > 0).all() for *_, letterbox, _ in reference[-2:])  # epoch 1: letterboxed
    assert _same(reference, _epochs(loader("ram", workers=2)))  # filled before the workers fork
    assert _same(reference, _epochs(loader("disk")))  # files written
    assert _same(reference, _epochs(loader("disk")))  # files read back


def test_cached_image_is_the_decode_resized(odd):
    dataset = YoloDataset(load_dataset_config(odd), "train", 64, augment=True, cache="ram")
    for index, path in enumerate(dataset.paths):
        cached = dataset.images.get(index)
        height, width = dataset.shapes[index]
        reduce = 2 if max(height, width) >= 128 else 1
        assert cached.decoded_shape == read_image(path, reduce).shape[:2]
        assert max(cached.image.shape[:2]) == 64 and not cached.image.flags.writeable


def test_ram_cache_that_does_not_fit_falls_back_to_none(odd, monkeypatch, caplog):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    data = load_dataset_config(odd)
    needed = image_cache.resized_bytes(YoloDataset(data, "train", 64, augment=False).shapes, 64)
    monkeypatch.setattr(image_cache, "available_memory", lambda: int(needed / image_cache.RAM_FRACTION) - 1)
    with caplog.at_level(logging.WARNING, logger="smartcash.data.image_cache"):
        dataset = YoloDataset(data, "train", 64, augment=True, cache="ram")
    assert dataset.images.mode == "none"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cache ram: 5 images at imgsz 64 need" in warnings[0]
    assert "training without an image cache" in warnings[0]
    monkeypatch.setattr(image_cache, "available_memory", lambda: int(needed / image_cache.RAM_FRACTION) + 1)
    assert YoloDataset(data, "train", 64, augment=True, cache="ram").images.mode == "ram"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two DDP ranks on this machine, each its own copy
    assert YoloDataset(data, "train", 64, augment=True, cache="ram").images.mode == "none"


def test_disk_cache_is_rebuilt_when_the_image_changes_or_the_file_is_bad(odd):
    data = load_dataset_config(odd)
    dataset = YoloDataset(data, "train", 64, augment=True, cache="disk")
    source = Path(dataset.paths[0])
    cache_file = dataset.images.cache_path(0)
    assert cache_file == source.parent / f"{source.name}.64.npy" and cache_file.is_file()
    before = dataset.images.get(0).image

    height, width, _ = SHAPES[0]
    Image.fromarray(_picture(height, width, seed=99)).save(source)  # same name, another picture
    again = YoloDataset(data, "train", 64, augment=True, cache="disk")
    after = again.images.get(0).image
    assert not np.array_equal(before, after)
    assert np.array_equal(after, image_cache.decode_resized(str(source), (height, width), 64).image)

    cache_file.write_bytes(b"not an npy file")  # unreadable: silently rebuilt on the next request
    assert np.array_equal(again.images.get(0).image, after)
    assert np.array_equal(again.images._read(0).image, after)  # and written again


def test_disk_cache_goes_to_the_smartcash_cache_when_the_folder_is_read_only(odd, tmp_path, monkeypatch):
    monkeypatch.setenv("SMARTCASH_CACHE", str(tmp_path / "cache"))
    data = load_dataset_config(odd)
    images = odd.parent / "images"
    YoloDataset(data, "train", 64, augment=False)  # the label cache first, while the folder is writable
    images.chmod(0o555)
    try:
        # writable_folder also reads the mode bits, so a read-only folder is respected even by root.
        dataset = YoloDataset(data, "train", 64, augment=True, cache="disk")
    finally:
        images.chmod(0o755)
    assert not list(images.glob("*.npy"))
    written = sorted((tmp_path / "cache" / "images").rglob("*.npy"))
    assert [path.name for path in written] == sorted(f"{Path(p).name}.64.npy" for p in dataset.paths)
    assert all(dataset.images.cache_path(i) in written for i in range(len(dataset)))
    assert os.access(written[0], os.R_OK)


def test_validation_split_is_never_cached(odd):
    dataset = YoloDataset(load_dataset_config(odd), "train", 64, augment=False, cache="disk")
    assert dataset.images.mode == "none" and not list((odd.parent / "images").glob("*.npy"))


def test_disk_cache_pickles_for_spawned_workers(tmp_path):
    import pickle

    from smartcash.data.synthetic import ensure_synthetic_dataset
    from smartcash.data.dataset_config import load_dataset_config
    from smartcash.data.dataset import YoloDataset

    config = load_dataset_config(ensure_synthetic_dataset(root=tmp_path, num_train=4, num_val=2, imgsz=64))
    dataset = YoloDataset(config, "train", 64, augment=True, cache="disk")
    copy = pickle.loads(pickle.dumps(dataset.images))
    assert np.array_equal(copy.get(0).image, dataset.images.get(0).image)
