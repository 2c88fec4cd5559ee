"""Training augmentation (albumentations, bbox-aware), YOLOv5-style mosaic, resize and letterbox.

Boxes travel as pixel ``pascal_voc`` [x1, y1, x2, y2]. The geometry is one random affine warped
straight to the output size (for a mosaic, YOLOv5's random_perspective with its border crop folded
in: a quarter of the pixels an affine of the whole 2s canvas would compute); boxes that become tiny
or mostly cut off are dropped with YOLOv5's box_candidates rule (w, h > 2 px, >= 10 % of the area
left, aspect < 100). Colour, blur and flips then go through albumentations. No horizontal flip
unless asked for: it mirrors printed numerals.
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
    # One zoom for x and y (YOLOv5). False draws them apart, as albumentations' Affine did by
    # default here until 2026-11-29: stretching a note's shape by up to ~3x cost 0.03-0.09 mAP50-95.
    keep_ratio: bool = True
    shear: float = 0.0
    fliplr: float = 0.0  # off: a mirrored note shows mirrored numerals
    flipud: float = 0.0

    @classmethod
    def from_hyp(cls, hyp: AugmentConfig | dict[str, Any] | None) -> AugmentConfig:
        """From a hyp dict; keys that are not augmentation (lr0, momentum ...) are left to others."""
        if hyp is None or isinstance(hyp, AugmentConfig):
            return hyp or cls()
        kinds = {f.name: bool if f.type in (bool, "bool") else float for f in dataclasses.fields(cls)}
        return cls(**{k: kinds[k](v) for k, v in hyp.items() if k in kinds})


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


def mosaic_canvas(tiles: list[tuple[np.ndarray, np.ndarray]], size: int, rng: np.random.Generator,
                  out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """YOLOv5 load_mosaic: 4 (image, boxes xyxy px) tiles around a random centre of a 2s canvas.

    Returns the (2s, 2s, 3) canvas and the boxes (n, 4) moved onto it, clipped to it. ``out``: a
    (2s, 2s, 3) uint8 buffer to draw on (reused, it spares a fresh allocation's page faults).
    """
    shape = (2 * size, 2 * size, 3)
    if out is None or out.shape != shape:
        out = np.empty(shape, dtype=np.uint8)
    canvas = out
    canvas.fill(PAD_VALUE)
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


def affine_matrix(canvas: int, size: int, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """A random affine (zoom, rotation, shear, translation) about the centre of a ``canvas``
    square, into a ``size`` square centred on it: for a mosaic (canvas 2s) this is YOLOv5's
    random_perspective with its border crop folded in, so only the ``size`` output is computed.

    Returns (2, 3) float64: output_xy = M @ [x, y, 1].
    """
    centre = np.eye(3)
    centre[:2, 2] = -canvas / 2  # canvas centre to the origin
    zoom = np.eye(3)
    zoom[0, 0] = rng.uniform(1 - config.scale, 1 + config.scale)
    zoom[1, 1] = zoom[0, 0] if config.keep_ratio else rng.uniform(1 - config.scale, 1 + config.scale)
    rotate = np.eye(3)
    rotate[:2] = cv2.getRotationMatrix2D(angle=rng.uniform(-config.degrees, config.degrees), center=(0, 0), scale=1.0)
    shear = np.eye(3)
    shear[0, 1], shear[1, 0] = (np.tan(np.radians(rng.uniform(-config.shear, config.shear))) for _ in range(2))
    shift = np.eye(3)
    shift[:2, 2] = size / 2 + rng.uniform(-config.translate, config.translate, size=2) * size
    return (shift @ shear @ rotate @ zoom @ centre)[:2]


def warp_boxes(boxes: np.ndarray, matrix: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (n, 4) xyxy through ``matrix``, as the box around their moved corners, clipped to the
    ``size`` square; -> (boxes, keep) with keep = YOLOv5's box_candidates (w, h > 2 px, >= 10 % of
    the moved box's area left after clipping, aspect < 100)."""
    corners = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 2)  # (4n, 2) the four corners
    moved = (corners @ matrix[:, :2].T + matrix[:, 2]).reshape(-1, 8)
    xs, ys = moved[:, 0::2], moved[:, 1::2]
    unclipped = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)  # (n, 4)
    clipped = unclipped.clip(0, size)
    width, height = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area_before = (unclipped[:, 2] - unclipped[:, 0]) * (unclipped[:, 3] - unclipped[:, 1])
    aspect = np.maximum(width / (height + 1e-16), height / (width + 1e-16))
    keep = (width > 2) & (height > 2) & (width * height >= 0.1 * area_before) & (aspect < 100)
    return clipped.astype(np.float32), keep


