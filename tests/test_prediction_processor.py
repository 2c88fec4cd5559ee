"""PredictionProcessor against hand-computed boxes and a plain-Python greedy NMS written from the
definition (per image, per class; no torch, no torchvision)."""

import logging

import numpy as np
import pytest
import torch

from smartcash.model.head import decode_predictions
from smartcash.model.training.core.prediction_processor import PredictionProcessor

FINE_TO_MAIN = (0, 0, 1, 2)  # 4 fine classes onto 3 main classes


def _decoded(rows: list[list[float]], num_classes: int = 4) -> torch.Tensor:
    """(1, N, 5 + nc) from rows [cx, cy, w, h, obj, class, class_prob]."""
    decoded = torch.zeros(1, len(rows), 5 + num_classes)
    for index, (cx, cy, w, h, obj, cls, prob) in enumerate(rows):
        decoded[0, index, :5] = torch.tensor([cx, cy, w, h, obj])
        decoded[0, index, 5 + int(cls)] = prob
    return decoded


def test_letterbox_is_undone_exactly_and_boxes_are_clipped() -> None:
    processor = PredictionProcessor(4, FINE_TO_MAIN, conf_threshold=0.1, iou_threshold=0.6, max_det=300)
    # Input 64x64 holds a 200x100 (w x h) source at scale 0.25 with pad_y 19.5: input = source * 0.25 + pad.
    letterbox = torch.tensor([[0.25, 0.0, 19.5]])
    original_shapes = torch.tensor([[100, 200]])
    decoded = _decoded([[20.0, 30.0, 8.0, 4.0, 0.9, 2, 1.0],  # inside the note area
                        [2.0, 40.0, 8.0, 20.0, 0.8, 1, 1.0]])  # spills over the left and bottom edges
    detections = processor.postprocess(decoded, letterbox, original_shapes)
    expected = torch.tensor([[64.0, 34.0, 96.0, 50.0, 0.9, 2.0],  # ((16, 28, 24, 32) - pad) / 0.25
                             [0.0, 42.0, 24.0, 100.0, 0.8, 1.0]])  # x1 -8 -> 0, y2 122 -> 100
    torch.testing.assert_close(detections.boxes, expected)
    assert detections.main_class.tolist() == [1, 0]
    assert detections.counts.tolist() == [2]
    torch.testing.assert_close(detections.padded[0, :2], expected)
    assert detections.valid.tolist() == [[True, True] + [False] * 298]


