"""YoloDataset, augmentation, label cache and loader on the VND subset and tiny made-up data."""

import itertools
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from smartcash.data import label_cache
from smartcash.data.augment import affine_matrix, warp_boxes, AugmentConfig, Augmenter
from smartcash.data.dataset import Batch, YoloDataset, collate_batch, stack_channels_first
from smartcash.data.dataset_config import load_dataset_config
from smartcash.data.labels import parse_label_file
from smartcash.data.loader import build_dataloader

VND_SUBSET = Path(__file__).parent / "data" / "vnd_subset"


@pytest.fixture
def vnd(tmp_path):
    """A copy of the committed subset (the label cache is written next to the labels)."""
    shutil.copytree(VND_SUBSET, tmp_path / "vnd")
    return load_dataset_config(tmp_path / "vnd" / "data.yaml")


@pytest.fixture
def wide(tmp_path):
    """One 200x120 image with two boxes and one 90x150 background: letterbox pads both ways."""
    images, labels = tmp_path / "wide" / "images", tmp_path / "wide" / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    Image.fromarray(np.full((120, 200, 3), 90, dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(np.full((150, 90, 3), 90, dtype=np.uint8)).save(images / "b.png")
    (labels / "a.txt").write_text("1 0.25 0.5 0.1 0.2\n0 0.7 0.3 0.3 0.4\n")
    (tmp_path / "wide" / "d.yaml").write_text(yaml.safe_dump({"train": "images", "names": ["l3_sign", "001"]}))
    return load_dataset_config(tmp_path / "wide" / "d.yaml")


def _pixel_boxes(targets: torch.Tensor, size: int) -> np.ndarray:
    """(n, 5) [class, cx, cy, w, h] normalised -> (n, 4) x1 y1 x2 y2 in input pixels."""
    cx, cy, w, h = (targets[:, i].numpy() * size for i in range(1, 5))
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def test_vnd_subset_end_to_end_through_the_loader(vnd):
    loader = build_dataloader(vnd, "train", imgsz=320, batch_size=4, workers=0, augment=False,
                              shuffle=False, seed=0)
    batches = list(loader)
    assert [len(b.paths) for b in batches] == [4, 4]
    batch = batches[0]
    assert isinstance(batch, Batch)
    assert batch.images.shape == (4, 3, 320, 320) and batch.images.dtype == torch.uint8
    assert batch.targets.shape[1] == 6 and set(batch.targets[:, 0].tolist()) <= {0, 1, 2, 3}
    assert (batch.targets[:, 2:] >= 0).all() and (batch.targets[:, 2:4] <= 1).all()
    boxes = _pixel_boxes(batch.targets[:, 1:], 320)
    assert (boxes >= -1e-3).all() and (boxes <= 320 + 1e-3).all()
    assert batch.original_shapes.tolist() == [[640, 640]] * 4
    # Letterbox inverse: back to the source pixel boxes of the label files, within 1 px.
    for index, path in enumerate(batch.paths):
        source = parse_label_file(vnd.label_path(path), 6).boxes
        height, width = batch.original_shapes[index].tolist()
        scale, pad_x, pad_y = batch.letterbox[index].tolist()
        mine = _pixel_boxes(batch.targets[batch.targets[:, 0] == index][:, 1:], 320)
        recovered = (mine - [pad_x, pad_y, pad_x, pad_y]) / scale
        expected = _pixel_boxes(torch.from_numpy(source), 1) * [width, height, width, height]
        np.testing.assert_allclose(recovered, expected, atol=1.0)
    moved = batch.to("cpu")  # the model's input: float32 pixels / 255
    assert moved.images.shape == batch.images.shape and moved.paths == batch.paths
    assert moved.images.dtype == torch.float32
    torch.testing.assert_close(moved.images * 255, batch.images.float(), rtol=0, atol=1e-4)
    assert moved.to("cpu").images.dtype == torch.float32  # moving a moved batch keeps it


def test_channels_first_stack_is_torch_stack(vnd):
    """The batch OpenCV's split assembles holds exactly torch.stack's bytes, for augmented items
    (views of channel-last pixels) and for inputs it must hand to torch.stack."""
    dataset = YoloDataset(vnd, "train", 160, augment=True, seed=3)
    images = [dataset[i].image for i in range(6)]
    assert not images[0].is_contiguous()  # the (3, S, S) view collate meets
    stacked = stack_channels_first(images)
    assert stacked.is_contiguous() and torch.equal(stacked, torch.stack(images))
    rng = np.random.default_rng(0)
    pixels = [torch.from_numpy(rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)).permute(2, 0, 1) for _ in range(3)]
    assert torch.equal(stack_channels_first(pixels), torch.stack(pixels))  # odd sizes, random bytes
    contiguous = [torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8) for _ in range(2)]  # not HWC views
    assert torch.equal(stack_channels_first(contiguous), torch.stack(contiguous))
    with pytest.raises(RuntimeError):  # different sizes fail as torch.stack does
        stack_channels_first([pixels[0], images[0]])


