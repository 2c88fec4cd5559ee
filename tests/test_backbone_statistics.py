"""estimate_backbone_statistics: a random frozen backbone gets BatchNorm statistics that describe its
activations (checked against statistics computed by hand from the first layer's conv output), its
weights stay bit-identical, and its features no longer vanish."""

from __future__ import annotations

import torch

from smartcash.model import build_model
from smartcash.model.freeze import estimate_backbone_statistics


def _deepest_feature_std(model: torch.nn.Module, images: torch.Tensor) -> float:
    with torch.no_grad():
        features = model.eval().backbone(images)
    deepest = features[-1] if isinstance(features, (list, tuple)) else features
    return float(deepest.std())


def test_statistics_match_the_data_and_weights_stay() -> None:
    torch.manual_seed(0)
    model = build_model("yolov5n", 17)
    images = torch.rand(6, 3, 128, 128)
    weights_before = {k: v.clone() for k, v in model.backbone.state_dict().items() if "running" not in k
                      and "num_batches" not in k}
    vanished = _deepest_feature_std(model, images)

    counted = estimate_backbone_statistics(model, [images[:4], images[4:]])

    assert counted == 6
    after = model.backbone.state_dict()
    assert all(torch.equal(value, after[key]) for key, value in weights_before.items())
    # First BatchNorm: its input is the first conv's output; the cumulative average over the two
    # batches weights each batch by 1/2 (momentum None averages per batch, as torch documents).
    first_conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    first_norm = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        outputs = [first_conv(batch) for batch in (images[:4], images[4:])]
    expected_mean = sum(out.mean(dim=(0, 2, 3)) for out in outputs) / 2
    torch.testing.assert_close(first_norm.running_mean, expected_mean, rtol=1e-4, atol=1e-6)
    assert first_norm.momentum is not None  # restored for later training
    # Before: the deepest features of a random backbone at initial statistics are ~0.
    assert vanished < 1e-3
    assert _deepest_feature_std(model, images) > 0.05


def test_training_mode_is_restored() -> None:
    model = build_model("yolov5n", 3).train()
    estimate_backbone_statistics(model, [torch.rand(2, 3, 64, 64)])
    assert all(module.training for module in model.modules())
