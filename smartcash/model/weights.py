"""Loading pretrained weights from a local file into a detector, matched by name and shape.

The file is read by ``weight_files.read_weights``, which never runs code from it. What loads:

- SmartCash checkpoints and state dicts (our names); trained on other classes, the head is re-made;
- YOLOv5 v6+ / ultralytics names ``model.<layer index>.`` (state dicts, or the pickled release
  files ``yolov5n.pt``, ``yolov5nu.pt`` ...), converted with ``build.YOLOV5_LAYER_NAMES``:
  backbone (layers 0-9), neck (10-23), and the anchor head (24) where shapes match; ultralytics'
  anchor-free head (``cv2``/``cv3``/``dfl``) has no counterpart here;
- torchvision and timm EfficientNet-B4 ImageNet state dicts (``features.``, or ``conv_stem``,
  ``blocks.`` renamed to those) into the EfficientNet backbone.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Set
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from smartcash.model.build import STRIDES, YOLOV5_LAYER_NAMES
from smartcash.model.weight_files import WeightsError, WeightsFile, read_weights

__all__ = ["LoadReport", "WeightsError", "load_pretrained", "match_tensors", "plan_load"]

logger = logging.getLogger(__name__)

_YOLOV5_KEY = re.compile(r"^model\.(\d+)\.(.+)$")
_ANCHOR_FREE_HEAD = re.compile(r"^(cv2|cv3|dfl|one2one_cv2|one2one_cv3)\.")
#: BatchNorm eps of the ImageNet EfficientNet-B4 weights (torchvision, timm ``efficientnet_b4``).
IMAGENET_BATCHNORM_EPS = 1e-5


@dataclass(frozen=True)
class LoadReport:
    """What ``load_pretrained`` did. ``skipped`` entries read "source_name: reason"."""

    loaded: tuple[str, ...]  # our parameter/buffer names that received a tensor
    skipped: tuple[str, ...]
    missing: tuple[str, ...]  # our names nothing was loaded into
    format: str = ""  # what the file was (``WeightsFile.format``)
    notes: tuple[str, ...] = ()  # loaded, but computes differently from the source model
    trained_on: str = ""  # a SmartCash checkpoint's dataset yaml (``WeightsFile.trained_on``)

    @property
    def loaded_count(self) -> int:
        return len(self.loaded)

    @property
    def skipped_count(self) -> int:
        return len(self.skipped)


def _target_name(name: str, ours: Mapping[str, Tensor]) -> tuple[str | None, str]:
    """Our name for a source tensor name, or None and the reason."""
    if name in ours:
        return name, ""
    match = _YOLOV5_KEY.match(name)
    if match and int(match.group(1)) in YOLOV5_LAYER_NAMES:
        prefix, rest = YOLOV5_LAYER_NAMES[int(match.group(1))], match.group(2)
        if prefix == "detect":
            if _ANCHOR_FREE_HEAD.match(rest):
                return None, "anchor-free head (ultralytics Detect), no counterpart in the anchor head"
            rest = re.sub(r"^m\.", "convs.", rest)
        candidate = f"{prefix}.{rest}"
        return (candidate, "") if candidate in ours else (None, "not in model")
    candidate = f"backbone.{name}"  # a bare backbone's state dict (torchvision features.*)
    return (candidate, "") if candidate in ours else (None, "not in model")


def _foreign_yolov5_layers(ours: Mapping[str, Tensor], source: Mapping[str, Tensor]) -> dict[int, str]:
    """YOLOv5-indexed layers of the file that are another kind of block than ours at that index
    (their tensor names differ): YOLOv5 < v6.0's Focus stem, C3 of another depth, a YOLOv8 C2f.
    Their tensors must not load even where single shapes happen to fit. -> {index: reason}."""
    counter = ".num_batches_tracked"  # absent from some older files: not a difference of block
    theirs: dict[int, set[str]] = {}
    for name in source:
        match = _YOLOV5_KEY.match(name)
        index = int(match.group(1)) if match else -1
        if YOLOV5_LAYER_NAMES.get(index, "detect") != "detect" and not name.endswith(counter):
            theirs.setdefault(index, set()).add(match.group(2))
    foreign = {}
    for index, names in theirs.items():
        prefix = YOLOV5_LAYER_NAMES[index] + "."
        our_names = {name.removeprefix(prefix) for name in ours
                     if name.startswith(prefix) and not name.endswith(counter)}
        if our_names and names != our_names:
            foreign[index] = (f"layer {index} is another block than ours ({prefix[:-1]}): {len(names)} tensors "
                              f"named differently from our {len(our_names)}")
    return foreign


def match_tensors(ours: Mapping[str, Tensor], source: Mapping[str, Tensor],
                  parameter_names: Set[str] = frozenset()) -> tuple[dict[str, Tensor], list[str]]:
    """Which source tensors fit which of ours, by name (converted) and shape.

    A YOLOv5-indexed layer loads only when it is the same kind of block as ours (the same tensor
    names), and a layer's buffers (BatchNorm statistics and counter) only with its parameters: a
    ``num_batches_tracked`` of shape () fits every layer, and alone it is no pretraining.

    Args:
        ours: our state dict.
        source: the file's tensors by its names.
        parameter_names: which of ``ours`` are parameters (the rest are buffers).

    Returns:
        (our name -> tensor to load, ["source name: reason" for every tensor that does not fit]).
    """
    accepted: dict[str, Tensor] = {}
    sources: dict[str, str] = {}
    skipped: list[str] = []
    foreign = _foreign_yolov5_layers(ours, source)
    for name, tensor in source.items():
        target, reason = _target_name(name, ours)
        match = _YOLOV5_KEY.match(name)
        if match and int(match.group(1)) in foreign:
            target, reason = None, foreign[int(match.group(1))]
        if target is None:
            skipped.append(f"{name}: {reason}")
            continue
        if target == "detect.anchors" and match:
            # YOLOv5 stores anchors in cells of each stride; ours are pixels.
            tensor = tensor * torch.tensor(STRIDES, dtype=tensor.dtype).view(-1, 1, 1)
        if tuple(tensor.shape) != tuple(ours[target].shape):
            skipped.append(f"{name}: shape {tuple(tensor.shape)} != {tuple(ours[target].shape)}")
            continue
        accepted[target], sources[target] = tensor, name
    layers_with_parameters = {name.rpartition(".")[0] for name in parameter_names}
    layers_loaded = {name.rpartition(".")[0] for name in accepted if name in parameter_names}
    for target in [name for name in accepted if name not in parameter_names]:
        layer = target.rpartition(".")[0]
        if layer in layers_with_parameters and layer not in layers_loaded:
            del accepted[target]
            skipped.append(f"{sources[target]}: its layer's weights did not load")
    return accepted, skipped


def _notes(model: nn.Module, weights: WeightsFile, accepted: Mapping[str, Tensor]) -> tuple[str, ...]:
    notes = []
    sppf_activation = weights.module_types.get("model.9.cv1.act", "")  # known for pickled models only
    if sppf_activation and not sppf_activation.endswith(".SiLU") and "backbone.p5.2.cv1.conv.weight" in accepted:
        notes.append(f"the file's SPPF (layer 9) activates cv1 with {sppf_activation}, ours (YOLOv5's) with "
                     "SiLU: the layer loads but computes differently until fine-tuned")
    backbone = getattr(model, "backbone", None)
    if backbone is not None and any(name.startswith("backbone.features.") for name in accepted):
        eps = {m.eps for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
        if eps and eps != {IMAGENET_BATCHNORM_EPS}:
            notes.append(f"ImageNet EfficientNet-B4 weights (torchvision, timm efficientnet_b4) were trained "
                         f"with BatchNorm eps {IMAGENET_BATCHNORM_EPS:g}; this backbone's BatchNorm uses eps "
                         f"{', '.join(f'{value:g}' for value in sorted(eps))}")
    return tuple(notes)


def plan_load(model: nn.Module, weights: WeightsFile) -> tuple[dict[str, Tensor], LoadReport]:
    """What ``load_pretrained`` would load from ``weights`` into ``model``; the model is unchanged."""
    ours = model.state_dict()
    accepted, skipped = match_tensors(ours, weights.tensors, {name for name, _ in model.named_parameters()})
    report = LoadReport(loaded=tuple(accepted), skipped=tuple(skipped),
                        missing=tuple(name for name in ours if name not in accepted),
                        format=weights.format, notes=_notes(model, weights, accepted), trained_on=weights.trained_on)
    return accepted, report


def load_pretrained(model: nn.Module, path: str | os.PathLike[str]) -> LoadReport:
    """Copy every tensor of the file whose (converted) name and shape match into ``model``.

    Raises:
        FileNotFoundError: no such file.
        WeightsError: unreadable, refused (its pickle calls code), or none of its tensors fit.
    """
    path = Path(path)
    weights = read_weights(path)
    accepted, report = plan_load(model, weights)
    if not accepted.keys() & {name for name, _ in model.named_parameters()}:  # buffers alone (anchors,
        # BatchNorm counters) are no pretraining
        first = report.skipped[0] if report.skipped else "the file holds only anchors"
        model_flag = f" --model {model.name}" if isinstance(getattr(model, "name", None), str) else ""
        raise WeightsError(f"{path}: none of its {len(weights.tensors)} tensors fit this model's weights "
                           f"(first skipped: {first}); `python -m smartcash.weights inspect {path}{model_flag}` "
                           "shows why")
    model.load_state_dict(accepted, strict=False)
    detect = getattr(model, "detect", None)
    if detect is not None:
        detect.grid_cache.clear()
    skipped = report.skipped
    logger.info("%s (%s): loaded %d/%d tensors, skipped %d%s", path, weights.format, report.loaded_count,
                report.loaded_count + len(report.missing), report.skipped_count,
                f" ({'; '.join(skipped[:10])}{' ...' if len(skipped) > 10 else ''})" if skipped else "")
    for note in report.notes:
        logger.warning("%s: %s", path, note)
    return report
