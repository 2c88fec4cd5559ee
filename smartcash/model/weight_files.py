"""Reading a weights file of any format users have into one flat ``{name: tensor}`` mapping.

Formats: torch state dicts and checkpoints (``torch.load(weights_only=True)``), pickled YOLOv5 and
ultralytics models (``restricted_pickle``, which runs none of the pickle's code) and safetensors
(the ``safetensors`` package when installed, else the small reader here). Names are left as the
file has them, except timm EfficientNet names, which become torchvision's (``features.``) so that
one name map (in ``weights``) serves both. Floating tensors come back as float32.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from smartcash.model.restricted_pickle import (PickledObject, UnsafePickleError, is_module, module_tensors,
                                               named_modules, read_torch_archive)

#: Checkpoint keys holding weights, in order of preference (EMA weights first, as YOLOv5 does).
CHECKPOINT_KEYS = ("ema", "model", "state_dict")
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_SAFETENSORS_MAX_HEADER = 100 * 2**20  # the format's own limit (100 MB)


class WeightsError(ValueError):
    """A weights file that cannot be used: unreadable, refused (code in its pickle), or no tensors."""


@dataclass(frozen=True)
class WeightsFile:
    """The tensors of a weights file and what the file was.

    Attributes:
        format: ``safetensors``, ``state dict``, ``SmartCash checkpoint``, ``checkpoint`` or
            ``pickled <module.Class>`` (read by the restricted unpickler).
        tensors: source name -> tensor (floating point as float32), timm names already renamed.
        key: the checkpoint key the tensors came from ("ema", "model", ...), "" for a bare state dict.
        dtypes: the source dtypes seen, e.g. ("float16", "int64").
        keys: the checkpoint's top-level keys.
        pickled_globals: classes the pickle named (none were imported), for a pickled model.
        module_types: module path -> pickled class (``model.9.cv1.act`` -> ``...SiLU``), for a
            pickled model.
        trained_on: a SmartCash checkpoint's dataset yaml (its ``config.data``), else "".
    """

    format: str
    tensors: dict[str, Tensor]
    key: str = ""
    dtypes: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    pickled_globals: tuple[str, ...] = ()
    module_types: dict[str, str] = field(default_factory=dict)
    trained_on: str = ""


def read_weights(path: str | os.PathLike[str]) -> WeightsFile:
    """Read every tensor of a weights file, never running code from it.

    Raises:
        FileNotFoundError: no such file.
        WeightsError: unreadable, refused, or no tensors found.
    """
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{path}: is a folder; give the weights file in it (.pt, .pth or .safetensors)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found (pretrained weights are never downloaded; "
                                "give a local path)")
    if _is_safetensors(path):
        return _finish(path, "safetensors", read_safetensors(path))
    with path.open("rb") as handle:
        head = handle.read(2)
    if head != b"PK" and not head.startswith(b"\x80"):  # neither a torch zip archive nor a pickle
        what = "an empty file" if not head else f"its first bytes are {head!r}"
        raise WeightsError(f"{path}: not a weights file ({what}; expected a PyTorch .pt/.pth or a "
                           ".safetensors file)")
    pickled_globals: tuple[str, ...] = ()
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as refusal:  # it pickles objects: read them without running code
        if not zipfile.is_zipfile(path):  # torch's own advice (weights_only=False) would run its code
            found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", str(refusal))
            what = f"it calls {found.group(1)}" if found else "it holds objects, not only tensors"
            raise WeightsError(f"{path}: refused: a legacy (non-zip) pickle that torch.load(weights_only=True) "
                               f"cannot read ({what}); SmartCash never runs pickled code. Re-save its state "
                               "dict with torch.save where you trust the file") from refusal
        try:
            archive = read_torch_archive(path)
        except UnsafePickleError as error:
            raise WeightsError(f"{path}: refused: {error}. Weights are read with "
                               "torch.load(weights_only=True), or for pickled YOLOv5/ultralytics models "
                               "with a reader that rebuilds tensors only") from error
        except pickle.UnpicklingError as error:
            raise WeightsError(f"{path}: refused by torch.load(weights_only=True) and not readable as a "
                               f"pickled model: {_first_line(error)}") from error
        payload, pickled_globals = archive.payload, archive.pickled_globals
    except (RuntimeError, EOFError, OSError) as error:  # torch reports a corrupt file as RuntimeError
        raise WeightsError(f"{path}: not a weights file torch can read ({_first_line(error)})") from error
    source, key = _select_weights(payload, path)
    keys = tuple(str(name) for name in payload) if key and isinstance(payload, Mapping) else ()
    weights = _finish(path, _describe(payload, key), source, key, pickled_globals, keys)
    config = payload.get("config") if weights.format == "SmartCash checkpoint" else None
    data = config.get("data") if isinstance(config, Mapping) else None
    return replace(weights, trained_on=data) if isinstance(data, str) else weights


def _first_line(error: BaseException) -> str:
    """Error messages here are one line; torch's span several."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _finish(path: Path, kind: str, source: Mapping[str, Any] | PickledObject, key: str = "",
            pickled_globals: tuple[str, ...] = (), keys: tuple[str, ...] = ()) -> WeightsFile:
    module_types: dict[str, str] = {}
    if isinstance(source, PickledObject):
        module_types = {path: type(module).pickled_global for path, module in named_modules(source).items()}
        source = module_tensors(source)
    tensors = {name.removeprefix("module."): value for name, value in source.items()  # DDP's prefix
               if isinstance(value, Tensor)}
    if not tensors:
        raise WeightsError(f"{path}: holds no tensors")
    dtypes = tuple(sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values()}))
    tensors = {name: t.float() if t.is_floating_point() else t for name, t in tensors.items()}
    return WeightsFile(kind, timm_to_torchvision(tensors), key, dtypes, keys, pickled_globals, module_types)


