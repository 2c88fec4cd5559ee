"""A CPU-side guard against host syncs in per-batch code.

On CUDA, reading a tensor's value on the host (``.item()``, ``.tolist()``, ``.cpu()``,
``.numpy()``, ``bool(t)``, ``float(t)``, ``int(t)``) waits for every queued kernel. ``HostReads``
is a ``TorchFunctionMode`` that counts those calls per line of SmartCash code (torch's and
torchvision's own internals are not SmartCash's to change), so a test on the CPU can fail when
a read appears once per batch instead of once per report interval. Syncs that come from
data-dependent shapes (boolean masks in the loss's target assignment, NMS) are not counted: they
are inherent to YOLO training and validation and ultralytics has the same. Nor are the reads of
the loader's collate (``_HOST_ONLY``): it stacks host tensors made from numpy arrays, in a worker
process when the loader has workers, before ``Batch.to`` moves anything to the device.
"""

from __future__ import annotations

import collections
import sys

from torch.overrides import TorchFunctionMode

_READS = {"item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"}
_OURS = "/smartcash/"
_HOST_ONLY = {("data/dataset.py", "stack_channels_first")}  # (file, function): only ever host tensors


class HostReads(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.per_line: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in _READS:
            code = sys._getframe(1).f_code
            caller = code.co_filename
            if _OURS in caller and (caller.split(_OURS)[-1], code.co_name) not in _HOST_ONLY:
                line = sys._getframe(1).f_lineno
                self.per_line[f"{caller.split(_OURS)[-1]}:{line} {func.__name__}"] += 1
        return func(*args, **(kwargs or {}))

    def most(self) -> tuple[str, int]:
        """The line that read most often and its count ('', 0) when none read."""
        return self.per_line.most_common(1)[0] if self.per_line else ("", 0)
