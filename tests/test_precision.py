"""Mixed precision chosen from the hardware (precision.py), and the trainer running in it."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from smartcash.model.head import Detect
from smartcash.model.training import trainer as trainer_module
from smartcash.model.training.precision import training_precision
from tiny_training import tiny_dataset, train_tiny


def _cpu_units(monkeypatch, avx512_bf16: bool, amx: bool = False) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)


def test_cpu_uses_bfloat16_only_with_native_units(monkeypatch) -> None:
    cpu = torch.device("cpu")
    for avx512_bf16, amx in ((True, False), (False, True)):
        _cpu_units(monkeypatch, avx512_bf16, amx)
        chosen = training_precision(True, cpu)
        assert chosen.dtype == torch.bfloat16 and chosen.amp and not chosen.needs_grad_scaler
        assert chosen.name == "bfloat16"
        assert training_precision(False, cpu).dtype is None  # amp: false always trains in float32
    _cpu_units(monkeypatch, False)
    chosen = training_precision(True, cpu)
    assert chosen.dtype is None and not chosen.amp and chosen.name == "float32"
    assert "no native bfloat16" in chosen.reason


def test_cuda_prefers_native_bfloat16_else_float16_with_scaler(monkeypatch) -> None:
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation)
    assert training_precision(True, cuda).dtype == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    chosen = training_precision(True, cuda)
    assert chosen.dtype == torch.float16 and chosen.needs_grad_scaler


@pytest.mark.parametrize("native", [True, False], ids=["native-bfloat16", "no-bfloat16"])
def test_trainer_convolutions_run_in_the_chosen_precision(tmp_path, monkeypatch, caplog, native) -> None:
    """The training step's convolutions compute in bfloat16 exactly when the CPU has it natively,
    on NHWC inputs either way; the EMA (validated, checkpointed) stays float32 in the plain NCHW
    layout."""
    _cpu_units(monkeypatch, native)
    conv_dtypes: list[torch.dtype] = []
    input_layouts: list[bool] = []
    real_step = trainer_module.optimization_step

    head_dtypes: list[torch.dtype] = []

    def spy(model, images, *args, **kwargs):
        first_conv = next(module for module in model.modules() if isinstance(module, nn.Conv2d))
        detect = next(module for module in model.modules() if isinstance(module, Detect))
        hooks = [first_conv.register_forward_hook(lambda module, inputs, output: conv_dtypes.append(output.dtype))]
        hooks += [conv.register_forward_hook(lambda module, inputs, output: head_dtypes.append(output.dtype))
                  for conv in detect.convs]
        input_layouts.append(images.is_contiguous(memory_format=torch.channels_last))
        try:
            return real_step(model, images, *args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()

    monkeypatch.setattr(trainer_module, "optimization_step", spy)
    with caplog.at_level(logging.INFO, logger="smartcash"):
        assert train_tiny(tmp_path, tiny_dataset(tmp_path / "data"), "--epochs", "1", "--name", "p") == 0
    expected = torch.bfloat16 if native else torch.float32
    assert conv_dtypes and set(conv_dtypes) == {expected}
    assert head_dtypes and set(head_dtypes) == {torch.float32}  # box logits never rounded to bfloat16
    assert set(input_layouts) == {True}  # NHWC on a CPU in either precision: oneDNN's fast layout
    line = next(record.getMessage() for record in caplog.records if record.getMessage().startswith("precision:"))
    assert line.startswith("precision: bfloat16 forward, channels_last" if native else
                           "precision: float32 forward, channels_last (")
    state = torch.load(tmp_path / "runs/train/p/phase1/weights/last.pt", map_location="cpu", weights_only=True)
    ema_tensors = [tensor for tensor in state["ema"].values() if tensor.is_floating_point()]
    assert all(tensor.dtype == torch.float32 and tensor.is_contiguous() for tensor in ema_tensors)
