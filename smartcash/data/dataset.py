"""YoloDataset: good samples of a split -> letterboxed (optionally augmented) image tensors + targets.

Bad samples (see ``checks``) are skipped with one summary warning. Target classes are taxonomy
ids (``DatasetConfig.class_index`` applied). ``collate_batch`` builds the ``Batch`` of
``docs/architecture.md``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from smartcash.data.augment import AugmentConfig, Augmenter, letterbox, mosaic_canvas
from smartcash.data.checks import SplitReport, scan_split
from smartcash.data.dataset_config import DatasetConfig
from smartcash.data.errors import DatasetError
from smartcash.data.image_cache import open_image_cache
from smartcash.data.images import read_image
from smartcash.data.sampling import SampleKey, sample_seed

logger = logging.getLogger(__name__)

STRIDE = 32  # largest detector stride: the input square is a multiple of it


@dataclass
class Batch:
    """One collated batch (see docs/architecture.md)."""

    images: Tensor  # (B, 3, H, W) RGB letterboxed to imgsz: uint8 as collated, float32 in [0, 1] after to()
    targets: Tensor  # (n, 6) float32 [image_index, class, cx, cy, w, h], normalised to (W, H)
    paths: list[str]
    original_shapes: Tensor  # (B, 2) int64 [height, width] of each source image, pixels
    letterbox: Tensor  # (B, 3) float32 [scale, pad_x, pad_y]: input_xy = source_xy * scale + pad

    def to(self, device: torch.device | str) -> Batch:
        """Copy of the batch with every tensor on ``device`` (non-blocking), images as the model's
        float32 in [0, 1]. Workers collate uint8 pixels: a quarter of the bytes through shared
        memory and over the bus, and the conversion runs where the model does (as ultralytics)."""
        images = self.images.to(device, non_blocking=True)
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        return Batch(images, self.targets.to(device, non_blocking=True),
                     self.paths, self.original_shapes.to(device, non_blocking=True),
                     self.letterbox.to(device, non_blocking=True))

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True)."""
        return Batch(self.images.pin_memory(), self.targets.pin_memory(), self.paths,
                     self.original_shapes.pin_memory(), self.letterbox.pin_memory())


@dataclass(frozen=True)
class DatasetItem:
    """One sample as ``YoloDataset[i]`` returns it."""

    image: Tensor  # (3, S, S) uint8 RGB
    targets: Tensor  # (n, 5) float32 [class, cx, cy, w, h] normalised, class = taxonomy id
    path: str
    original_shape: tuple[int, int]  # (height, width)
    letterbox: tuple[float, float, float]  # (scale, pad_x, pad_y); (0, 0, 0) for a mosaic


def stride_aligned(imgsz: int, stride: int = STRIDE) -> int:
    return max(stride, math.ceil(imgsz / stride) * stride)


def _xywhn_to_xyxy(boxes: np.ndarray, width: float, height: float, pad_x: float = 0,
                   pad_y: float = 0) -> np.ndarray:
    """(n, 4) normalised cx cy w h -> (n, 4) pixel x1 y1 x2 y2 (+ pad)."""
    cx, cy, w, h = (boxes[:, i] for i in range(4))
    return np.stack([(cx - w / 2) * width + pad_x, (cy - h / 2) * height + pad_y,
                     (cx + w / 2) * width + pad_x, (cy + h / 2) * height + pad_y], axis=1).astype(np.float32)


def _xyxy_to_xywhn(boxes: np.ndarray, size: int) -> np.ndarray:
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    return np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1) / size


