"""Training augmentation (albumentations, bbox-aware), YOLOv5-style mosaic, resize and letterbox.

Boxes travel as pixel ``pascal_voc`` [x1, y1, x2, y2]. Boxes that become tiny or mostly cut off
are dropped with YOLOv5's box_candidates rule (w, h > 2 px, >= 10 % of the area left, aspect
< 100), expressed through albumentations' BboxParams. No horizontal flip unless asked for: it
mirrors printed numerals.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

PAD_VALUE = 114  # YOLOv5's letterbox grey


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths (YOLOv5 hyp names where one exists); probabilities in [0, 1]."""

    mosaic: float = 1.0  # probability of a 4-image mosaic
    hsv_h: float = 0.015  # hue shift, fraction of the colour circle
    hsv_s: float = 0.7  # saturation gain range 1 +- hsv_s
    hsv_v: float = 0.4  # brightness gain range 1 +- hsv_v
    brightness_contrast: float = 0.2  # probability of an extra brightness/contrast change
    blur: float = 0.05  # probability of a 3..5 px blur
    degrees: float = 0.0
    translate: float = 0.1  # fraction of imgsz
    scale: float = 0.5  # zoom range 1 +- scale
    shear: float = 0.0
    fliplr: float = 0.0  # off: a mirrored note shows mirrored numerals
    flipud: float = 0.0

    @classmethod
    def from_hyp(cls, hyp: AugmentConfig | dict[str, Any] | None) -> AugmentConfig:
        """From a hyp dict; keys that are not augmentation (lr0, momentum ...) are left to others."""
        if hyp is None or isinstance(hyp, AugmentConfig):
            return hyp or cls()
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: float(v) for k, v in hyp.items() if k in names})


@dataclass(frozen=True)
class Letterbox:
    """input_xy = source_xy * scale + (pad_x, pad_y)."""

    scale: float
    pad_x: int
    pad_y: int