def _raw(batch: int, imgsz: int, num_classes: int = 4, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(imgsz)
    return [torch.randn(batch, 3, imgsz // s, imgsz // s, 5 + num_classes, generator=generator, dtype=dtype)
            for s in (8, 16, 32)]


ANCHORS = torch.tensor([[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]],
                        [[116, 90], [156, 198], [373, 326]]], dtype=torch.float32)
STRIDES = torch.tensor([8.0, 16.0, 32.0])


def test_grid_cache_is_keyed_by_shape_and_dtype_and_cleared_by_set_phase(caplog) -> None:
    processor = PredictionProcessor(4, FINE_TO_MAIN, conf_threshold=0.001, iou_threshold=0.6, max_det=300)
    processor.decode(_raw(2, 64), ANCHORS, STRIDES)
    assert len(processor.grid_cache) == 3  # one grid per scale
    processor.decode(_raw(1, 64), ANCHORS, STRIDES)  # batch size is not part of the key
    assert len(processor.grid_cache) == 3
    processor.decode(_raw(1, 96), ANCHORS, STRIDES)
    assert len(processor.grid_cache) == 6
    processor.decode(_raw(1, 64, dtype=torch.float64), ANCHORS, STRIDES)
    assert len(processor.grid_cache) == 9
    with caplog.at_level(logging.INFO):
        processor.set_phase(2)
    assert len(processor.grid_cache) == 0
    assert sum("phase" in record.getMessage() for record in caplog.records) == 1


def test_anchor_grids_are_cached_so_set_phase_is_what_decodes_new_anchors() -> None:
    # Phase 2 may start from a checkpoint with other anchors (autoanchor re-fitted them): until the
    # phase switch clears the cache, decoding still multiplies by the old anchors.
    processor = PredictionProcessor(4, FINE_TO_MAIN, conf_threshold=0.001, iou_threshold=0.6, max_det=300)
    raw, refitted = _raw(1, 64), ANCHORS * 1.5
    before = processor.decode(raw, ANCHORS, STRIDES)
    stale = processor.decode(raw, refitted, STRIDES)
    torch.testing.assert_close(stale, before)
    processor.set_phase(2)
    expected = decode_predictions(raw, refitted, STRIDES)
    torch.testing.assert_close(processor.decode(raw, refitted, STRIDES), expected)
    # wh scales with the anchor: 1.5x the first decode's, centres unchanged.
    torch.testing.assert_close(expected[..., 2:4], before[..., 2:4] * 1.5)
    torch.testing.assert_close(expected[..., :2], before[..., :2])


def test_call_equals_decode_then_postprocess() -> None:
    processor = PredictionProcessor(4, FINE_TO_MAIN, conf_threshold=0.05, iou_threshold=0.6, max_det=300)
    raw = _raw(2, 64)
    direct = processor(raw, ANCHORS, STRIDES)
    reference = processor.postprocess(decode_predictions(raw, ANCHORS, STRIDES))
    torch.testing.assert_close(direct.boxes, reference.boxes)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> np.float32:
    """IoU of two xyxy boxes in float32, as torchvision's CPU kernel rounds it."""
    f = np.float32
    inter = f(max(0.0, min(a[2], b[2]) - max(a[0], b[0]))) * f(max(0.0, min(a[3], b[3]) - max(a[1], b[1])))
    area_a, area_b = f(a[2] - a[0]) * f(a[3] - a[1]), f(b[2] - b[0]) * f(b[3] - b[1])
    return f(inter / (area_a + area_b - inter))


def _reference(decoded: torch.Tensor, conf: float, iou: float, max_det: int, multi_label: bool,
               max_candidates: int) -> list[np.ndarray]:
    """From the definition, in plain Python: candidates are (anchor, class) pairs with objectness and
    objectness * class probability above ``conf`` (only the best class per anchor unless
    ``multi_label``); the ``max_candidates`` highest enter greedy NMS, one class at a time; the
    ``max_det`` highest survivors remain. Rows [x1, y1, x2, y2, score, class], highest score first."""
    results = []
    for image in decoded.numpy():  # float32: scores are the same roundings as the processor's
        candidates = []
        for cx, cy, w, h, objectness, *probabilities in image:
            if not objectness > conf:
                continue
            box = (float(cx - w / 2), float(cy - h / 2), float(cx + w / 2), float(cy + h / 2))
            scores = [np.float32(objectness * p) for p in probabilities]
            classes = range(len(scores)) if multi_label else [int(np.argmax(scores))]
            candidates += [(float(scores[c]), c, box) for c in classes if scores[c] > conf]
        candidates = sorted(candidates, key=lambda item: -item[0])[:max_candidates]
        kept: list[tuple[float, int, tuple[float, ...]]] = []
        for score, cls, box in candidates:
            if all(other_cls != cls or _iou(box, other_box) <= iou for _, other_cls, other_box in kept):
                kept.append((score, cls, box))
        results.append(np.array([[*box, score, cls] for score, cls, box in kept[:max_det]],
                                dtype=np.float32).reshape(-1, 6))
    return results


def test_nms_hand_computed_case() -> None:
    """Two boxes of one class overlapping at IoU 2/3 (> 0.45): the weaker one goes; the same box
    as another class stays; a box at IoU 1/3 (< 0.45) stays."""
    processor = PredictionProcessor(4, FINE_TO_MAIN, conf_threshold=0.1, iou_threshold=0.45, max_det=300,
                                    multi_label=False)
    decoded = _decoded([[20.0, 20.0, 20.0, 10.0, 0.9, 0, 1.0],  # (10, 15, 30, 25), score 0.9
                        [24.0, 20.0, 20.0, 10.0, 0.8, 0, 1.0],  # shifted 4: inter 16x10, IoU 160 / 240 = 2/3
                        [24.0, 20.0, 20.0, 10.0, 0.7, 3, 1.0],  # the same box, another class
                        [30.0, 20.0, 20.0, 10.0, 0.6, 0, 1.0]])  # shifted 10: IoU 100 / 300 = 1/3
    rows = processor.postprocess(decoded).per_image()[0]
    expected = torch.tensor([[10.0, 15.0, 30.0, 25.0, 0.9, 0.0],
                             [14.0, 15.0, 34.0, 25.0, 0.7, 3.0],
                             [20.0, 15.0, 40.0, 25.0, 0.6, 0.0]])
    torch.testing.assert_close(rows, expected)


@pytest.mark.parametrize(("num_anchors", "multi_label", "max_candidates"),
                         [(40, True, 30000), (400, True, 30000), (400, False, 30000), (400, True, 150)])
def test_batched_nms_equals_per_image_reference(num_anchors: int, multi_label: bool, max_candidates: int) -> None:
    generator = torch.Generator().manual_seed(num_anchors)
    batch, num_classes = 4, 4
    decoded = torch.rand(batch, num_anchors, 5 + num_classes, generator=generator)
    # Coordinates on a 1/8 pixel grid: exact in float32 whatever offset NMS adds, so no IoU ties at the threshold.
    decoded[..., :2] = (decoded[..., :2] * 96 * 8).round() / 8
    decoded[..., 2:4] = (decoded[..., 2:4] * 30 * 8).round() / 8 + 1
    processor = PredictionProcessor(num_classes, FINE_TO_MAIN, conf_threshold=0.05, iou_threshold=0.45,
                                    max_det=50, multi_label=multi_label, max_candidates=max_candidates)
    detections = processor.postprocess(decoded)
    reference = _reference(decoded, 0.05, 0.45, 50, multi_label, max_candidates)
    assert detections.counts.tolist() == [len(rows) for rows in reference]
    for mine, theirs in zip(detections.per_image(), reference):
        torch.testing.assert_close(mine, torch.from_numpy(theirs), rtol=0, atol=0)


def test_empty_batch_gives_empty_detections() -> None:
    processor = PredictionProcessor(4, FINE_TO_MAIN, conf_threshold=0.5, iou_threshold=0.6, max_det=300)
    decoded = torch.zeros(3, 10, 9)
    detections = processor.postprocess(decoded, torch.tensor([[1.0, 0, 0]] * 3), torch.tensor([[64, 64]] * 3))
    assert detections.boxes.shape == (0, 6)
    assert detections.counts.tolist() == [0, 0, 0]
    assert detections.padded.shape == (3, 300, 6)
