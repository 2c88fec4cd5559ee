"""How a dataset's boxes sit in their images: nested (boxes inside other boxes) or separate.

SmartCash's own taxonomy nests its layers: a note's nominal area and its authentication features
lie inside the whole-note box, so several classes share the same cells and the classifier is what
tells them apart. A set of photographs of whole notes has one box per object, none inside another.
The scratch recipe weighs the class loss by this (``PhaseRecipe.loss_gains_separate``): measured on
data we make, the two layouts want opposite class-loss weights (README, "Learning").

Read once per run from the labels the dataset already holds (not a per-batch path).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: A box counts as nested when at least this share of its area lies inside a larger box.
INSIDE_SHARE = 0.9
#: Labels are "separate objects" when fewer than this share of their boxes are nested.
SEPARATE_BELOW = 0.1


@dataclass(frozen=True)
class LabelLayout:
    """boxes: labelled boxes counted; nested: how many lie (>= INSIDE_SHARE) inside a larger box."""

    boxes: int
    nested: int

    @property
    def nested_fraction(self) -> float:
        return self.nested / self.boxes if self.boxes else 0.0

    @property
    def separate(self) -> bool:
        """Objects stand on their own (few or no boxes inside others); no boxes at all is not separate."""
        return self.boxes > 0 and self.nested_fraction < SEPARATE_BELOW

    def describe(self) -> str:
        kind = "separate objects" if self.separate else "nested boxes"
        return f"{self.nested_fraction:.1%} of {self.boxes} training boxes lie inside another ({kind})"


def label_layout(labels: Sequence[np.ndarray]) -> LabelLayout:
    """``labels``: per image (n, 5) [class, cx, cy, w, h], normalised (``YoloDataset.labels``)."""
    boxes = nested = 0
    for image_labels in labels:
        xywh = np.asarray(image_labels, dtype=np.float64).reshape(-1, 5)[:, 1:]  # (n, 4)
        boxes += len(xywh)
        if len(xywh) < 2:
            continue
        corners = np.concatenate((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2), axis=1)  # (n, 4)
        low = np.maximum(corners[:, None, :2], corners[None, :, :2])  # (n, n, 2)
        high = np.minimum(corners[:, None, 2:], corners[None, :, 2:])
        overlap = np.clip(high - low, 0, None).prod(axis=2)  # (n, n): box i's area inside box j
        area = xywh[:, 2] * xywh[:, 3]  # (n,)
        inside = ((overlap >= INSIDE_SHARE * area[:, None]) & (area[None, :] > area[:, None])
                  & (area[:, None] > 0))  # (n, n); a box without area lies inside nothing
        nested += int(inside.any(axis=1).sum())
    return LabelLayout(boxes, nested)
