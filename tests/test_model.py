"""Detector construction, head decoding, freezing, weights loading and summary (CPU, tiny)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from smartcash.model import build_model
from smartcash.model.anchors import DEFAULT_ANCHORS
from smartcash.model.freeze import backbone_parameters, freeze_backbone, head_parameters, unfreeze_all
from smartcash.model.head import GridCache, decode_predictions
from smartcash.model.summary import model_summary
from smartcash.model.weights import WeightsError, load_pretrained

NUM_CLASSES = 17


@pytest.fixture(scope="module")
def yolov5n() -> nn.Module:
    return build_model("yolov5n", NUM_CLASSES)


def _expected_cells(height: int, width: int) -> list[tuple[int, int]]:
    return [(height // stride, width // stride) for stride in (8, 16, 32)]


@pytest.mark.parametrize(("name", "height", "width"), [
    ("yolov5n", 320, 320), ("yolov5n", 352, 416), ("yolov5s", 640, 640), ("yolov5s", 352, 416),
    ("efficientnet_b4", 320, 320),
])
def test_train_mode_returns_raw_per_scale(name: str, height: int, width: int) -> None:
    model = build_model(name, NUM_CLASSES).train()
    with torch.no_grad():
        raw = model(torch.rand(1, 3, height, width))
    assert isinstance(raw, list) and len(raw) == 3
    for output, (cells_y, cells_x) in zip(raw, _expected_cells(height, width)):
        assert output.shape == (1, 3, cells_y, cells_x, 5 + NUM_CLASSES)
    assert all(conv.out_channels == 66 for conv in model.detect.convs)


@pytest.mark.parametrize(("name", "height", "width"), [("yolov5n", 640, 640), ("efficientnet_b4", 352, 416)])
def test_eval_mode_returns_decoded_and_raw(name: str, height: int, width: int) -> None:
    model = build_model(name, NUM_CLASSES).eval()
    with torch.no_grad():
        decoded, raw = model(torch.rand(2, 3, height, width))
    anchors = sum(3 * y * x for y, x in _expected_cells(height, width))
    assert decoded.shape == (2, anchors, 5 + NUM_CLASSES)
    assert len(raw) == 3 and raw[0].shape[:2] == (2, 3)
    assert ((decoded[..., 4:] >= 0) & (decoded[..., 4:] <= 1)).all()
    assert (decoded[..., 2:4] > 0).all()


def test_model_attributes_and_anchor_buffer(yolov5n: nn.Module) -> None:
    assert yolov5n.stride.tolist() == [8.0, 16.0, 32.0]
    assert yolov5n.num_classes == NUM_CLASSES and yolov5n.detect.num_outputs == 22
    assert yolov5n.detect.anchors.tolist() == [[list(a) for a in level] for level in DEFAULT_ANCHORS]
    state = yolov5n.state_dict()
    assert "detect.anchors" in state and "detect.stride" not in state
    custom = build_model("yolov5n", 2, anchors=[[5, 6, 7, 8, 9, 10], [20, 21, 22, 23, 24, 25], [50, 51, 52, 53, 54, 55]])
    assert custom.detect.anchors[2, 2].tolist() == [54.0, 55.0]


def test_bias_priors_follow_yolov5(yolov5n: nn.Module) -> None:
    for conv, stride in zip(yolov5n.detect.convs, (8, 16, 32)):
        bias = conv.bias.detach().view(3, 22)
        # Default conv init puts |bias| below 1/sqrt(fan_in); the prior dominates it.
        fan_in_bound = 1 / math.sqrt(conv.in_channels)
        assert torch.allclose(bias[:, 4], torch.full((3,), math.log(8 / (640 / stride) ** 2)), atol=fan_in_bound)
        assert torch.allclose(bias[:, 5:], torch.full((3, 17), math.log(0.6 / (17 - 0.99))), atol=fan_in_bound)


def test_yolov5s_parameter_count_matches_yolov5_v6() -> None:
    # YOLOv5s v6.0 (nc = 80) reports 7,235,389 parameters; for nc = 17 the three head convs
    # shrink from (128 + 256 + 512) x 255 + 3 x 255 to (128 + 256 + 512) x 66 + 3 x 66.
    assert sum(p.numel() for p in build_model("yolov5s", 80).parameters()) == 7_235_389
    expected = 7_235_389 - (896 * 255 + 765) + (896 * 66 + 198)
    model = build_model("yolov5s", NUM_CLASSES)
    assert sum(p.numel() for p in model.parameters()) == expected == 7_065_478
    summary = model_summary(model)
    assert summary.parameters == expected
    assert 15.0 < summary.gflops < 16.5  # YOLOv5s v6 (nc = 80) reports 16.5 GFLOPs at 640
    assert "GFLOPs at 640" in str(summary)


def test_unknown_name_and_bad_size_are_clear() -> None:
    with pytest.raises(ValueError, match="yolov5n, yolov5s.*efficientnet_b4"):
        build_model("yolov8n", NUM_CLASSES)
    with pytest.raises(ValueError, match="multiple of 32"):
        build_model("yolov5n", NUM_CLASSES)(torch.zeros(1, 3, 100, 128))


def test_decode_inverts_a_hand_encoded_box() -> None:
    anchors = torch.tensor(DEFAULT_ANCHORS, dtype=torch.float32)
    strides = torch.tensor([8.0, 16.0, 32.0])
    cells = [(8, 10), (4, 5), (2, 3)]  # a 64 x 80 input
    raw = [torch.zeros(1, 3, h, w, 7) for h, w in cells]
    level, anchor, cell_y, cell_x = 1, 2, 3, 1
    box = torch.tensor([30.3, 55.1, 41.0, 90.0])  # cx, cy, w, h pixels
    stride, anchor_wh = strides[level], anchors[level, anchor]
    xy_fraction = (box[:2] / stride - torch.tensor([cell_x, cell_y]) + 0.5) / 2  # sigmoid(t_xy)
    wh_fraction = torch.sqrt(box[2:] / anchor_wh) / 2  # sigmoid(t_wh)
    raw[level][0, anchor, cell_y, cell_x, :4] = torch.logit(torch.cat((xy_fraction, wh_fraction)))
    raw[level][0, anchor, cell_y, cell_x, 4] = 2.0
    cache = GridCache()
    decoded = decode_predictions(raw, anchors, strides, cache)
    index = 3 * 8 * 10 + anchor * 4 * 5 + cell_y * 5 + cell_x
    assert decoded.shape == (1, 3 * (80 + 20 + 6), 7)
    assert torch.allclose(decoded[0, index, :4], box, atol=1e-4)
    assert decoded[0, index, 4].item() == pytest.approx(1 / (1 + math.exp(-2.0)), abs=1e-6)
    assert len(cache) == 3
    grid, anchor_grid = cache.grids(1, 4, 5, anchors, torch.device("cpu"), torch.float32)
    assert cache.grids(1, 4, 5, anchors, torch.device("cpu"), torch.float32)[0] is grid
    assert torch.equal(anchor_grid.view(-1, 2), anchors[1])
    cache.clear()
    assert len(cache) == 0


def test_freeze_keeps_backbone_batchnorm_and_weights_fixed() -> None:
    model = build_model("yolov5n", NUM_CLASSES)
    frozen_count = freeze_backbone(model)
    assert frozen_count == sum(p.numel() for p in backbone_parameters(model))
    model.train()  # the trainer's per-epoch call must not unfreeze BatchNorm
    backbone_norms = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    neck_norm = next(m for m in model.neck.modules() if isinstance(m, nn.BatchNorm2d))
    before = [m.running_mean.clone() for m in backbone_norms]
    neck_before = neck_norm.running_mean.clone()
    model(torch.rand(2, 3, 64, 64))
    assert all(torch.equal(m.running_mean, b) for m, b in zip(backbone_norms, before))
    assert all(not m.training for m in backbone_norms)
    assert not torch.equal(neck_norm.running_mean, neck_before)
    assert all(not p.requires_grad for p in backbone_parameters(model))
    assert all(p.requires_grad for p in head_parameters(model))
    total = sum(p.numel() for p in model.parameters())
    assert frozen_count + sum(p.numel() for p in head_parameters(model)) == total
    assert unfreeze_all(model) == total
    model.train()
    assert all(m.training for m in backbone_norms)


def test_load_pretrained_round_trip_and_reports_skips(tmp_path, yolov5n: nn.Module) -> None:
    source = build_model("yolov5n", NUM_CLASSES).eval()
    with torch.no_grad():
        source.detect.anchors.mul_(1.5)
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": source.state_dict(), "ema": source.state_dict(), "epoch": 3}, path)
    target = build_model("yolov5n", NUM_CLASSES).eval()
    report = load_pretrained(target, path)
    assert report.skipped == () and report.missing == ()
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(target(images)[0], source(images)[0])

    other_classes = build_model("yolov5n", 80)
    report = load_pretrained(other_classes, path)
    assert report.skipped_count == 6  # weight + bias of the three head convs
    assert all(name.startswith("detect.convs.") and "shape" in name for name in report.skipped)
    assert report.loaded_count == len(source.state_dict()) - 6


def test_load_pretrained_converts_yolov5_names(tmp_path) -> None:
    from smartcash.model.build import YOLOV5_LAYER_NAMES

    source = build_model("yolov5n", NUM_CLASSES)
    to_yolov5 = {ours: index for index, ours in YOLOV5_LAYER_NAMES.items()}
    converted = {}
    for name, tensor in source.state_dict().items():
        prefix = next(p for p in sorted(to_yolov5, key=len, reverse=True) if name.startswith(p + "."))
        rest = name[len(prefix) + 1:].replace("convs.", "m.")
        if name == "detect.anchors":  # YOLOv5 keeps anchors in cells of each stride
            tensor = tensor / torch.tensor([8.0, 16.0, 32.0]).view(3, 1, 1)
        converted[f"model.{to_yolov5[prefix]}.{rest}"] = tensor
    path = tmp_path / "yolov5n_state_dict.pt"
    torch.save(converted, path)
    target = build_model("yolov5n", NUM_CLASSES)
    report = load_pretrained(target, path)
    assert report.skipped == () and report.missing == ()
    for name, tensor in source.state_dict().items():
        assert torch.allclose(target.state_dict()[name].float(), tensor.float()), name


def test_load_pretrained_errors(tmp_path, yolov5n: nn.Module) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_pretrained(yolov5n, tmp_path / "missing.pt")
    # A pickled model object is read without running code (tests/test_weights.py); this one is
    # not a detector, and a file that fits nothing is an error, not a silent from-scratch start.
    pickled = tmp_path / "whole_model.pt"
    torch.save(nn.Linear(2, 2), pickled)
    with pytest.raises(WeightsError, match="none of its 2 tensors fit"):
        load_pretrained(yolov5n, pickled)


def test_efficientnet_backbone_keeps_imagenet_batchnorm_eps() -> None:
    """ImageNet EfficientNet-B4 weights were trained with eps 1e-5; YOLOv5's 1e-3 is for the rest."""
    model = build_model("efficientnet_b4", 17)
    norms = lambda module: {m.eps for m in module.modules() if isinstance(m, nn.BatchNorm2d)}  # noqa: E731
    assert norms(model.backbone) == {1e-5}
    assert norms(model.neck) == {1e-3}
