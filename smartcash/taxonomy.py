"""The class taxonomy and loss weights, loaded once from ``loss.json`` into frozen dataclasses.

``loss.json`` (repo root; ``smartcash/loss.json`` links to it so installs ship it) is the single
source of these numbers: no other module repeats a class name, a layer or a loss weight.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

#: Where the taxonomy lives unless ``SMARTCASH_LOSS_JSON`` points elsewhere.
DEFAULT_LOSS_JSON = Path(__file__).resolve().with_name("loss.json")


class TaxonomyError(ValueError):
    """``loss.json`` is malformed, or a dataset's class names cannot be mapped onto it."""


@dataclass(frozen=True)
class FineClass:
    """One detector output class."""

    id: int
    name: str
    layer: int  # 1 whole note, 2 nominal area, 3 authentication feature
    main_id: int
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Taxonomy:
    """Fine classes (what the detector predicts) and the main classes they map onto."""

    fine_classes: tuple[FineClass, ...]
    main_names: tuple[str, ...]
    layer_names: tuple[tuple[int, str], ...]
    is_smartcash: bool = True  # False for a dataset trained with its own names (identity map)
    denomination_layers: tuple[int, ...] = ()  # layers whose classes name a denomination
    authentication_layer: int | None = None  # the layer of the authentication features, if any

    @property
    def num_classes(self) -> int:
        return len(self.fine_classes)

    @property
    def num_main_classes(self) -> int:
        return len(self.main_names)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.fine_classes)

    @property
    def fine_to_main(self) -> tuple[int, ...]:
        """Main id of each fine id (index = fine id)."""
        return tuple(c.main_id for c in self.fine_classes)

    @property
    def layers(self) -> tuple[int, ...]:
        """Layer of each fine id (index = fine id)."""
        return tuple(c.layer for c in self.fine_classes)

    def ids_in_layer(self, layer: int) -> tuple[int, ...]:
        return tuple(c.id for c in self.fine_classes if c.layer == layer)

    def lookup(self, name: str) -> int | None:
        """Fine id of a class name or alias (case- and whitespace-insensitive), else None."""
        return _name_index(self).get(name_key(name))

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, stored inside checkpoints (loadable with ``weights_only=True``)."""
        return {
            "fine_classes": [
                {"id": c.id, "name": c.name, "layer": c.layer, "main_id": c.main_id,
                 "aliases": list(c.aliases)}
                for c in self.fine_classes
            ],
            "main_classes": list(self.main_names),
            "layers": {str(k): v for k, v in self.layer_names},
            "denomination_layers": list(self.denomination_layers),
            "authentication_layer": self.authentication_layer,
            "is_smartcash": self.is_smartcash,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> Taxonomy:
        return _parse_taxonomy(data, source, is_smartcash=bool(data.get("is_smartcash", True)))

    @classmethod
    def identity(cls, names: list[str] | tuple[str, ...]) -> Taxonomy:
        """A taxonomy for a dataset with its own class names: every class is its own main class."""
        fine = tuple(FineClass(id=i, name=str(n), layer=1, main_id=i) for i, n in enumerate(names))
        return cls(fine_classes=fine, main_names=tuple(str(n) for n in names),
                   layer_names=((1, "object"),), is_smartcash=False, denomination_layers=(1,))


@dataclass(frozen=True)
class LossConfig:
    """Loss weights (YOLOv5 loss): total = box * CIoU + obj * BCE + cls * BCE."""

    box_weight: float
    obj_weight: float
    cls_weight: float
    obj_balance: tuple[float, ...]  # objectness weight per scale, strides 8/16/32
    anchor_threshold: float  # max width/height ratio between a target and a matched anchor
    label_smoothing: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"box_weight": self.box_weight, "obj_weight": self.obj_weight,
                "cls_weight": self.cls_weight, "obj_balance": list(self.obj_balance),
                "anchor_threshold": self.anchor_threshold,
                "label_smoothing": self.label_smoothing}


def name_key(name: str) -> str:
    """How class names compare everywhere: case and spacing ignored (`Car`, ` car ` are one name)."""
    return " ".join(str(name).strip().lower().split())


@lru_cache(maxsize=32)
def _name_index(taxonomy: Taxonomy) -> dict[str, int]:
    index: dict[str, int] = {}
    for c in taxonomy.fine_classes:
        for key in (c.name, *c.aliases):
            index[name_key(key)] = c.id
    return index


def _require(mapping: dict[str, Any], key: str, source: str) -> Any:
    if key not in mapping:
        raise TaxonomyError(f"{source}: missing key {key!r}")
    return mapping[key]


def _parse_taxonomy(data: dict[str, Any], source: str, is_smartcash: bool = True) -> Taxonomy:
    main_names = tuple(str(n) for n in _require(data, "main_classes", source))
    layers = {int(k): str(v) for k, v in _require(data, "layers", source).items()}
    fine: list[FineClass] = []
    for position, entry in enumerate(_require(data, "fine_classes", source)):
        where = f"{source}: fine_classes[{position}]"
        try:
            item = FineClass(id=int(entry["id"]), name=str(entry["name"]), layer=int(entry["layer"]),
                             main_id=int(entry["main_id"]),
                             aliases=tuple(str(a) for a in entry.get("aliases", ())))
        except (KeyError, TypeError, ValueError) as error:
            raise TaxonomyError(f"{where}: needs id, name, layer, main_id ({error})") from error
        if item.id != position:
            raise TaxonomyError(f"{where}: id {item.id} must equal its position {position}")
        if item.layer not in layers:
            raise TaxonomyError(f"{where}: layer {item.layer} not in layers {sorted(layers)}")
        if not 0 <= item.main_id < len(main_names):
            raise TaxonomyError(f"{where}: main_id {item.main_id} outside 0..{len(main_names) - 1}")
        fine.append(item)
    if "denomination_layers" in data:
        denomination = tuple(int(layer) for layer in data["denomination_layers"])
        authentication = None if data.get("authentication_layer") is None else int(data["authentication_layer"])
    elif is_smartcash:  # a checkpoint written before the roles were stored: loss.json's
        default = load_taxonomy()
        denomination, authentication = default.denomination_layers, default.authentication_layer
    else:
        denomination, authentication = tuple(sorted(layers)), None
    for layer in (*denomination, *(() if authentication is None else (authentication,))):
        if layer not in layers:
            raise TaxonomyError(f"{source}: role layer {layer} not in layers {sorted(layers)}")
    taxonomy = Taxonomy(tuple(fine), main_names, tuple(sorted(layers.items())), is_smartcash,
                        denomination, authentication)
    seen: dict[str, str] = {}
    for c in taxonomy.fine_classes:
        for key in (c.name, *c.aliases):
            owner = seen.setdefault(name_key(key), c.name)
            if owner != c.name:
                raise TaxonomyError(f"{source}: name/alias {key!r} used by both {owner!r} and {c.name!r}")
    return taxonomy


def _parse_loss(data: dict[str, Any], source: str) -> LossConfig:
    try:
        balance = tuple(float(b) for b in data["obj"]["balance"])
        config = LossConfig(box_weight=float(data["box"]["weight"]),
                            obj_weight=float(data["obj"]["weight"]),
                            cls_weight=float(data["cls"]["weight"]), obj_balance=balance,
                            anchor_threshold=float(data["anchor_threshold"]),
                            label_smoothing=float(data.get("label_smoothing", 0.0)))
    except (KeyError, TypeError, ValueError) as error:
        raise TaxonomyError(f"{source}: loss section malformed ({error!r})") from error
    if len(config.obj_balance) != 3 or min(config.obj_balance) <= 0:
        raise TaxonomyError(f"{source}: loss.obj.balance needs 3 positive numbers")
    if config.anchor_threshold <= 1:
        raise TaxonomyError(f"{source}: loss.anchor_threshold must be > 1")
    return config


@lru_cache(maxsize=8)
def _read(path: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise TaxonomyError(f"{path}: not found (set SMARTCASH_LOSS_JSON or restore loss.json)") from error
    except json.JSONDecodeError as error:
        raise TaxonomyError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from error


def _path(path: str | os.PathLike[str] | None) -> str:
    return str(path or os.environ.get("SMARTCASH_LOSS_JSON") or DEFAULT_LOSS_JSON)


def load_taxonomy(path: str | os.PathLike[str] | None = None) -> Taxonomy:
    """The SmartCash taxonomy from ``loss.json`` (or ``path``)."""
    source = _path(path)
    return _parse_taxonomy(_require(_read(source), "taxonomy", source), source)


def load_loss_config(path: str | os.PathLike[str] | None = None) -> LossConfig:
    """The loss weights from ``loss.json`` (or ``path``)."""
    source = _path(path)
    return _parse_loss(_require(_read(source), "loss", source), source)
