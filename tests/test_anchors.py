"""Autoanchor (``smartcash.model.anchors``): best-possible recall by hand, re-fitting anchors to a
box set the default anchors cover badly, determinism, and leaving well-covered anchors alone."""

import numpy as np
import pytest
import torch

from smartcash.model.anchors import (BPR_THRESHOLD, DEFAULT_ANCHORS, anchors_per_box, anchors_tensor,
                                     best_possible_recall, check_anchors, kmean_anchors)
from smartcash.model.head import Detect
from smartcash.taxonomy import load_loss_config

IMGSZ = 320
GENERATIONS = 300  # YOLOv5 runs 1000; 300 already converges on these sets and keeps the test fast
DEFAULTS = np.asarray(DEFAULT_ANCHORS, dtype=np.float64).reshape(-1, 2)  # (9, 2)


def _head() -> Detect:
    """A detection head with YOLOv5's default anchors (check_anchors accepts the head alone)."""
    return Detect(17, (8, 8, 8), anchors_tensor(), (8, 16, 32))


def _wide_thin_boxes(seed: int = 0, count: int = 400) -> np.ndarray:
    """(count, 2) banknote-edge-like boxes: 120-300 px wide, 3-8 px tall (aspect 15-100)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(120, 300, count), rng.uniform(3, 8, count)], axis=1)


def _threshold() -> float:
    return load_loss_config().anchor_threshold


def test_best_possible_recall_hand_computed() -> None:
    assert _threshold() == 4.0  # the hand computation below assumes loss.json's YOLOv5 value
    boxes = np.array([[10, 13],   # exactly anchor (10, 13): ratio 1
                      [40, 20],   # anchor (33, 23): min(33/40, 20/23) = 0.825 > 1/4
                      [100, 4],   # best anchor (33, 23): min(33/100, 4/23) = 0.174 < 1/4
                      [200, 5]])  # best anchor (33, 23): min(33/200, 5/23) = 0.165 < 1/4
    assert best_possible_recall(boxes, DEFAULTS, 4.0) == 0.5
    # The ratio must be strictly above 1 / threshold: a box 4x an anchor's width is not matched.
    assert best_possible_recall(np.array([[40.0, 13.0]]), np.array([[10.0, 13.0]]), 4.0) == 0.0
    assert best_possible_recall(np.array([[39.9, 13.0]]), np.array([[10.0, 13.0]]), 4.0) == 1.0
    assert best_possible_recall(np.zeros((0, 2)), DEFAULTS, 4.0) == 1.0


def test_refit_raises_recall_on_boxes_the_defaults_cover_badly() -> None:
    boxes = _wide_thin_boxes()
    before = best_possible_recall(boxes, DEFAULTS, _threshold())
    assert before < BPR_THRESHOLD and before < 0.1  # the defaults barely match anything here

    head = _head()
    check = check_anchors(head, boxes, IMGSZ, generations=GENERATIONS, seed=0)
    assert check.changed and check.bpr_before == pytest.approx(before)
    assert check.bpr_after >= BPR_THRESHOLD and check.bpr_after > before + 0.5  # a real improvement
    written = head.anchors.reshape(-1, 2).double().numpy()
    np.testing.assert_allclose(written, np.array(check.anchors), rtol=1e-6)  # float32 buffer
    assert best_possible_recall(boxes, written, _threshold()) == pytest.approx(check.bpr_after)
    assert (np.diff(written.prod(axis=1)) >= 0).all()  # small to large, as the strides expect
    assert (written[:, 0] / written[:, 1] > 10).all()  # the new anchors are wide and thin too


def test_refit_is_deterministic_for_a_seed() -> None:
    boxes = _wide_thin_boxes(seed=1)
    first = kmean_anchors(boxes, 9, IMGSZ, _threshold(), generations=GENERATIONS, seed=3)
    second = kmean_anchors(boxes, 9, IMGSZ, _threshold(), generations=GENERATIONS, seed=3)
    np.testing.assert_array_equal(first, second)
    heads = _head(), _head()
    checks = [check_anchors(head, boxes, IMGSZ, generations=GENERATIONS, seed=3) for head in heads]
    assert checks[0] == checks[1]
    assert torch.equal(heads[0].anchors, heads[1].anchors)


def test_well_covered_boxes_leave_anchors_unchanged() -> None:
    rng = np.random.default_rng(0)
    boxes = (DEFAULTS[None] * rng.uniform(0.6, 1.6, size=(40, 9, 2))).reshape(-1, 2)  # around every anchor
    head = _head()
    check = check_anchors(head, boxes, IMGSZ, generations=GENERATIONS, seed=0)
    assert not check.changed and check.bpr_before == check.bpr_after == 1.0
    assert check.anchors == tuple(tuple(map(float, anchor)) for anchor in DEFAULTS)
    assert torch.equal(head.anchors, anchors_tensor())


def _large_boxes(count: int = 400) -> np.ndarray:
    """(count, 2) one-note-per-photo boxes at 320 px: 60-95% of the picture on each side."""
    rng = np.random.default_rng(2)
    return rng.uniform(0.6, 0.95, size=(count, 2)) * IMGSZ


def test_fresh_head_fits_large_boxes_the_defaults_leave_to_one_stride() -> None:
    boxes = _large_boxes()
    threshold = _threshold()
    assert best_possible_recall(boxes, DEFAULTS, threshold) == 1.0  # low-recall mode would keep them...
    matched = (np.minimum(boxes[:, None] / DEFAULTS[None], DEFAULTS[None] / boxes[:, None]).min(axis=2)
               > 1 / threshold)  # (N, 9)
    assert not matched[:, :3].any() and matched[:, 6:].all()  # ...though only stride 32's anchors match

    kept = _head()
    assert not check_anchors(kept, boxes, IMGSZ, generations=GENERATIONS, seed=0).changed
    fitted = _head()
    check = check_anchors(fitted, boxes, IMGSZ, generations=GENERATIONS, seed=0, refit="always")
    assert check.changed and check.bpr_after == 1.0
    written = fitted.anchors.reshape(-1, 2).double().numpy()
    assert anchors_per_box(boxes, written, threshold) > 2 * anchors_per_box(boxes, DEFAULTS, threshold)
    assert (written.min(axis=1) > 0.25 * boxes.min()).all()  # every stride gets anchors of these boxes' size


def test_fresh_head_keeps_anchors_a_fit_does_not_beat() -> None:
    boxes = np.repeat(DEFAULTS, 30, axis=0)  # exactly the default anchors: nothing fits better
    head = _head()
    check = check_anchors(head, boxes, IMGSZ, generations=GENERATIONS, seed=0, refit="always")
    assert not check.changed and torch.equal(head.anchors, anchors_tensor())
    with pytest.raises(ValueError, match="refit"):
        check_anchors(head, boxes, IMGSZ, refit="sometimes")
