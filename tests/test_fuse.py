"""Fused evaluation copies (``smartcash.model.fuse``) against the unfused models they come from."""

import pytest
import torch

from smartcash.model.build import build_model
from smartcash.model.fuse import fused_copy


def _trained_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Running statistics far from BatchNorm's initial (0, 1), so folding them is not a no-op."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 3, 64, 64) * 3 + 1)
    return model.eval()


@pytest.mark.parametrize("name", ["yolov5n", "efficientnet_b4"])
def test_fused_copy_gives_the_same_boxes_and_scores(name: str) -> None:
    torch.manual_seed(0)
    model = _trained_statistics(build_model(name, 17))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    fused = fused_copy(model)
    assert count_batchnorms(model) > 50 and count_batchnorms(fused) == 0
    assert not model.training and all(p.requires_grad for p in model.parameters())  # the source is untouched
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    images = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        (decoded, raw), (fused_decoded, fused_raw) = model(images), fused_copy(model)(images)
    assert decoded[..., :4].abs().max() > 100  # boxes in pixels: a 1e-4 bound is a tight one
    torch.testing.assert_close(fused_decoded[..., :4], decoded[..., :4], atol=1e-4, rtol=0)  # boxes, pixels
    torch.testing.assert_close(fused_decoded[..., 4:], decoded[..., 4:], atol=1e-4, rtol=0)  # scores
    for mine, reference in zip(fused_raw, raw):
        torch.testing.assert_close(mine, reference, atol=1e-4, rtol=1e-4)


def count_batchnorms(model: torch.nn.Module) -> int:
    return sum(isinstance(module, torch.nn.BatchNorm2d) for module in model.modules())


def test_fused_copy_folds_the_running_statistics_in() -> None:
    torch.manual_seed(1)
    model = _trained_statistics(build_model("yolov5n", 17))
    norm = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        norm.running_mean.add_(5.0)  # statistics that matter: folding must use them, not defaults
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fused_copy(model)(images)[0][..., 4:], model(images)[0][..., 4:], atol=1e-4, rtol=0)
