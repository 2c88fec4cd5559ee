"""Loading pretrained weights from a local file, matched by name and shape, with a report.

Understands our checkpoints ({"model": ..., "ema": ...}), raw state dicts, YOLOv5 / ultralytics
state dicts (``model.<layer index>.`` names, converted with ``build.YOLOV5_LAYER_NAMES``) and
torchvision EfficientNet state dicts (``features.`` names, loaded into the backbone). Files are
read with ``torch.load(weights_only=True)``: a weights file is data, never code.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from smartcash.model.build import STRIDES, YOLOV5_LAYER_NAMES

logger = logging.getLogger(__name__)

_YOLOV5_KEY = re.compile(r"^model\.(\d+)\.(.+)$")
_CHECKPOINT_KEYS = ("ema", "model", "state_dict")  # EMA weights first, as YOLOv5 does


class WeightsError(ValueError):
    """A weights file that cannot be used: unreadable, not tensors, or a pickled model object."""


@dataclass(frozen=True)
class LoadReport:
    """What ``load_pretrained`` did. ``skipped`` entries read "source_name: reason"."""

    loaded: tuple[str, ...]  # our parameter/buffer names that received a tensor
    skipped: tuple[str, ...]
    missing: tuple[str, ...]  # our names nothing was loaded into

    @property
    def loaded_count(self) -> int:
        return len(self.loaded)

    @property
    def skipped_count(self) -> int:
        return len(self.skipped)


def _read(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found (pretrained weights are never downloaded; "
                                "give a local path)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightsError(
            f"{path}: refused by torch.load(weights_only=True); it pickles Python objects (e.g. a "
            "YOLOv5 checkpoint holding the whole model). Convert it once where that code is trusted: "
            "torch.save(checkpoint['model'].float().state_dict(), 'weights_state_dict.pt')") from error


def _state_dict(payload: Any, path: Path) -> Mapping[str, Tensor]:
    """The tensor mapping inside a checkpoint payload."""
    if isinstance(payload, Mapping) and payload and all(isinstance(v, Tensor) for v in payload.values()):
        return payload
    if isinstance(payload, Mapping):
        for key in _CHECKPOINT_KEYS:
            if payload.get(key) is not None:
                return _state_dict(payload[key], path)
    raise WeightsError(f"{path}: no state dict found (expected tensors by name, or a dict with one of "
                       f"{', '.join(_CHECKPOINT_KEYS)}); got {type(payload).__name__}")


def _target_name(name: str, ours: Mapping[str, Tensor]) -> str | None:
    """Our name for a source tensor name, or None."""
    name = name.removeprefix("module.")  # DistributedDataParallel
    if name in ours:
        return name
    match = _YOLOV5_KEY.match(name)
    if match and int(match.group(1)) in YOLOV5_LAYER_NAMES:
        prefix, rest = YOLOV5_LAYER_NAMES[int(match.group(1))], match.group(2)
        if prefix == "detect":
            rest = re.sub(r"^m\.", "convs.", rest)
        candidate = f"{prefix}.{rest}"
        return candidate if candidate in ours else None
    candidate = f"backbone.{name}"  # a bare backbone's state dict (torchvision features.*)
    return candidate if candidate in ours else None


def load_pretrained(model: nn.Module, path: str | os.PathLike[str]) -> LoadReport:
    """Copy every tensor of the file whose name and shape match into ``model``; report the rest.

    Raises:
        FileNotFoundError: no such file.
        WeightsError: the file is a pickled object graph or holds no state dict.
    """
    path = Path(path)
    source = _state_dict(_read(path), path)
    ours = model.state_dict()
    accepted: dict[str, Tensor] = {}
    skipped: list[str] = []
    for name, tensor in source.items():
        target = _target_name(name, ours)
        if target is None:
            skipped.append(f"{name}: not in model")
            continue
        if target == "detect.anchors" and _YOLOV5_KEY.match(name):
            # YOLOv5 stores anchors in cells of each stride; ours are pixels.
            tensor = tensor * torch.tensor(STRIDES, dtype=tensor.dtype).view(-1, 1, 1)
        if tuple(tensor.shape) != tuple(ours[target].shape):
            skipped.append(f"{name}: shape {tuple(tensor.shape)} != {tuple(ours[target].shape)}")
            continue
        accepted[target] = tensor
    model.load_state_dict(accepted, strict=False)
    detect = getattr(model, "detect", None)
    if detect is not None:
        detect.grid_cache.clear()
    report = LoadReport(loaded=tuple(accepted), skipped=tuple(skipped),
                        missing=tuple(name for name in ours if name not in accepted))
    logger.info("%s: loaded %d/%d tensors, skipped %d%s", path, report.loaded_count, len(ours),
                report.skipped_count, f" ({'; '.join(skipped[:10])}{' ...' if len(skipped) > 10 else ''})"
                if skipped else "")
    return report