class YoloDataset(Dataset):
    """The good samples of one split of a dataset.

    Args:
        config: the dataset.
        split: ``train``, ``val`` or ``test``.
        imgsz: input size; rounded up to a multiple of 32 (the square side).
        augment: mosaic + affine + colour + blur (training); else letterbox only.
        hyp: AugmentConfig or a hyp dict (augmentation keys are read, others ignored).
        seed: seed of the augmentation streams (the loader reseeds per worker).
        report: a scan to use (its skipped images were reported by whoever made it); default the
            cached scan (``label_cache.load_split_report``), whose skipped images are reported here.
        use_cache: False to scan without reading or writing the label cache.
        cache: decoded-image cache of the augmented path, ``none | ram | disk`` (``image_cache``),
            filled here, before a loader forks its workers. The non-augmented path decodes the
            full image for an exact letterbox and never reads it.
    """

    def __init__(self, config: DatasetConfig, split: str, imgsz: int, augment: bool,
                 hyp: AugmentConfig | dict[str, Any] | None = None, seed: int = 0,
                 report: SplitReport | None = None, use_cache: bool = True, cache: str = "none"):
        self.config, self.split, self.augment = config, split, augment
        self.imgsz = stride_aligned(imgsz)
        if self.imgsz != imgsz:
            logger.warning("imgsz %d is not a multiple of %d: using %d", imgsz, STRIDE, self.imgsz)
        scanned_here = report is None
        if report is None:
            if use_cache:
                from smartcash.data.label_cache import load_split_report

                report = load_split_report(config, split)
            else:
                report = scan_split(config, split)
        self.report = report
        if report.num_skipped and scanned_here:  # one summary warning per scan, not per dataset object
            kinds = ", ".join(f"{k}: {n}" for k, n in report.problems_by_kind().items())
            logger.warning("%s %s: skipped %d of %d images with problems (%s); list them with "
                           "`python -m smartcash.data.check --data %s --split %s`", config.path, split,
                           report.num_skipped, report.num_images, kinds, config.path, split)
        if not report.samples:
            raise DatasetError(f"{config.path}: {split} split has no usable images "
                               f"({report.num_images} found); run `python -m smartcash.data.check`")
        class_index = np.asarray(config.class_index, dtype=np.float32)
        self.paths = [s.image for s in report.samples]
        #: (n, 5) [class, cx, cy, w, h] per sample, class = taxonomy id.
        self.labels = [np.concatenate([class_index[s.boxes[:, :1].astype(np.int64)].reshape(-1, 1),
                                       s.boxes[:, 1:]], axis=1) for s in report.samples]
        #: (N, 2) [height, width] of each source image.
        self.shapes = np.asarray([(s.height, s.width) for s in report.samples], dtype=np.int64)
        self.seed = seed
        if cache != "none" and not augment:
            logger.info("%s split: no augmentation, so no image cache (it holds the training path's images)",
                        split)
            cache = "none"
        #: Each image decoded (reduced) and resized to long side imgsz: where every training sample starts.
        self.images = open_image_cache(cache, self.paths, self.shapes, self.imgsz)
        self.augmenter = Augmenter(self.imgsz, AugmentConfig.from_hyp(hyp), seed) if augment else None
        self._canvas: np.ndarray | None = None  # the mosaic canvas, allocated once per process
        #: For plain integer indices: False augments single images only. Training indexes with
        #: ``SampleKey`` instead, which carries the flag into persistent workers (sampling.py).
        self.mosaic_enabled = True

    def __len__(self) -> int:
        return len(self.paths)

    def reseed(self, seed: int) -> None:
        """Restart the augmentation random streams (the loader calls it in each worker)."""
        if self.augmenter is not None:
            self.augmenter.reseed(seed)

    def _resized(self, index: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """Image with long side imgsz and its boxes (n, 4) xyxy px."""
        image = self.images.get(index).image
        original = (int(self.shapes[index][0]), int(self.shapes[index][1]))
        height, width = image.shape[:2]
        return image, _xywhn_to_xyxy(self.labels[index][:, 1:], width, height), original

    def _augmented(self, index: int, mosaic_enabled: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple, tuple]:
        assert self.augmenter is not None
        if self.augmenter.use_mosaic() and mosaic_enabled:
            others = self.augmenter.rng.integers(0, len(self), size=3)
            indices = [index, *others.tolist()]
            tiles = [self._resized(i) for i in indices]
            canvas, boxes = mosaic_canvas([(t[0], t[1]) for t in tiles], self.imgsz, self.augmenter.rng,
                                          out=self._canvas)
            self._canvas = canvas  # this process's buffer for the next mosaic (each worker has its own)
            classes = np.concatenate([self.labels[i][:, 0] for i in indices])
            image, boxes, classes = self.augmenter(canvas, boxes, classes, mosaic=True)
            return image, boxes, classes, tiles[0][2], (0.0, 0.0, 0.0)
        cached = self.images.get(index)
        # The cached image already has long side imgsz: letterbox only pads it. Its boxes and
        # scale come from the decode's size, as a letterbox of the decode itself would give them.
        image, box = letterbox(cached.image, self.imgsz, fast=True)
        height, width = cached.decoded_shape
        resize = self.imgsz / max(height, width)  # resize_long_side's scale from the decode
        boxes = _xywhn_to_xyxy(self.labels[index][:, 1:], width * resize, height * resize,
                               box.pad_x, box.pad_y)
        image, boxes, classes = self.augmenter(image, boxes, self.labels[index][:, 0], mosaic=False)
        original = (int(self.shapes[index][0]), int(self.shapes[index][1]))
        # Pre-augmentation mapping from the full-size source (the decode may have been reduced).
        scale = resize * width / original[1]
        return image, boxes, classes, original, (scale, box.pad_x, box.pad_y)

    def __getitem__(self, key: int | SampleKey) -> DatasetItem:
        """``key``: an index (augmentation draws from the dataset's running stream), or a
        ``SampleKey`` (augmentation seeded from (seed, epoch, index): the training loader's)."""
        mosaic_enabled = self.mosaic_enabled
        if isinstance(key, SampleKey):
            index, mosaic_enabled = key.index, key.mosaic
            if self.augmenter is not None:
                self.augmenter.begin_sample(sample_seed(self.seed, key.epoch, key.index))
        else:
            index = key
        if self.augmenter is not None:
            image, boxes, classes, original, box_info = self._augmented(index, mosaic_enabled)
        else:
            source = read_image(self.paths[index])
            image, box = letterbox(source, self.imgsz)
            height, width = source.shape[:2]
            boxes = _xywhn_to_xyxy(self.labels[index][:, 1:], width * box.scale, height * box.scale,
                                   box.pad_x, box.pad_y)
            classes, original, box_info = self.labels[index][:, 0], (height, width), (
                box.scale, box.pad_x, box.pad_y)
        targets = np.concatenate([classes.reshape(-1, 1), _xyxy_to_xywhn(boxes, self.imgsz)], axis=1)
        # (3, S, S) view of the HWC pixels: collate's stack makes the one channel-first copy.
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return DatasetItem(tensor, torch.from_numpy(targets.astype(np.float32)), self.paths[index],
                           (int(original[0]), int(original[1])), tuple(float(v) for v in box_info))


def stack_channels_first(images: list[Tensor], out: Tensor | None = None) -> Tensor:
    """(3, S, S) uint8 views of HWC pixels (``DatasetItem.image``) -> one (B, 3, S, S) tensor
    (written into ``out`` when given: a contiguous uint8 tensor of that shape).

    OpenCV's ``split`` writes each image's three planes straight into the batch: the same bytes
    as ``torch.stack``, whose strided copy of channel-last pixels costs several times more (a
    loader worker's largest cost after the augmentation itself).
    """
    first = images[0] if images else None
    if first is None or first.dtype != torch.uint8 or first.dim() != 3 or first.shape[0] != 3 or any(
            image.shape != first.shape or not image.permute(1, 2, 0).is_contiguous() for image in images) or (
            out is not None and not out.is_contiguous()):
        return torch.stack(images, out=out)
    batch = torch.empty((len(images), *first.shape), dtype=torch.uint8) if out is None else out
    planes = batch.numpy()
    for index, image in enumerate(images):
        targets = list(planes[index])
        written = cv2.split(image.permute(1, 2, 0).numpy(), targets)
        for target, plane in zip(targets, written):
            if plane.ctypes.data != target.ctypes.data:  # OpenCV made its own planes: copy them in
                target[...] = plane
    return batch


def collate_batch(items: list[DatasetItem], images: Tensor | None = None) -> Batch:
    """Stack items into a Batch (uint8 images: ``Batch.to`` makes them floats); targets get their
    image index as column 0. ``images``: the batch's images when the caller has stacked them."""
    if images is None:
        images = stack_channels_first([item.image for item in items])  # (B, 3, S, S) uint8
    targets = torch.cat([torch.cat([torch.full((len(item.targets), 1), float(i)), item.targets], dim=1)
                         for i, item in enumerate(items)]) if items else torch.zeros((0, 6))
    return Batch(images=images, targets=targets.reshape(-1, 6), paths=[item.path for item in items],
                 original_shapes=torch.tensor([item.original_shape for item in items], dtype=torch.int64),
                 letterbox=torch.tensor([item.letterbox for item in items], dtype=torch.float32))