def test_letterbox_pads_non_square_images_and_maps_classes(wide):
    dataset = YoloDataset(wide, "train", imgsz=100, augment=False, use_cache=False)  # -> 128
    assert dataset.imgsz == 128
    batch = collate_batch([dataset[0], dataset[1]])
    assert batch.letterbox[0].tolist() == pytest.approx([0.64, 0.0, 25.0])  # 200x120 -> 128x77, pad top 25
    assert batch.letterbox[1].tolist() == pytest.approx([128 / 150, 25.0, 0.0])
    assert batch.images[0, :, 0, 64].tolist() == [114] * 3  # grey padding
    targets = batch.targets
    assert targets[:, 1].tolist() == [0.0, 16.0]  # id 1 "001" -> 1000_whole, id 0 "l3_sign" -> special_sign
    recovered = (_pixel_boxes(targets[:, 1:], 128) - [0, 25, 0, 25]) / 0.64
    np.testing.assert_allclose(recovered, [[40, 48, 60, 72], [110, 12, 170, 60]], atol=1.0)


def test_augmented_batches_are_deterministic_and_boxes_valid(vnd):
    first = YoloDataset(vnd, "train", 160, augment=True, seed=7)
    second = YoloDataset(vnd, "train", 160, augment=True, seed=7, report=first.report)
    other = YoloDataset(vnd, "train", 160, augment=True, seed=8, report=first.report)
    items = [first[i] for i in range(8)]
    again = [second[i] for i in range(8)]
    assert all(torch.equal(a.image, b.image) and torch.equal(a.targets, b.targets)
               for a, b in zip(items, again))
    assert not all(torch.equal(a.image, other[i].image) for i, a in enumerate(items))
    targets = torch.cat([item.targets for item in items])
    assert len(targets) > 0
    assert (targets[:, 1:] >= 0).all() and (targets[:, 1:] <= 1 + 1e-6).all()
    assert (targets[:, 3:] * 160 > 2).all()  # tiny boxes dropped (box_candidates)


def test_no_horizontal_flip_by_default():
    config = AugmentConfig()
    assert config.fliplr == 0 and config.flipud == 0
    names = {type(t).__name__ for t in Augmenter(64, config).pipeline.transforms}
    assert "HorizontalFlip" not in names and "VerticalFlip" not in names
    flipping = {type(t).__name__ for t in Augmenter(64, AugmentConfig(fliplr=0.5)).pipeline.transforms}
    assert "HorizontalFlip" in flipping
    # An asymmetric image through a geometry-only pipeline keeps its left side on the left.
    still = AugmentConfig(mosaic=0, hsv_h=0, hsv_s=0, hsv_v=0, brightness_contrast=0, blur=0,
                          translate=0, scale=0)
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[:, :16] = 255
    boxes = np.array([[0, 0, 16, 64]], dtype=np.float32)
    for seed in range(5):
        out, kept, _ = Augmenter(64, still, seed=seed)(image, boxes, np.array([0.0]), mosaic=False)
        assert out[:, :16].mean() > 250 and out[:, 48:].mean() < 5
        np.testing.assert_allclose(kept, boxes, atol=0.5)


def test_boxes_cut_away_by_the_mosaic_are_dropped():
    image = np.full((128, 128, 3), 90, dtype=np.uint8)
    boxes = np.array([[10, 10, 40, 40], [20, 128, 50, 128], [60, 60, 60, 90]], dtype=np.float32)
    out, kept, classes = Augmenter(64, AugmentConfig(scale=0, translate=0), seed=0)(
        image, boxes, np.array([0.0, 1.0, 2.0]), mosaic=True)
    assert out.shape == (64, 64, 3) and set(classes.tolist()) <= {0.0}