def build_pipeline(config: AugmentConfig, seed: int | None = None):
    """The albumentations Compose after the geometry: colour, blur, flips (bbox-aware: a flip moves
    the boxes). The affine is ``affine_matrix`` + one ``cv2.warpAffine`` straight to the output size."""
    import albumentations as A  # lazy: only training imports it

    transforms: list[Any] = [
        A.ColorJitter(brightness=config.hsv_v, contrast=0.0, saturation=config.hsv_s, hue=config.hsv_h,
                      p=1.0),
        A.RandomBrightnessContrast(p=config.brightness_contrast),
        A.Blur(blur_limit=(3, 5), p=config.blur),
    ]
    flips = [flip(p=chance) for flip, chance in ((A.HorizontalFlip, config.fliplr), (A.VerticalFlip, config.flipud))
             if chance > 0]
    if not flips:  # colour only: the boxes stay where the affine put them
        return A.Compose(transforms, seed=seed)
    boxes = A.BboxParams(format="pascal_voc", label_fields=["classes"], clip=True)
    return A.Compose(transforms + flips, bbox_params=boxes, seed=seed)


class Augmenter:
    """The geometry (one affine straight to the output size), the colour pipeline, and the random
    state that picks between mosaic and single images."""

    def __init__(self, size: int, config: AugmentConfig | None = None, seed: int = 0):
        self.size = size
        self.config = config or AugmentConfig()
        self.pipeline = build_pipeline(self.config)
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart every random stream from ``seed`` (one stream for a run of samples)."""
        self.rng = np.random.default_rng(seed)
        self.pipeline.set_random_seed(seed)
        self._sample_seed: int | None = None

    def begin_sample(self, seed: int) -> None:
        """Seed one sample's draws from ``seed`` alone (``sampling.sample_seed``); the colour
        pipeline is re-seeded when the sample reaches it."""
        self.rng = np.random.default_rng(seed)
        self._sample_seed = seed

    def use_mosaic(self) -> bool:
        return bool(self.rng.random() < self.config.mosaic)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray,
                 mosaic: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``image``: a 2s mosaic canvas or an s square -> (image (s, s, 3) uint8, boxes (n, 4) xyxy px,
        classes (n,))."""
        canvas = 2 * self.size if mosaic else self.size
        if image.shape[:2] != (canvas, canvas):
            raise ValueError(f"expected a {canvas} x {canvas} {'mosaic canvas' if mosaic else 'image'}, got {image.shape[:2]}")
        matrix = affine_matrix(canvas, self.size, self.config, self.rng)
        # Boxes live on pixel edges, cv2 samples pixel centres: x_c' = M (x_c + 0.5) - 0.5.
        pixels = matrix.copy()
        pixels[:, 2] += matrix[:, :2] @ (0.5, 0.5) - 0.5
        warped = cv2.warpAffine(image, pixels, (self.size, self.size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(PAD_VALUE,) * 3)
        boxes, keep = warp_boxes(boxes.reshape(-1, 4).astype(np.float64), matrix, self.size)
        if self._sample_seed is not None:
            self.pipeline.set_random_seed(self._sample_seed)
        boxes, classes = boxes[keep], classes.reshape(-1)[keep]
        if "bboxes" not in self.pipeline.processors:  # no flip: colour only
            return self.pipeline(image=warped)["image"], boxes, classes.astype(np.float32)
        out = self.pipeline(image=warped, bboxes=boxes, classes=classes)
        kept = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        return out["image"], kept, np.asarray(out["classes"], dtype=np.float32).reshape(-1)