def _select_weights(payload: Any, path: Path, key: str = "") -> tuple[Mapping[str, Any] | PickledObject, str]:
    """The tensor mapping or pickled module inside a payload, and the checkpoint key it sits under."""
    if is_module(payload):
        return payload, key
    if isinstance(payload, Mapping) and payload and all(isinstance(v, Tensor) for v in payload.values()):
        return payload, key
    if isinstance(payload, Mapping):
        for name in CHECKPOINT_KEYS:
            if payload.get(name) is not None:
                return _select_weights(payload[name], path, key or name)
    found = payload.pickled_global if isinstance(payload, PickledObject) else type(payload).__name__
    raise WeightsError(f"{path}: no weights found (expected tensors by name, a pickled nn.Module, or a dict "
                       f"with one of {', '.join(CHECKPOINT_KEYS)}); got {found}")


def _describe(payload: Any, key: str) -> str:
    source = payload.get(key) if key and isinstance(payload, Mapping) else payload
    if isinstance(source, PickledObject):
        return f"pickled {source.pickled_global}"
    if isinstance(payload, Mapping) and key:
        return "SmartCash checkpoint" if "model_name" in payload and "taxonomy" in payload else "checkpoint"
    return "state dict"


# --- safetensors ---------------------------------------------------------------------------------

def _is_safetensors(path: Path) -> bool:
    """8-byte little-endian header length, then a JSON object (the format's first bytes)."""
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) < 9 or head[:2] == b"PK":  # PK: a torch zip archive
        return False
    return head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= _SAFETENSORS_MAX_HEADER