def test_affine_boxes_follow_the_warped_pixels():
    """Each kept box is the box around its object's pixels after the warp (cv2 moves the pixels,
    ``warp_boxes`` the corners): zoom and translation, mosaic canvas and single image."""
    config = AugmentConfig(mosaic=1, hsv_h=0, hsv_s=0, hsv_v=0, brightness_contrast=0, blur=0,
                           scale=0.5, translate=0.2)
    for seed, canvas in itertools.product(range(6), (64, 128)):
        image = np.zeros((canvas, canvas, 3), dtype=np.uint8)
        x1, y1, x2, y2 = (round(canvas * f) for f in (0.3, 0.35, 0.6, 0.7))
        image[y1:y2, x1:x2] = 255  # pixels x1 .. x2 - 1: the box [x1, x2) on pixel edges
        box = np.array([[x1, y1, x2, y2]], dtype=np.float32)
        out, kept, _ = Augmenter(64, config, seed=seed)(image, box, np.array([3.0]), mosaic=canvas == 128)
        ys, xs = np.nonzero(out[..., 0] > 127)  # output pixels at least half inside the object
        assert len(kept) == 1
        pixels = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
        # Each edge within half a pixel: more would mean the image and the boxes use different
        # pixel conventions (cv2 samples pixel centres, boxes lie on pixel edges).
        np.testing.assert_allclose(kept[0], pixels, atol=0.5)


def test_warp_boxes_keeps_yolov5_box_candidates_only():
    shift = np.array([[1.0, 0, 0], [0, 1.0, 0]])  # identity: only the clipping to 64 px acts
    boxes = np.array([[10, 10, 40, 40],  # inside: kept
                      [60, 10, 100, 40],  # 4 of 40 px left inside: 10 % kept, 2 < w -> kept
                      [62, 10, 100, 40],  # 2 px left: w not > 2 -> dropped
                      [10, 10, 11.5, 40],  # a sliver 1.5 px wide -> dropped
                      [-90, 10, 5, 40]],  # 5 of 95 px inside: 5 % < 10 % -> dropped
                     dtype=np.float64)
    moved, keep = warp_boxes(boxes, shift, 64)
    assert keep.tolist() == [True, True, False, False, False]
    np.testing.assert_allclose(moved[1], [60, 10, 64, 40])


def test_zoom_keeps_the_aspect_only_when_asked():
    ratios = {}
    for keep_ratio in (False, True):
        config = AugmentConfig(scale=0.5, translate=0, keep_ratio=keep_ratio)
        rng = np.random.default_rng(0)
        matrices = [affine_matrix(128, 64, config, rng) for _ in range(200)]
        ratios[keep_ratio] = np.array([m[0, 0] / m[1, 1] for m in matrices])
    np.testing.assert_allclose(ratios[True], 1.0)
    assert ratios[False].min() < 0.6 and ratios[False].max() > 1.6  # x and y zooms apart (as albumentations did)
    assert AugmentConfig().keep_ratio  # the default: a note keeps its shape


def test_mosaic_without_scale_or_shift_is_the_centre_crop():
    config = AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, brightness_contrast=0, blur=0, scale=0, translate=0)
    canvas = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    boxes = np.array([[40, 50, 80, 90]], dtype=np.float32)
    out, kept, _ = Augmenter(64, config, seed=0)(canvas, boxes, np.array([1.0]), mosaic=True)
    np.testing.assert_array_equal(out, canvas[32:96, 32:96])
    np.testing.assert_allclose(kept, boxes - 32)


def test_hyp_dict_reads_only_augmentation_keys():
    config = AugmentConfig.from_hyp({"lr0": 0.01, "mosaic": 0.5, "fliplr": 0.0, "scale": 0.2})
    assert (config.mosaic, config.scale, config.translate) == (0.5, 0.2, 0.1)


