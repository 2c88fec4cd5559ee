"""Boxes drawn onto images with OpenCV: one prediction onto its image (a rectangle and a "class score"
label per box, the denomination and authentication features in the top-left corner), and batches
of images with their boxes as one grid picture (training and validation batches).

Plain ``cv2`` primitives with the built-in Hershey font: no ultralytics plotting, no font download.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from smartcash.inference import ImagePrediction

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)


def class_color(class_id: int) -> tuple[int, int, int]:
    """A distinct, stable BGR colour per class (golden-ratio hue steps)."""
    hue = (class_id * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(blue * 255), int(green * 255), int(red * 255)


def put_label(image: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int], scale: float,
              thickness: int) -> None:
    """Text on a filled box whose bottom-left corner is (x, y), moved inside the image."""
    (width, height), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    x = min(max(x, 0), max(image.shape[1] - width, 0))
    y = max(y, height + baseline)  # above the box when there is room, else inside it
    cv2.rectangle(image, (x, y - height - baseline), (x + width, y), color, cv2.FILLED)
    brightness = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
    cv2.putText(image, text, (x, y - baseline), _FONT, scale, _BLACK if brightness > 150 else _WHITE,
                thickness, cv2.LINE_AA)


def draw_prediction(image_rgb: np.ndarray, prediction: ImagePrediction) -> np.ndarray:
    """A BGR copy of an (H, W, 3) uint8 RGB image with ``prediction`` drawn on it (ready for imwrite)."""
    canvas = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    side = max(canvas.shape[:2])
    thickness = max(1, round(side / 400))  # lines and text grow with the image
    scale = max(0.3, side / 1200)
    for detection in reversed(prediction.detections):  # best last: drawn on top
        color = class_color(detection.class_id)
        x1, y1, x2, y2 = (int(round(value)) for value in detection.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        put_label(canvas, f"{detection.class_name} {detection.score:.2f}", x1, y1, color, scale, thickness)
    summary = f"denomination: {prediction.denomination or 'none'}"
    if prediction.features:
        summary += f" | {', '.join(prediction.features)}"
    put_label(canvas, summary, 0, 0, _BLACK, scale, thickness)
    return canvas


def draw_boxes(canvas: np.ndarray, boxes: np.ndarray, names: Sequence[str], fine_to_main: Sequence[int],
               scale: float = 0.35, thickness: int = 1) -> None:
    """Draw rows of ``boxes`` onto a BGR ``canvas`` in place, each in its main class's colour and
    labelled with its fine class name (and score, unless NaN: ground truth).

    Args:
        boxes: (n, 6) [x1, y1, x2, y2, score, class] in ``canvas`` pixels.
    """
    for x1, y1, x2, y2, score, fine in boxes[::-1]:  # first (best) last: drawn on top
        color = class_color(fine_to_main[int(fine)])
        corner1, corner2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        cv2.rectangle(canvas, corner1, corner2, color, thickness, cv2.LINE_8)  # crisp on small tiles
        text = names[int(fine)] if math.isnan(score) else f"{names[int(fine)]} {score:.2f}"
        put_label(canvas, text, corner1[0], corner1[1], color, scale, thickness)


def batch_grid(images: np.ndarray, boxes: Sequence[np.ndarray], names: Sequence[str], fine_to_main: Sequence[int],
               paths: Sequence[str] = (), max_images: int = 16, max_side: int = 1920) -> np.ndarray:
    """Images of a batch in a square grid (BGR, ready for ``cv2.imwrite``) with their boxes drawn.

    Args:
        images: (B, H, W, 3) uint8 RGB, all the same size.
        boxes: per image (n_i, 6) [x1, y1, x2, y2, score, class] in that image's pixels; score NaN
            for ground truth.
        names, fine_to_main: the taxonomy's fine class names and their main classes (colours).
        paths: the images' files; their names are written under each tile.
        max_images: the first this many images are drawn.
        max_side: the grid is scaled down to fit this many pixels a side.
    """
    count = min(len(images), max_images)
    columns = max(1, math.ceil(math.sqrt(count)))
    lines = max(1, math.ceil(count / columns))
    height, width = images.shape[1:3] if count else (32, 32)
    factor = min(1.0, max_side / (columns * max(height, width)))
    tile_h, tile_w = max(1, round(height * factor)), max(1, round(width * factor))
    grid = np.full((lines * tile_h, columns * tile_w, 3), 255, dtype=np.uint8)
    scale = max(0.3, min(tile_h, tile_w) / 900)
    for index in range(count):
        tile = cv2.cvtColor(np.ascontiguousarray(images[index]), cv2.COLOR_RGB2BGR)
        if factor != 1.0:
            tile = cv2.resize(tile, (tile_w, tile_h), interpolation=cv2.INTER_AREA)
        rows = np.asarray(boxes[index], dtype=np.float64).reshape(-1, 6).copy()
        rows[:, :4] *= [tile_w / width, tile_h / height] * 2
        draw_boxes(tile, rows, names, fine_to_main, scale)
        if index < len(paths):
            put_label(tile, Path(paths[index]).name[:40], 0, tile_h, (255, 255, 255), scale * 0.9, 1)
        cv2.rectangle(tile, (0, 0), (tile_w - 1, tile_h - 1), (255, 255, 255), 1)  # tile border
        top, left = (index // columns) * tile_h, (index % columns) * tile_w
        grid[top:top + tile_h, left:left + tile_w] = tile
    return grid


def encode_jpeg(image_bgr: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of a BGR image (written atomically by the caller)."""
    ok, data = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image_bgr.shape} image as JPEG")
    return data.tobytes()
