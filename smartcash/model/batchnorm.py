"""Re-estimating BatchNorm running statistics from data, with the weights left as they are.

Why it matters: running statistics are an average over past batches (momentum 0.03). While the
weights move fast (a short run, a high LR) the statistics describe weights from many steps ago, and
a model evaluated with them scores far below what its weights can do. Recomputing them on a sample
of images (Detectron2's PreciseBN, ``torch.optim.swa_utils.update_bn``) makes evaluation describe
the weights. ``update_bn`` resets every BatchNorm of the model; we need to leave a frozen
pretrained backbone's statistics alone, hence this small version with a module filter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

BatchNorm = nn.modules.batchnorm._BatchNorm


def batchnorm_layers(module: nn.Module) -> list[BatchNorm]:
    """Every BatchNorm layer under ``module`` (in ``modules()`` order)."""
    return [layer for layer in module.modules() if isinstance(layer, BatchNorm)]


@torch.no_grad()
def recompute_batchnorm_statistics(model: nn.Module, batches: Iterable[Tensor],
                                   norms: Sequence[BatchNorm] | None = None,
                                   forward: nn.Module | None = None) -> int:
    """Replace the running statistics of ``norms`` by their cumulative average over ``batches``.

    Only the running mean/variance (and ``num_batches_tracked``) of ``norms`` change; every other
    BatchNorm normalises with its own running statistics (eval mode), and no weight changes.
    Train/eval modes and momenta are restored afterwards.

    Args:
        model: the module whose modes are set and restored.
        batches: (B, 3, H, W) image tensors on the model's device, values in [0, 1].
        norms: the layers to re-estimate; default every BatchNorm under ``model``.
        forward: what to run on each batch (e.g. ``model.backbone``); default ``model``.

    Returns:
        The number of images the statistics were estimated from (0 leaves everything as it was).
    """
    norms = batchnorm_layers(model) if norms is None else list(norms)
    batches = iter(batches)
    first = next(batches, None)
    if first is None or not norms:
        return 0
    modes = {module: module.training for module in model.modules()}
    saved = [(norm.momentum, norm.running_mean.clone(), norm.running_var.clone()) for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: every batch counts equally
    model.eval()
    for norm in norms:
        norm.train()  # normalise by batch statistics and accumulate them
    run = forward if forward is not None else model
    images = 0
    try:
        for batch in (first, *batches):
            run(batch)
            images += len(batch)
    except BaseException:
        for norm, (momentum, mean, var) in zip(norms, saved):  # leave the model as it was
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
            norm.momentum = momentum
        raise
    finally:
        for module, training in modes.items():
            module.train(training)
    for norm, (momentum, _, _) in zip(norms, saved):
        norm.momentum = momentum
    return images