def read_safetensors(path: Path) -> dict[str, Tensor]:
    """All tensors of a .safetensors file (with the ``safetensors`` package when installed)."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        return parse_safetensors(path.read_bytes(), str(path))
    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # safetensors raises its own SafetensorError for malformed files
        raise WeightsError(f"{path}: not a readable safetensors file ({error})") from error


def parse_safetensors(data: bytes, source: str = "<bytes>") -> dict[str, Tensor]:
    """The safetensors format: u64 little-endian N, N bytes of JSON header, then raw tensor bytes.

    The header maps names to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the
    bytes after the header); an optional ``__metadata__`` entry holds strings.
    """
    if sys.byteorder != "little":
        raise WeightsError(f"{source}: safetensors on a big-endian machine is not supported")
    if len(data) < 8:
        raise WeightsError(f"{source}: too short for a safetensors file")
    header_size = int.from_bytes(data[:8], "little")
    if header_size > min(_SAFETENSORS_MAX_HEADER, len(data) - 8):
        raise WeightsError(f"{source}: safetensors header size {header_size} exceeds the file")
    try:
        header = json.loads(data[8:8 + header_size])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(f"{source}: safetensors header is not JSON ({error})") from error
    if not isinstance(header, dict):
        raise WeightsError(f"{source}: safetensors header is not a JSON object")
    body = memoryview(data)[8 + header_size:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
            shape = [int(size) for size in entry["shape"]]
            begin, end = (int(offset) for offset in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as error:
            raise WeightsError(f"{source}: tensor {name!r}: bad header entry {entry!r:.120} "
                               f"(dtypes: {', '.join(_SAFETENSORS_DTYPES)})") from error
        fits = 0 <= begin <= end <= len(body) and end - begin == math.prod(shape) * dtype.itemsize
        if not fits or min(shape, default=0) < 0:
            raise WeightsError(f"{source}: tensor {name!r}: data_offsets [{begin}, {end}] do not fit "
                               f"shape {shape} of {entry['dtype']} in {len(body)} data bytes")
        raw = bytearray(body[begin:end])
        flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(shape)
    return tensors


# --- timm EfficientNet names -> torchvision names ---------------------------------------------

_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.(.+)\.([a-z_]+)$")  # stage, block, layer, leaf
_TIMM_TOP = {"conv_stem": "features.0.0", "bn1": "features.0.1", "conv_head": "features.8.0",
             "bn2": "features.8.1", "classifier": "classifier.1"}
#: timm's DepthwiseSeparableConv (stage 0: no expansion) -> torchvision MBConv ``block`` layers.
_TIMM_DEPTHWISE_SEPARABLE = {"conv_dw": "0.0", "bn1": "0.1", "se.conv_reduce": "1.fc1",
                             "se.conv_expand": "1.fc2", "conv_pw": "2.0", "bn2": "2.1"}
#: timm's InvertedResidual (expand, depthwise, squeeze-excite, project).
_TIMM_INVERTED_RESIDUAL = {"conv_pw": "0.0", "bn1": "0.1", "conv_dw": "1.0", "bn2": "1.1",
                           "se.conv_reduce": "2.fc1", "se.conv_expand": "2.fc2", "conv_pwl": "3.0", "bn3": "3.1"}


def timm_to_torchvision(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a timm EfficientNet state dict (``conv_stem``, ``blocks.i.j``) to torchvision's
    ``features`` names; any other mapping is returned unchanged.

    timm stage i is torchvision ``features.{i + 1}``; a block is an inverted residual when it has
    ``conv_pwl`` (its ``conv_pw`` then expands), else a depthwise-separable block (``conv_pw``
    projects). Unknown names are kept as they are.
    """
    if "conv_stem.weight" not in tensors or not any(name.startswith("blocks.") for name in tensors):
        return tensors
    inverted = {name.rsplit(".conv_pwl.", 1)[0] for name in tensors if ".conv_pwl." in name}
    renamed = {}
    for name, tensor in tensors.items():
        top, _, leaf = name.rpartition(".")
        match = _TIMM_BLOCK.match(name)
        if top in _TIMM_TOP:
            name = f"{_TIMM_TOP[top]}.{leaf}"
        elif match:
            stage, index, layer, leaf = match.groups()
            table = _TIMM_INVERTED_RESIDUAL if f"blocks.{stage}.{index}" in inverted else _TIMM_DEPTHWISE_SEPARABLE
            if layer in table:
                name = f"features.{int(stage) + 1}.{index}.block.{table[layer]}.{leaf}"
        renamed[name] = tensor
    return renamed