def resize_long_side(image: np.ndarray, size: int, fast: bool = False) -> tuple[np.ndarray, float]:
    """Resize so the long side is ``size``, keeping the aspect ratio. -> (image, scale)."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    if scale == 1:
        return image, 1.0
    interpolation = cv2.INTER_LINEAR if fast or scale > 1 else cv2.INTER_AREA
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, new_size, interpolation=interpolation), scale


def letterbox(image: np.ndarray, size: int, fast: bool = False) -> tuple[np.ndarray, Letterbox]:
    """Fit ``image`` into a ``size`` x ``size`` square: resize keeping ratio, pad with grey, centred."""
    resized, scale = resize_long_side(image, size, fast)
    height, width = resized.shape[:2]
    pad_x, pad_y = (size - width) // 2, (size - height) // 2
    out = cv2.copyMakeBorder(resized, pad_y, size - height - pad_y, pad_x, size - width - pad_x,
                             cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return out, Letterbox(scale, pad_x, pad_y)


def mosaic_canvas(tiles: list[tuple[np.ndarray, np.ndarray]], size: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """YOLOv5 load_mosaic: 4 (image, boxes xyxy px) tiles around a random centre of a 2s canvas.

    Returns the (2s, 2s, 3) canvas and the boxes (n, 4) moved onto it, clipped to it.
    """
    canvas = np.full((2 * size, 2 * size, 3), PAD_VALUE, dtype=np.uint8)
    xc, yc = (int(v) for v in rng.uniform(size / 2, 3 * size / 2, size=2))
    moved: list[np.ndarray] = []
    for position, (image, boxes) in enumerate(tiles):
        h, w = image.shape[:2]
        if position == 0:  # top left
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
        elif position == 1:  # top right
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * size), yc
            x1b, y1b = 0, h - (y2a - y1a)
        elif position == 2:  # bottom left
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * size, yc + h)
            x1b, y1b = w - (x2a - x1a), 0
        else:  # bottom right
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * size), min(2 * size, yc + h)
            x1b, y1b = 0, 0
        canvas[y1a:y2a, x1a:x2a] = image[y1b:y1b + (y2a - y1a), x1b:x1b + (x2a - x1a)]
        moved.append(boxes + np.array([x1a - x1b, y1a - y1b] * 2, dtype=np.float32))
    boxes = np.concatenate(moved) if moved else np.zeros((0, 4), dtype=np.float32)
    return canvas, np.clip(boxes, 0, 2 * size)


def build_pipeline(size: int, config: AugmentConfig, mosaic: bool, seed: int | None = None):
    """The albumentations Compose: affine (crop to ``size`` after a mosaic), colour, blur, flips.

    Input: an image (``2 * size`` square after a mosaic, else ``size`` square), ``bboxes``
    pascal_voc pixels and ``classes``; output: a ``size`` square image and surviving boxes.
    """
    import albumentations as A  # lazy: only training imports it

    canvas = 2 * size if mosaic else size
    # The affine centre is the canvas centre, so a shift of `translate * size` is a fraction of it.
    translate = config.translate * size / canvas
    transforms: list[Any] = [
        A.Affine(scale=(1 - config.scale, 1 + config.scale), translate_percent=(-translate, translate),
                 rotate=(-config.degrees, config.degrees), shear=(-config.shear, config.shear),
                 interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_CONSTANT,
                 fill=(PAD_VALUE,) * 3, p=1.0),
    ]
    if mosaic:
        transforms.append(A.CenterCrop(size, size, p=1.0))
    transforms += [
        A.ColorJitter(brightness=config.hsv_v, contrast=0.0, saturation=config.hsv_s, hue=config.hsv_h,
                      p=1.0),
        A.RandomBrightnessContrast(p=config.brightness_contrast),
        A.Blur(blur_limit=(3, 5), p=config.blur),
    ]
    if config.fliplr > 0:
        transforms.append(A.HorizontalFlip(p=config.fliplr))
    if config.flipud > 0:
        transforms.append(A.VerticalFlip(p=config.flipud))
    # YOLOv5 box_candidates: w, h > 2 px, area kept >= 10 %, aspect ratio < 100.
    boxes = A.BboxParams(format="pascal_voc", label_fields=["classes"], min_width=2, min_height=2,
                         min_visibility=0.1, max_accept_ratio=100, clip=True)
    return A.Compose(transforms, bbox_params=boxes, seed=seed)


class Augmenter:
    """Both pipelines (single image and mosaic) and the random state that picks between them."""

    def __init__(self, size: int, config: AugmentConfig | None = None, seed: int = 0):
        self.size = size
        self.config = config or AugmentConfig()
        self.single = build_pipeline(size, self.config, mosaic=False)
        self.mosaic = build_pipeline(size, self.config, mosaic=True)
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart every random stream from ``seed`` (one stream for a run of samples)."""
        self.rng = np.random.default_rng(seed)
        self.single.set_random_seed(seed)
        self.mosaic.set_random_seed(seed + 1)
        self._sample_seed: int | None = None

    def begin_sample(self, seed: int) -> None:
        """Seed one sample's draws from ``seed`` alone (``sampling.sample_seed``); only the pipeline
        the sample uses is re-seeded, when it is used (each costs ~0.1 ms to re-seed)."""
        self.rng = np.random.default_rng(seed)
        self._sample_seed = seed

    def use_mosaic(self) -> bool:
        return bool(self.rng.random() < self.config.mosaic)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray,
                 mosaic: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (image (size, size, 3) uint8, boxes (n, 4) xyxy px, classes (n,))."""
        pipeline = self.mosaic if mosaic else self.single
        if self._sample_seed is not None:
            pipeline.set_random_seed(self._sample_seed + int(mosaic))
        boxes = boxes.reshape(-1, 4)
        # Boxes cut away by the mosaic tiling are flat after clipping; albumentations rejects them.
        keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        out = pipeline(image=image, bboxes=boxes[keep], classes=classes.reshape(-1)[keep])
        kept = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        return out["image"], kept, np.asarray(out["classes"], dtype=np.float32).reshape(-1)
