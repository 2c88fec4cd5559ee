"""One optimisation step, and the watch for a non-finite loss that needs no host sync per batch.

``optimization_step`` is the whole step (forward under AMP, float32 loss, backward, and on an
update: unscale, clip, AdamW, EMA). ``NonFiniteWatch`` keeps the first non-finite loss of an
epoch on the device; the trainer reads it with its progress report every ``HOST_READ_INTERVAL``
batches. On the CPU, where a read costs nothing, the step also checks every loss before its
backward (``host_read_interval``), so there a non-finite loss never reaches the weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from smartcash.model.loss import LossOutput, YoloLoss
from smartcash.model.training.optim import ModelEMA


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf: training stops; the last good checkpoints are left as they were."""

    def __init__(self, epoch: int, batch_index: int, losses: LossOutput | list[float]) -> None:
        values = losses if isinstance(losses, list) else [float(losses.box), float(losses.obj), float(losses.cls)]
        parts = ", ".join(f"{name}={value:.4g}" for name, value in zip(("box", "obj", "cls"), values, strict=True))
        super().__init__(f"non-finite loss at epoch {epoch}, batch {batch_index} ({parts}): training "
                         "stopped; the last good checkpoints were kept (try a lower LR or check the data)")
        self.epoch, self.batch_index = epoch, batch_index


def optimization_step(model: nn.Module, images: Tensor, targets: Tensor, loss_fn: YoloLoss,
                      optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, ema: ModelEMA,
                      *, update: bool, clip_grad_norm: float, amp: bool, where: tuple[int, int],
                      amp_dtype: torch.dtype = torch.float16, check_finite: bool = True) -> LossOutput:
    """Forward, loss, backward; when ``update``: unscale, clip, step, zero, EMA.

    Gradients of the batches between updates add up (accumulation to the nominal batch). With
    ``check_finite`` the loss is checked before backward (a host read), so a non-finite loss never
    reaches the weights; without it the caller watches the losses on the device (``NonFiniteWatch``).
    Under AMP only the model runs in ``amp_dtype``: the loss gets float32 outputs (box IoUs and
    BCE in half precision lose the localisation the loss is there to teach).

    Args:
        images: (B, 3, H, W) in [0, 1]; targets: (n, 6) [image, class, cx, cy, w, h] normalised.
        where: (epoch, batch index) for the error message.
    """
    with torch.autocast(device_type=images.device.type, dtype=amp_dtype, enabled=amp):
        raw = model(images)  # 3 x (B, 3, H/s, W/s, 5 + nc) logits, strides 8/16/32
    losses = loss_fn([level.float() for level in raw], targets)  # total = (box + obj + cls) * B, as YOLOv5
    if check_finite and not torch.isfinite(losses.total):
        raise NonFiniteLossError(*where, losses)
    scaler.scale(losses.total).backward()
    if update:
        scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=clip_grad_norm)
        scaler.step(optimizer)  # skipped by the scaler if AMP produced inf gradients
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        ema.update(unwrap(model))
    return losses


#: Batches between the training loop's host reads on an accelerator (the bar's loss and the
#: non-finite check, in one transfer). On the CPU a read costs nothing: every batch is checked.
HOST_READ_INTERVAL = 10


def host_read_interval(device: torch.device) -> int:
    return 1 if device.type == "cpu" else HOST_READ_INTERVAL


class NonFiniteWatch:
    """The first non-finite loss of an epoch, remembered on the device (no host sync per batch);
    ``check`` reads it with the progress report and raises ``NonFiniteLossError`` for that batch.
    On an accelerator the weights may then have taken up to ``HOST_READ_INTERVAL`` bad steps, but
    no checkpoint ever holds them: checkpoints are written after a finished epoch only."""

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)  # batch index, -1 = none
        self.bad_losses = torch.zeros(3, device=device)  # its box, obj, cls

    def update(self, losses: LossOutput, index: int) -> None:
        newly_bad = ~torch.isfinite(losses.total.detach()) & (self.first_bad < 0)
        self.first_bad = torch.where(newly_bad, index, self.first_bad)
        parts = torch.stack([losses.box, losses.obj, losses.cls]).detach().float()
        self.bad_losses = torch.where(newly_bad, parts, self.bad_losses)

    def check(self, epoch: int, losses: LossOutput, batch_size: int) -> float:
        """One host read: raises for a non-finite loss seen so far; else the last loss per image."""
        first_bad, current = torch.stack([self.first_bad.float(), losses.total.detach().float()]).tolist()
        if first_bad >= 0:
            raise NonFiniteLossError(epoch, int(first_bad), self.bad_losses.tolist())
        return current / batch_size


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
