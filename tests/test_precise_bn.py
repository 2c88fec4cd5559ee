"""Precise BatchNorm and the EMA of BatchNorm buffers: statistics that describe the weights.

References: ``torch.optim.swa_utils.update_bn`` (the library's own re-estimation) for a model with
nothing frozen, hand-computed EMA arithmetic, and bit-equality for what must not change.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch.optim.swa_utils import update_bn

from smartcash.model.batchnorm import batchnorm_layers
from smartcash.model.build import build_model
from smartcash.model.freeze import freeze_backbone
from smartcash.model.training.optim import ModelEMA
from smartcash.model.training.precise_bn import PreciseBatchNorm, sample_indices


class _Images(torch.utils.data.Dataset):
    """Stand-in for a non-augmenting YoloDataset: items with a uint8 ``image``."""

    def __init__(self, count: int, size: int = 64) -> None:
        generator = torch.Generator().manual_seed(1)
        self.images = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return type("Item", (), {"image": self.images[index]})()


def _stale_model() -> torch.nn.Module:
    """A model whose running statistics do not describe its weights (weights moved, stats did not)."""
    torch.manual_seed(0)
    model = build_model("yolov5n", 17)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(1.5).add_(0.01)
    return model.eval()


def test_equals_torch_update_bn_and_restores_modes() -> None:
    dataset = _Images(12)
    hook = PreciseBatchNorm(dataset, images=8, seed=3, batch_size=4)
    model, reference = _stale_model(), _stale_model()
    report = hook(model, torch.device("cpu"))
    assert report.images == 8 and report.layers == len(batchnorm_layers(model))
    sample = dataset.images[hook.indices].float() / 255
    update_bn([sample[:4], sample[4:]], reference)  # the library's re-estimation, same batches
    for ours, theirs in zip(batchnorm_layers(model), batchnorm_layers(reference)):
        torch.testing.assert_close(ours.running_mean, theirs.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.running_var, theirs.running_var, rtol=1e-5, atol=1e-6)
        assert ours.momentum == 0.03  # restored (update_bn leaves theirs restored too)
    assert not any(module.training for module in model.modules())
    weights = {k: v for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    stale = _stale_model().state_dict()
    assert all(torch.equal(value, stale[key]) for key, value in weights.items())
    # Deterministic: the same sample and result on a second call.
    again = _stale_model()
    hook(again, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))


def test_frozen_backbone_keeps_its_statistics() -> None:
    model = _stale_model()
    freeze_backbone(model)
    backbone_before = copy.deepcopy(model.backbone.state_dict())
    neck_before = copy.deepcopy(model.neck.state_dict())
    PreciseBatchNorm(_Images(6), images=6, seed=0, batch_size=3)(model, torch.device("cpu"))
    assert all(torch.equal(value, model.backbone.state_dict()[key]) for key, value in backbone_before.items())
    changed = [key for key, value in model.neck.state_dict().items()
               if key.endswith("running_mean") and not torch.equal(value, neck_before[key])]
    assert changed


def test_zero_images_is_off() -> None:
    model = _stale_model()
    before = copy.deepcopy(model.state_dict())
    report = PreciseBatchNorm(_Images(4), images=0, seed=0, batch_size=2)(model, torch.device("cpu"))
    assert report.images == 0 and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_sample_is_seeded_distinct_and_spread_over_the_data() -> None:
    first = sample_indices(1000, 128, seed=5)
    assert np.array_equal(first, sample_indices(1000, 128, seed=5))
    assert len(set(first.tolist())) == 128 and first.min() >= 0 and first.max() < 1000
    # Not the first files (datasets often sort by class): both halves of the data are sampled.
    assert (first < 500).sum() > 30 and (first >= 500).sum() > 30
    assert len(sample_indices(10, 128, seed=0)) == 10


def test_ema_averages_batchnorm_buffers_and_copies_frozen_ones() -> None:
    torch.manual_seed(0)
    model = build_model("yolov5n", 17)
    freeze_backbone(model)
    ema = ModelEMA(model, decay=0.9, tau=1e-9)  # decay_t = 0.9 from the first update
    neck_norm = batchnorm_layers(model.neck)[0]
    backbone_norm = batchnorm_layers(model.backbone)[0]
    old_ema_mean = batchnorm_layers(ema.module.neck)[0].running_mean.clone()
    with torch.no_grad():
        neck_norm.running_mean.add_(1.0)
        backbone_norm.running_mean.add_(2.0)
    ema.update(model)
    expected = 0.9 * old_ema_mean + 0.1 * neck_norm.running_mean
    torch.testing.assert_close(batchnorm_layers(ema.module.neck)[0].running_mean, expected)
    assert torch.equal(batchnorm_layers(ema.module.backbone)[0].running_mean, backbone_norm.running_mean)
    assert torch.equal(batchnorm_layers(ema.module.neck)[0].num_batches_tracked, neck_norm.num_batches_tracked)
