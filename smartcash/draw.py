"""Detections drawn onto an image with OpenCV: a rectangle and a "class score" label per box, and
the image's denomination and authentication features in the top-left corner.

Plain ``cv2`` primitives with the built-in Hershey font: no ultralytics plotting, no font download.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from smartcash.inference import ImagePrediction

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)


def class_color(class_id: int) -> tuple[int, int, int]:
    """A distinct, stable BGR colour per class (golden-ratio hue steps)."""
    hue = (class_id * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(blue * 255), int(green * 255), int(red * 255)


def _label(image: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int], scale: float,
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
        _label(canvas, f"{detection.class_name} {detection.score:.2f}", x1, y1, color, scale, thickness)
    summary = f"denomination: {prediction.denomination or 'none'}"
    if prediction.features:
        summary += f" | {', '.join(prediction.features)}"
    _label(canvas, summary, 0, 0, _BLACK, scale, thickness)
    return canvas
