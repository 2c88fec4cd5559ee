"""Drawing helpers for the synthetic Rupiah generator: backgrounds, notes, placement, lighting.

Everything here is a pure function of its arguments and a ``numpy.random.Generator``, so the
generator in ``synthetic.py`` is reproducible from a seed. Images are BGR uint8 (OpenCV order).
A note is drawn once in its own frame (``NOTE_WIDTH`` x ``NOTE_HEIGHT``, ~2.2:1 like a real
note) with the boxes of its labelled regions, then warped onto the scene by a 2x3 affine matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

NOTE_WIDTH, NOTE_HEIGHT = 264, 120  # local frame of a note, pixels (aspect 2.2:1)

#: Region names of a drawn note, in the order their boxes are labelled.
REGIONS: tuple[str, ...] = ("note", "nominal", "thread", "watermark", "sign")

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


@dataclass(frozen=True)
class NoteArt:
    """A note drawn in its own frame: image (NOTE_HEIGHT, NOTE_WIDTH, 3) and region boxes."""

    image: np.ndarray
    regions: dict[str, Box]


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian noise (float32) with standard deviation ``sigma``."""
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)


def _blend(image: np.ndarray, target: tuple[float, float, float], amount: float) -> np.ndarray:
    """Mix ``image`` towards a flat colour by ``amount`` in [0, 1] (float32 result)."""
    return image.astype(np.float32) * (1 - amount) + np.asarray(target, np.float32) * amount


