"""YOLO label files (boxes or polygons, one object a line) -> checked, normalised box arrays."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

#: Coordinates this far outside [0, 1] are clipped silently (export rounding); further is a problem.
COORDINATE_TOLERANCE = 0.01
#: A box narrower or lower than this (normalised) has no area.
MIN_SIZE = 1e-6

# Problem kinds: short, stable keys that the checker counts ("problems by reason").
WRONG_COLUMNS = "wrong column count"
NON_NUMERIC = "non-numeric value"
NON_FINITE = "NaN/inf value"
BAD_CLASS = "class id out of range"
OUTSIDE = "coordinates outside [0,1]"
ZERO_AREA = "zero-area box"
DUPLICATE = "duplicate row"
UNREADABLE_LABEL = "unreadable label file"


@dataclass(frozen=True)
class LabelProblem:
    """One bad line (or a whole bad file when ``line`` is 0) of a label file."""

    path: str
    line: int
    reason: str
    kind: str = "label"

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.reason}"


@dataclass(frozen=True, eq=False)
class ParsedLabels:
    """Boxes (n, 5) float32 [class, cx, cy, w, h] normalised; bad lines dropped, listed in problems."""

    boxes: np.ndarray
    problems: tuple[LabelProblem, ...] = field(default=())


def _parse_line(tokens: list[str], num_classes: int) -> tuple[list[float] | None, str, str]:
    """One split line -> ([class, cx, cy, w, h], "", "") or (None, kind, reason)."""
    count = len(tokens)
    if count != 5 and (count < 7 or count % 2 == 0):
        return None, WRONG_COLUMNS, (f"{WRONG_COLUMNS}: {count} values (a box needs 5: class cx cy w h;"
                                     " a polygon needs class and 3+ x y pairs)")
    values: list[float] = []
    for token in tokens:
        try:
            values.append(float(token))
        except ValueError:
            return None, NON_NUMERIC, f"{NON_NUMERIC} {token[:20]!r}"
    if not all(math.isfinite(v) for v in values):
        return None, NON_FINITE, f"{NON_FINITE} in {' '.join(tokens)[:60]!r}"
    class_value = values[0]
    if class_value != int(class_value) or not 0 <= class_value < num_classes:
        return None, BAD_CLASS, (f"class id {tokens[0]} is not an integer in 0..{num_classes - 1}"
                                 f" (the dataset yaml lists {num_classes} names)")
    if count == 5:
        cx, cy, w, h = values[1:]
        if w < 0 or h < 0:
            return None, ZERO_AREA, f"{ZERO_AREA}: negative size w={w:g} h={h:g}"
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    else:
        xs, ys = values[1::2], values[2::2]
        x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
    low, high = -COORDINATE_TOLERANCE, 1 + COORDINATE_TOLERANCE
    if min(x1, y1) < low or max(x2, y2) > high:
        return None, OUTSIDE, (f"{OUTSIDE}: box x {x1:.4g}..{x2:.4g}, y {y1:.4g}..{y2:.4g}"
                               f" (more than {COORDINATE_TOLERANCE:g} outside; labels must be normalised)")
    x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in (x1, y1, x2, y2))
    w, h = x2 - x1, y2 - y1
    if w < MIN_SIZE or h < MIN_SIZE:
        return None, ZERO_AREA, f"{ZERO_AREA}: w={w:.3g} h={h:.3g}"
    return [class_value, (x1 + x2) / 2, (y1 + y2) / 2, w, h], "", ""


def parse_label_text(text: str, num_classes: int, path: str = "<text>") -> ParsedLabels:
    """Parse the contents of a YOLO label file; see ``parse_label_file``."""
    rows: list[list[float]] = []
    seen: dict[tuple[float, ...], int] = {}
    problems: list[LabelProblem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        row, kind, reason = _parse_line(tokens, num_classes)
        if row is None:
            problems.append(LabelProblem(path, number, reason, kind))
            continue
        key = tuple(np.asarray(row, dtype=np.float32).tolist())
        if key in seen:
            problems.append(LabelProblem(path, number, f"{DUPLICATE} (same as line {seen[key]}), dropped",
                                         DUPLICATE))
            continue
        seen[key] = number
        rows.append(row)
    boxes = np.asarray(rows, dtype=np.float32).reshape(-1, 5)
    return ParsedLabels(boxes=boxes, problems=tuple(problems))


def parse_label_file(path: str | os.PathLike[str], num_classes: int) -> ParsedLabels:
    """Read one YOLO label file.

    Lines are ``class cx cy w h`` (normalised) or polygons ``class x1 y1 x2 y2 x3 y3 ...`` which
    become their bounding box. An empty file is a background image. Bad lines are dropped and
    reported (path, line number, reason); coordinates within ``COORDINATE_TOLERANCE`` outside
    [0, 1] are clipped; duplicate rows are dropped and reported.

    Args:
        path: the ``.txt`` label file.
        num_classes: number of class names in the dataset yaml (valid ids are 0..num_classes-1).

    Returns:
        ParsedLabels with boxes (n, 5) float32 [class, cx, cy, w, h] and the problems found.
    """
    try:
        with open(path, encoding="utf-8-sig") as handle:  # -sig: Windows editors prepend a BOM
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        empty = np.zeros((0, 5), dtype=np.float32)
        problem = LabelProblem(str(path), 0, f"{UNREADABLE_LABEL} ({error})", UNREADABLE_LABEL)
        return ParsedLabels(boxes=empty, problems=(problem,))
    return parse_label_text(text, num_classes, str(path))