def test_bad_samples_skipped_with_one_warning(wide, caplog):
    labels = wide.root / "labels"
    (labels / "b.txt").write_text("5 0.5 0.5 0.1 0.1\n7 0.5 0.5 0.1 0.1\n")  # two bad lines
    with caplog.at_level(logging.WARNING, logger="smartcash.data.dataset"):
        dataset = YoloDataset(wide, "train", 64, augment=False, use_cache=False)
    assert len(dataset) == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 1 of 2 images" in warnings[0].getMessage()


def test_label_cache_reused_then_invalidated_when_a_label_changes(wide, monkeypatch):
    first = label_cache.load_split_report(wide, "train")
    local, _ = label_cache.cache_paths(wide, "train")
    assert local.is_file() and local.parent == wide.root and "pickle" not in local.read_text()[:50]

    def no_scan(*args, **kwargs):
        raise AssertionError("should have come from the cache")

    monkeypatch.setattr(label_cache, "scan_split", no_scan)
    cached = label_cache.load_split_report(wide, "train")
    assert [s.boxes.tolist() for s in cached.samples] == [s.boxes.tolist() for s in first.samples]
    monkeypatch.undo()
    (wide.root / "labels" / "a.txt").write_text("1 0.5 0.5 0.4 0.4\n")
    changed = label_cache.load_split_report(wide, "train")
    assert changed.samples[0].boxes.tolist() == [[1.0, 0.5, 0.5, 0.4000000059604645, 0.4000000059604645]]


def test_label_cache_falls_back_to_smartcash_cache_when_read_only(wide, tmp_path, monkeypatch):
    monkeypatch.setenv("SMARTCASH_CACHE", str(tmp_path / "cache"))
    wide.root.chmod(0o555)
    try:
        label_cache.load_split_report(wide, "train")
    finally:
        wide.root.chmod(0o755)
    local, fallback = label_cache.cache_paths(wide, "train")
    assert not local.exists() and fallback.is_file()


def test_loader_workers_reproducible(vnd):
    def first_batch():
        loader = build_dataloader(vnd, "train", 160, batch_size=4, workers=2, augment=True,
                                  shuffle=True, seed=3)
        return next(iter(loader))

    one, two = first_batch(), first_batch()
    assert one.paths == two.paths and torch.equal(one.images, two.images)
    assert torch.equal(one.targets, two.targets)


def test_loader_workers_persist_unless_asked_to_respawn(vnd):
    assert build_dataloader(vnd, "train", 160, batch_size=4, workers=1).persistent_workers
    assert not build_dataloader(vnd, "train", 160, batch_size=4, workers=1, persistent_workers=False).persistent_workers
    assert not build_dataloader(vnd, "train", 160, batch_size=4, workers=0).persistent_workers


def _epoch(loader, epoch: int, mosaic: bool = True) -> list:
    loader.sampler.set_epoch(epoch, mosaic)
    return [(batch.paths, batch.images, batch.targets, batch.letterbox) for batch in loader]


def _same(first: list, second: list) -> bool:
    return len(first) == len(second) and all(
        a[0] == b[0] and all(torch.equal(x, y) for x, y in zip(a[1:], b[1:])) for a, b in zip(first, second))


def test_persistent_workers_replay_any_epoch_exactly(vnd):
    # What a resumed run relies on: epoch 2 is the same whether the workers lived through epochs
    # 0 and 1 (mosaic on) or start at epoch 2, in 2 processes or none; the closing-epoch mosaic
    # switch reaches workers that started with mosaic on.
    def loader(workers: int):
        return build_dataloader(vnd, "train", 128, batch_size=4, workers=workers, augment=True, shuffle=True,
                                seed=5, hyp={"mosaic": 1.0})

    lived = loader(2)
    first, second = _epoch(lived, 0), _epoch(lived, 1)
    assert not _same(first, second)  # epochs differ (order and augmentation)
    closing = _epoch(lived, 2, mosaic=False)
    assert _same(closing, _epoch(loader(2), 2, mosaic=False))
    assert _same(closing, _epoch(loader(0), 2, mosaic=False))
    assert all((letterbox[:, 0] > 0).all() for *_, letterbox in closing)  # no mosaic (its letterbox is 0)
    assert all((letterbox[:, 0] == 0).all() for *_, letterbox in second)  # mosaic=1.0: every sample a mosaic
    assert _same(second, _epoch(loader(0), 1))