def draw_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A varied scene background (size, size, 3): smooth noise, gradient, stripes/tiles or clutter."""
    kind = int(rng.integers(4))
    base = rng.uniform(20, 235, 3).astype(np.float32)
    if kind == 0:  # smooth noise: low-resolution noise upsampled
        cells = int(rng.integers(4, 24))
        low = base + rng.normal(0, 40, (cells, cells, 3))
        image = cv2.resize(low.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    elif kind == 1:  # linear gradient between two colours along a random direction
        other = rng.uniform(20, 235, 3).astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
        t = (x * np.cos(angle) + y * np.sin(angle))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        image = base * (1 - t[..., None]) + other * t[..., None]
    elif kind == 2:  # wood-like stripes or tablecloth tiles
        y, x = np.mgrid[0:size, 0:size].astype(np.float32)
        frequency = rng.uniform(0.03, 0.25)
        if rng.random() < 0.5:
            wobble = 6 * np.sin(y * rng.uniform(0.01, 0.05))
            pattern = np.sin((x + wobble) * frequency)
        else:
            pattern = np.sign(np.sin(x * frequency) * np.sin(y * frequency))
        image = base + pattern[..., None] * rng.uniform(10, 45, 3).astype(np.float32)
    else:  # clutter: random rectangles and circles (distractors that are not notes)
        image = np.empty((size, size, 3), np.float32)
        image[:] = base
        for _ in range(int(rng.integers(4, 12))):
            colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
            x, y = (int(v) for v in rng.integers(0, size, 2))
            extent = int(rng.integers(size // 20, size // 4))
            if rng.random() < 0.5:
                cv2.rectangle(image, (x, y), (x + extent, y + extent // 2), colour, -1)
            else:
                cv2.circle(image, (x, y), extent // 2, colour, -1)
    image = image.astype(np.float32) + _noise(rng, (size, size, 1), rng.uniform(1, 8))  # grey grain
    return np.clip(image, 0, 255).astype(np.uint8)


def _fit_text(text: str, max_width: float, max_height: float) -> tuple[float, int, tuple[int, int], int]:
    """Largest Hershey-duplex scale whose text fits the box: (scale, thickness, size, baseline)."""
    font = cv2.FONT_HERSHEY_DUPLEX
    scale = 2.0
    while True:
        thickness = max(1, int(round(scale * 1.5)))
        (width, height), baseline = cv2.getTextSize(text, font, scale, thickness)
        if (width <= max_width and height + baseline <= max_height) or scale <= 0.3:
            return scale, thickness, (width, height), baseline
        scale *= 0.9


def draw_note(rng: np.random.Generator, denomination: int, colour: tuple[int, int, int]) -> NoteArt:
    """One note of ``denomination`` in its base ``colour`` (BGR) with its labelled regions.

    Regions: the printed numeral (nominal area), a thin dark vertical security thread, a faint
    lighter ellipse (watermark) and a small distinct shape (special sign).
    """
    width, height = NOTE_WIDTH, NOTE_HEIGHT
    shade = np.asarray(colour, np.float32) * rng.uniform(0.85, 1.15)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    # Guilloche-like print: interfering sine waves around the base colour.
    waves = np.sin(x * rng.uniform(0.08, 0.2) + np.sin(y * 0.1) * 2) * np.cos(y * rng.uniform(0.05, 0.15))
    image = shade + waves[..., None] * 18 + _noise(rng, (height, width, 3), 4.0)
    dark = tuple(float(c) for c in np.clip(shade * 0.35, 0, 255))
    cv2.rectangle(image, (2, 2), (width - 3, height - 3), dark, 2)
    portrait = (int(0.40 * width + rng.uniform(-6, 6)), int(0.48 * height))
    cv2.circle(image, portrait, int(0.22 * height), tuple(float(c) for c in np.clip(shade * 0.6, 0, 255)), -1)
    image = np.clip(image, 0, 255).astype(np.uint8)  # cv2.putText draws on uint8 only
    cv2.putText(image, "BANK INDONESIA", (int(0.28 * width), int(0.14 * height)), cv2.FONT_HERSHEY_SIMPLEX,
                0.32, dark, 1, cv2.LINE_AA)

    # Watermark: a faint lighter ellipse on the left, unprinted area.
    centre = (0.14 * width + rng.uniform(-4, 4), 0.5 * height + rng.uniform(-6, 6))
    axes = (0.075 * width * rng.uniform(0.85, 1.1), 0.28 * height * rng.uniform(0.85, 1.1))
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])), 0, 0, 360, 255, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 2.0).astype(np.float32)[..., None] / 255
    image = np.clip(image * (1 - 0.35 * mask) + 245 * 0.35 * mask + 0.5, 0, 255).astype(np.uint8)
    watermark = (centre[0] - axes[0], centre[1] - axes[1], centre[0] + axes[0], centre[1] + axes[1])

    # Security thread: a thin dark vertical band across the whole height.
    thread_x = rng.uniform(0.56, 0.62) * width
    thread_width = rng.uniform(0.022, 0.032) * width
    x1, x2 = int(round(thread_x)), int(round(thread_x + thread_width))
    image[:, x1:x2] = np.clip(_blend(image[:, x1:x2], (30, 30, 30), 0.7), 0, 255).astype(np.uint8)
    thread = (float(x1), 0.0, float(x2), float(height))

    # Nominal area: the printed numeral, top right.
    text = str(denomination)
    scale, thickness, (text_width, text_height), baseline = _fit_text(text, 0.33 * width, 0.3 * height)
    origin = (int(0.64 * width + rng.uniform(0, 0.33 * width - text_width)), int(0.08 * height + text_height))
    ink = (20.0, 20.0, 20.0) if float(shade.mean()) > 110 else (235.0, 235.0, 235.0)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_DUPLEX, scale, ink, thickness, cv2.LINE_AA)
    margin = 2.0
    nominal = (origin[0] - margin, origin[1] - text_height - margin,
               origin[0] + text_width + margin, origin[1] + baseline + margin)

    # Special sign: a small shape in a colour unlike the note (a gold or black mark).
    size = rng.uniform(0.12, 0.16) * height
    sign_centre = (rng.uniform(0.72, 0.9) * width, rng.uniform(0.68, 0.82) * height)
    sign_colour = (40.0, 190.0, 230.0) if rng.random() < 0.5 else (15.0, 15.0, 15.0)
    half = size / 2
    shape = int(rng.integers(3))
    cx, cy = sign_centre
    if shape == 0:  # diamond
        points = np.array([[cx, cy - half], [cx + half, cy], [cx, cy + half], [cx - half, cy]])
        cv2.fillConvexPoly(image, np.round(points).astype(np.int32), sign_colour, cv2.LINE_AA)
    elif shape == 1:  # triangle
        points = np.array([[cx, cy - half], [cx + half, cy + half], [cx - half, cy + half]])
        cv2.fillConvexPoly(image, np.round(points).astype(np.int32), sign_colour, cv2.LINE_AA)
    else:  # ring
        cv2.circle(image, (int(round(cx)), int(round(cy))), int(round(half)), sign_colour, 2, cv2.LINE_AA)
        cv2.circle(image, (int(round(cx)), int(round(cy))), max(1, int(round(half / 3))), sign_colour, -1)
    sign = (cx - half - 1, cy - half - 1, cx + half + 1, cy + half + 1)

    regions = {"note": (0.0, 0.0, float(width), float(height)), "nominal": nominal, "thread": thread,
               "watermark": watermark, "sign": sign}
    return NoteArt(np.clip(image, 0, 255).astype(np.uint8), regions)


def placement_matrix(centre: tuple[float, float], angle: float, scale: float) -> np.ndarray:
    """2x3 affine matrix from the note frame to the scene: scale, rotate, note centre to ``centre``."""
    local_centre = (NOTE_WIDTH / 2, NOTE_HEIGHT / 2)
    matrix = cv2.getRotationMatrix2D(local_centre, angle, scale)
    matrix[:, 2] += np.asarray(centre) - np.asarray(local_centre)
    return matrix


def box_corners(box: Box) -> np.ndarray:
    """The 4 corners (4, 2) of an xyxy box."""
    x1, y1, x2, y2 = box
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64)


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to points (n, 2) -> (n, 2)."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def transformed_box(matrix: np.ndarray, box: Box) -> Box:
    """Axis-aligned box of the transformed corners of ``box`` (pixels, not clipped)."""
    corners = transform_points(matrix, box_corners(box))
    (x1, y1), (x2, y2) = corners.min(axis=0), corners.max(axis=0)
    return float(x1), float(y1), float(x2), float(y2)


def rotated_extent(angle: float, scale: float) -> tuple[float, float]:
    """Width and height of the axis-aligned box of a note placed with ``angle`` and ``scale``."""
    radians = np.deg2rad(angle)
    cos, sin = abs(np.cos(radians)), abs(np.sin(radians))
    return (scale * (NOTE_WIDTH * cos + NOTE_HEIGHT * sin), scale * (NOTE_WIDTH * sin + NOTE_HEIGHT * cos))


def paste_note(scene: np.ndarray, owner: np.ndarray, art: NoteArt, matrix: np.ndarray,
               index: int) -> np.ndarray:
    """Warp ``art`` onto ``scene`` (anti-aliased edge); pixels it covers get ``owner = index``."""
    height, width = scene.shape[:2]
    warped = cv2.warpAffine(art.image, matrix, (width, height), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(np.ones(art.image.shape[:2], np.float32), matrix, (width, height),
                           flags=cv2.INTER_LINEAR)
    owner[alpha > 0.5] = index
    blended = scene.astype(np.float32) * (1 - alpha[..., None]) + warped.astype(np.float32) * alpha[..., None]
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def visible_fraction(owner: np.ndarray, index: int, matrix: np.ndarray, box: Box) -> float:
    """Fraction of a note region (local ``box``) whose scene pixels still belong to note ``index``."""
    corners = transform_points(matrix, box_corners(box))
    x1, y1 = np.floor(corners.min(axis=0)).astype(int)
    x2, y2 = np.ceil(corners.max(axis=0)).astype(int) + 1
    height, width = owner.shape
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if x2 <= x1 or y2 <= y1:
        return 0.0
    region = np.zeros((y2 - y1, x2 - x1), np.uint8)
    cv2.fillConvexPoly(region, np.round(corners - (x1, y1)).astype(np.int32), 1)
    total = int(region.sum())
    if total == 0:
        return 0.0
    visible = int((region.astype(bool) & (owner[y1:y2, x1:x2] == index)).sum())
    return visible / total


def draw_occluder(rng: np.random.Generator, scene: np.ndarray, owner: np.ndarray, target: Box) -> None:
    """Cover part of the ``target`` box (a note) with a random rectangle (a hand, a card); owner = -1."""
    x1, y1, x2, y2 = target
    box_width, box_height = x2 - x1, y2 - y1
    width = rng.uniform(0.15, 0.45) * box_width
    height = rng.uniform(0.2, 0.7) * box_height
    left = rng.uniform(x1 - 0.5 * width, x2 - 0.5 * width)
    top = rng.uniform(y1 - 0.5 * height, y2 - 0.5 * height)
    corner_a = (int(round(left)), int(round(top)))
    corner_b = (int(round(left + width)), int(round(top + height)))
    colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
    cv2.rectangle(scene, corner_a, corner_b, colour, -1)
    cv2.rectangle(owner, corner_a, corner_b, -1, -1)


def apply_lighting(rng: np.random.Generator, scene: np.ndarray) -> np.ndarray:
    """Uneven lighting (a brightness ramp), a colour cast, sensor noise and sometimes blur."""
    size_y, size_x = scene.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    # A separable ramp in [-0.71, 0.71]: column term + row term, broadcast to (H, W).
    columns = (np.arange(size_x, dtype=np.float32) / size_x - 0.5) * np.float32(np.cos(angle))
    rows = (np.arange(size_y, dtype=np.float32) / size_y - 0.5) * np.float32(np.sin(angle))
    level, slope = np.float32(rng.uniform(0.75, 1.15)), np.float32(rng.uniform(0, 0.5))
    gain = level + (rows[:, None] + columns[None, :]) * slope  # (H, W)
    cast = rng.uniform(0.92, 1.08, 3).astype(np.float32)
    lit = scene.astype(np.float32) * gain[..., None] * cast
    lit += _noise(rng, (size_y, size_x, 1), rng.uniform(0.5, 5))  # luminance noise, cheaper than per channel
    lit = np.clip(lit, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        lit = cv2.GaussianBlur(lit, (3, 3), 0)
    return lit
