"""Which mixed precision the training step runs in, chosen from the hardware.

AMP (``amp: true``, the default) only where the hardware computes in half precision natively:
- CUDA: bfloat16 on compute capability 8.0+ (float32's range: no loss scaling, no GradScaler sync),
  else float16 with a GradScaler;
- a CPU with native bfloat16 arithmetic (AVX512-BF16 or AMX): bfloat16. oneDNN's bfloat16
  convolutions run on those units; without them it emulates bfloat16 and would be slower than
  float32, so other CPUs train in float32.
Only the model's forward runs in the low precision; the loss, the optimiser, the EMA and every
validation stay in float32 (``step.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    """The step's autocast: ``dtype`` None = float32 throughout."""

    dtype: torch.dtype | None
    reason: str

    @property
    def amp(self) -> bool:
        return self.dtype is not None

    @property
    def needs_grad_scaler(self) -> bool:
        """float16 gradients underflow without loss scaling; bfloat16 has float32's range."""
        return self.dtype == torch.float16

    @property
    def name(self) -> str:
        return "float32" if self.dtype is None else str(self.dtype).removeprefix("torch.")


def cpu_has_native_bfloat16() -> bool:
    """AVX512-BF16 or AMX tiles (x86): the units oneDNN's bfloat16 convolutions need."""
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(probe is not None and bool(probe()) for probe in probes)


def training_precision(amp: bool, device: torch.device) -> Precision:
    """The precision of the training step on ``device`` when the config asks for ``amp``."""
    if not amp:
        return Precision(None, "amp: false")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return Precision(torch.bfloat16, "CUDA with native bfloat16")
        return Precision(torch.float16, "CUDA without native bfloat16: float16 + GradScaler")
    if device.type == "cpu":
        if cpu_has_native_bfloat16():
            return Precision(torch.bfloat16, "CPU with native bfloat16 (AVX512-BF16 / AMX)")
        return Precision(None, "this CPU has no native bfloat16 (AVX512-BF16 / AMX): float32 is faster")
    return Precision(None, f"no mixed precision on {device.type}")
