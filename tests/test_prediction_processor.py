"""PredictionProcessor against hand-computed boxes and a per-image torchvision NMS reference."""

import logging

import pytest
import torch
from torchvision.ops import nms

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
    processor = PredictionProcessor(4, FINE_TO_MAIN, conf_threshold=0.1)
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
    processor = PredictionProcessor(4, FINE_TO_MAIN)
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
    processor = PredictionProcessor(4, FINE_TO_MAIN)
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
    processor = PredictionProcessor(4, FINE_TO_MAIN, conf_threshold=0.05)
    raw = _raw(2, 64)
    direct = processor(raw, ANCHORS, STRIDES)
    reference = processor.postprocess(decode_predictions(raw, ANCHORS, STRIDES))
    torch.testing.assert_close(direct.boxes, reference.boxes)


def _reference(decoded: torch.Tensor, conf: float, iou: float, max_det: int, multi_label: bool,
               max_candidates: int) -> list[torch.Tensor]:
    """YOLOv5-style per-image, per-class NMS with torchvision's plain ``nms`` (the loop lives here only)."""
    results = []
    for image in decoded:
        image = image[image[:, 4] > conf]
        scores_all = image[:, 5:] * image[:, 4:5]
        xy, wh = image[:, :2], image[:, 2:4]
        boxes_all = torch.cat((xy - wh / 2, xy + wh / 2), dim=1)
        if multi_label:
            row, cls = (scores_all > conf).nonzero(as_tuple=True)
            scores = scores_all[row, cls]
        else:
            scores, cls = scores_all.max(dim=1)
            row = (scores > conf).nonzero(as_tuple=True)[0]
            scores, cls = scores[row], cls[row]
        boxes = boxes_all[row]
        order = scores.argsort(descending=True)[:max_candidates]
        boxes, scores, cls = boxes[order], scores[order], cls[order]
        kept = []
        for value in cls.unique():
            index = (cls == value).nonzero(as_tuple=True)[0]
            kept.append(index[nms(boxes[index], scores[index], iou)])
        kept = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long)
        kept = kept[scores[kept].argsort(descending=True)][:max_det]
        results.append(torch.cat((boxes[kept], scores[kept, None], cls[kept, None].float()), dim=1))
    return results


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
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


def test_empty_batch_gives_empty_detections() -> None:
    processor = PredictionProcessor(4, FINE_TO_MAIN, conf_threshold=0.5)
    decoded = torch.zeros(3, 10, 9)
    detections = processor.postprocess(decoded, torch.tensor([[1.0, 0, 0]] * 3), torch.tensor([[64, 64]] * 3))
    assert detections.boxes.shape == (0, 6)
    assert detections.counts.tolist() == [0, 0, 0]
    assert detections.padded.shape == (3, 300, 6)
