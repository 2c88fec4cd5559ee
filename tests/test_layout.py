"""Label layout (nested boxes vs separate objects): hand-computed cases and the generators' data."""

from __future__ import annotations

import numpy as np
import pytest

from smartcash.data.layout import LabelLayout, label_layout
from smartcash.data.synthetic import render_sample, synthetic_classes
from smartcash.taxonomy import load_taxonomy


def _labels(*boxes: tuple[float, float, float, float]) -> np.ndarray:
    """(n, 5) [class, cx, cy, w, h] from (x1, y1, x2, y2) corners."""
    return np.array([[0, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1] for x1, y1, x2, y2 in boxes]).reshape(-1, 5)


def test_nested_boxes_counted_by_hand() -> None:
    note = (0.1, 0.1, 0.9, 0.9)
    inside = (0.2, 0.2, 0.4, 0.4)  # wholly inside the note
    half = (0.0, 0.5, 0.2, 0.7)  # half of it inside the note (0.1 of 0.2 wide): not nested
    edge = (0.1, 0.5, 0.3, 0.6)  # on the note's edge, all of it inside: nested
    flat = (0.3, 0.3, 0.5, 0.3)  # no area: inside nothing
    images = [_labels(note, inside, half, edge), _labels(note), _labels(), _labels(note, note), _labels(note, flat)]
    layout = label_layout(images)
    # nested: `inside` and `edge`; the note itself, a twin of the same size and a box without area are not
    assert layout == LabelLayout(boxes=9, nested=2)
    assert layout.nested_fraction == pytest.approx(2 / 9) and not layout.separate


def test_share_inside_threshold_is_ninety_percent() -> None:
    note = (0.0, 0.0, 0.5, 1.0)
    assert label_layout([_labels(note, (0.0, 0.0, 0.55, 0.5))]).nested == 1  # 0.5 / 0.55 = 91 % inside
    assert label_layout([_labels(note, (0.0, 0.0, 0.6, 0.5))]).nested == 0  # 83 % inside


@pytest.mark.parametrize(("boxes", "nested", "separate"), [(0, 0, False), (100, 0, True), (100, 9, True),
                                                         (100, 10, False), (100, 80, False)])
def test_separate_below_a_tenth_nested(boxes: int, nested: int, separate: bool) -> None:
    assert LabelLayout(boxes, nested).separate is separate


def test_generated_notes_are_nested_and_their_whole_notes_separate() -> None:
    """The built-in synthetic data nests each note's nominal area and features inside it; the same
    scenes labelled with whole notes only (as photos of notes are) are separate objects."""
    classes = synthetic_classes(load_taxonomy())
    whole_ids = [kind.whole_id for kind in classes.notes]
    labels = [render_sample(0, "train", index, 160, classes).boxes for index in range(24)]
    full = label_layout(labels)
    assert full.nested_fraction > 0.5 and not full.separate
    whole = label_layout([rows[np.isin(rows[:, 0], whole_ids)] for rows in labels])
    assert whole.boxes > 0 and whole.separate
