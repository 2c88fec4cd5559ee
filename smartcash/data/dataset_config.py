"""Dataset yaml (YOLO ``data.yaml``) -> DatasetConfig: image lists per split and the class mapping.

Paths are relative to the yaml (or to its optional ``path:`` root). An absolute path that does not
exist here (Roboflow exports written on Colab: ``/content/drive/.../train/images``) falls back to
its trailing components under the yaml's folder; a ``path:`` that does not exist at all falls back
to the yaml's folder, with a warning. Class names map onto the SmartCash taxonomy by NAME (aliases
in ``loss.json``), optionally through a ``class_map:``; a dataset none of whose names map trains
with its own names (identity taxonomy). Names are the text written in the yaml: an unquoted
``001`` or ``010`` stays ``"001"``/``"010"`` (YAML alone would read the ints 1 and 8).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from smartcash.data.errors import DatasetError, not_utf8
from smartcash.data.image_files import dataset_images_under, is_inside, without_unread
from smartcash.taxonomy import Taxonomy, load_taxonomy, name_key
from smartcash.yaml_unique import UniqueKeyLoader

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_SPLIT_KEYS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


@dataclass(frozen=True)
class SplitSource:
    """Where one split's images come from: resolved sources, or why they could not be found."""

    entries: tuple[str, ...]  # as written in the yaml
    sources: tuple[Path, ...]  # existing dirs / list files / images
    missing: tuple[str, ...]  # entries that resolved to nothing


@dataclass(frozen=True)
class DatasetConfig:
    """A parsed dataset yaml. ``class_index[dataset_id]`` is the taxonomy id of that class."""

    path: Path
    root: Path
    source_names: tuple[str, ...]
    taxonomy: Taxonomy
    class_index: tuple[int, ...]
    splits: tuple[tuple[str, SplitSource], ...]
    missing_root: str | None = None  # the yaml's `path:` when it did not exist (root fell back)
    class_map: tuple[tuple[str, str], ...] = ()  # the yaml's class_map (dataset name, taxonomy name), as written

    @property
    def num_source_classes(self) -> int:
        return len(self.source_names)

    def has_split(self, split: str) -> bool:
        """True when the yaml names ``split`` and every entry of it exists."""
        source = dict(self.splits).get(split)
        return source is not None and bool(source.sources) and not source.missing

    def split_sources(self, split: str) -> SplitSource:
        """The resolved sources of ``split``; DatasetError when the yaml lacks it or it is missing."""
        if split not in SPLITS:
            raise DatasetError(f"{self.path}: unknown split {split!r} (use one of {', '.join(SPLITS)})")
        source = dict(self.splits).get(split)
        if source is None:
            raise DatasetError(f"{self.path}: no {split!r} split (add `{split}: <images dir>` to the yaml)")
        if source.missing:
            no_root = (f" (`path: {self.missing_root}` does not exist, so the yaml's folder was used)"
                       if self.missing_root is not None else "")
            raise DatasetError(
                f"{self.path}: {split} split not found: {', '.join(source.missing)} (looked relative to"
                f" {self.root}{no_root} and, for absolute paths, their trailing folders under"
                f" {self.path.parent}; fix the `{split}:` entry or remove it)")
        return source

    def images(self, split: str) -> list[Path]:
        """Sorted image paths of ``split`` (``train|val|test``)."""
        images: list[Path] = []
        for source in self.split_sources(split).sources:
            images.extend(_images_in(source))
        return sorted(dict.fromkeys(images))

    def label_path(self, image_path: str | os.PathLike[str]) -> Path:
        """YOLO convention: the last ``/images/`` becomes ``/labels/``, suffix ``.txt``."""
        text = str(image_path)
        marker = f"{os.sep}images{os.sep}"
        if marker in text:
            head, tail = text.rsplit(marker, 1)
            text = f"{head}{os.sep}labels{os.sep}{tail}"
        return Path(text).with_suffix(".txt")


def _images_in(source: Path) -> list[Path]:
    if source.is_dir():
        return dataset_images_under(source)
    if source.suffix.lower() == ".txt":  # a list file: one image path a line, relative to the list
        try:
            lines = source.read_text(encoding="utf-8-sig").splitlines()  # -sig: a BOM is not part of a path
        except UnicodeDecodeError as error:
            raise DatasetError(f"{source}: {not_utf8(error)}") from error
        paths = [Path(line.strip()) for line in lines if line.strip()]
        return without_unread([p if p.is_absolute() else (source.parent / p) for p in paths], source)
    return [source]


def _resolve(entry: str, root: Path, yaml_dir: Path) -> Path | None:
    """Existing path for one yaml entry, trying the Colab/relative fallbacks; None if none exists."""
    path = Path(os.path.expanduser(entry))
    direct = path if path.is_absolute() else root / path
    if direct.exists():
        inside = yaml_dir.joinpath(*[p for p in path.parts if p not in ("..", ".")])
        if ".." in path.parts and inside.exists() and not is_inside(_absolute(direct), {_absolute(yaml_dir)}):
            # Roboflow writes `../train/images`: with another dataset in the parent folder, that one is read.
            logger.warning("%s: %s resolves to %s, outside the yaml's folder, while %s exists inside it; using the "
                           "first (as YOLOv5 reads it): write `%s` in the yaml for the other",
                           yaml_dir, entry, _absolute(direct), inside, inside.relative_to(yaml_dir).as_posix())
        return _absolute(direct)
    # An export made elsewhere: keep the longest trailing part that exists here. At least two
    # components (`train/images`), so `.../test/images` never falls back to a bare `images/`.
    parts = [p for p in path.parts if p not in (path.anchor, "..", ".")]
    for start in range(max(len(parts) - 1, 1) if parts else 0):
        for base in dict.fromkeys((root, yaml_dir)):
            candidate = base.joinpath(*parts[start:])
            if candidate.exists():
                logger.info("%s: not found, using %s", entry, candidate)
                return _absolute(candidate)
    return None


def _absolute(path: Path) -> Path:
    """Absolute, without following symlinks: a linked ``images/train`` keeps its place in the
    layout, so its labels are still looked up in the sibling ``labels/train``."""
    return Path(os.path.abspath(path))


def _value_node(mapping: yaml.Node | None, key: str) -> yaml.Node | None:
    """The node of ``key``'s value in a mapping node; None when absent. The last one wins, as in
    the loaded dict."""
    found = None
    if isinstance(mapping, yaml.MappingNode):
        for key_node, value_node in mapping.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                found = value_node
    return found


def _as_written(loaded: Any, node: yaml.Node | None, text_keys: bool) -> Any:
    """``loaded`` (a list, or a dict) with every scalar item as the text written in the yaml.

    Unquoted ``001`` loads as the int 1 and ``010`` as the octal int 8, but both are class names
    (SmartCash aliases). Dict keys become their text too when ``text_keys`` (class_map's dataset
    names), else stay as loaded (names' class ids). Anything the nodes do not match item for item
    (duplicate keys, merges) is returned as loaded.
    """
    def text(value: Any, item: yaml.Node) -> Any:
        return item.value if isinstance(item, yaml.ScalarNode) else value

    if isinstance(loaded, list) and isinstance(node, yaml.SequenceNode) and len(node.value) == len(loaded):
        return [text(value, item) for value, item in zip(loaded, node.value)]
    if isinstance(loaded, dict) and isinstance(node, yaml.MappingNode) and len(node.value) == len(loaded):
        return {(text(key, key_node) if text_keys else key): text(value, value_node)
                for (key, value), (key_node, value_node) in zip(loaded.items(), node.value)}
    return loaded


def _names(data: dict[str, Any], where: str) -> tuple[str, ...]:
    names = data.get("names")
    if isinstance(names, dict):
        try:
            keyed = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError) as error:
            raise DatasetError(f"{where}: names: dict keys must be class ids 0..n-1 ({error})") from error
        if sorted(keyed) != list(range(len(keyed))):
            raise DatasetError(f"{where}: names: ids {sorted(keyed)} must be exactly 0..{len(keyed) - 1}")
        names = [keyed[i] for i in range(len(keyed))]
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{where}: needs `names:` (a list of class names, or a dict id: name)")
    declared = data.get("nc")
    if declared is not None and (isinstance(declared, bool) or not isinstance(declared, int)):
        raise DatasetError(f"{where}: nc: {declared!r} must be the number of classes (an integer)")
    if declared is not None and declared != len(names):
        raise DatasetError(f"{where}: nc: {declared} but names lists {len(names)} classes (make them agree)")
    names = tuple(str(n) for n in names)
    repeated = duplicate_names(names)
    if repeated:
        raise DatasetError(f"{where}: names: {repeated}: each class needs its own name (a detection of it "
                           "could not be told apart from the other)")
    return names


def duplicate_names(names: Sequence[str]) -> str:
    """'' when every name differs, else the first repeated one and its ids, e.g. "'cat' is ids 0 and 2".
    Names compare as class names do everywhere (case and spacing ignored): `Car` and `car` repeat."""
    first: dict[str, int] = {}
    for index, name in enumerate(names):
        key = name_key(name)
        if key in first:
            shown = repr(name) if names[first[key]] == name else f"{names[first[key]]!r} / {name!r}"
            return f"{shown} is ids {first[key]} and {index}"
        first[key] = index
    return ""


def _class_mapping(names: tuple[str, ...], class_map: dict[str, str], taxonomy: Taxonomy,
                   where: str) -> tuple[Taxonomy, tuple[int, ...]]:
    unknown_keys = sorted(set(class_map) - set(names))
    if unknown_keys:
        raise DatasetError(f"{where}: class_map keys {unknown_keys} are not in names {list(names)}")
    targets = [class_map.get(name, name) for name in names]
    ids = [taxonomy.lookup(target) for target in targets]
    unmapped = [name for name, i in zip(names, ids) if i is None]
    if not unmapped:
        merged: dict[int, list[str]] = {}
        for name, i in zip(names, ids):
            if name not in class_map:  # a class_map that joins classes says so itself
                merged.setdefault(int(i), []).append(name)
        for i, joined in merged.items():
            if len(joined) > 1:
                logger.warning("%s: classes %s are all names of %s: they train as one class (map them apart "
                               "with a class_map, or rename them, if they differ)", where, joined, taxonomy.names[i])
        return taxonomy, tuple(int(i) for i in ids if i is not None)
    if len(unmapped) == len(names) and not class_map:
        return Taxonomy.identity(names), tuple(range(len(names)))
    example = "\n".join(f"  {name}: <a SmartCash class name>" for name in unmapped[:3])
    raise DatasetError(
        f"{where}: class names {unmapped} map to no SmartCash class (names and aliases in loss.json:"
        f" {', '.join(taxonomy.names)}). Map them in the yaml, e.g.\nclass_map:\n{example}\n"
        "or rename them; a dataset whose names ALL differ trains with its own names.")


def load_dataset_config(path: str | os.PathLike[str], taxonomy: Taxonomy | None = None) -> DatasetConfig:
    """Read a YOLO dataset yaml.

    Keys: ``train``/``val`` (or ``valid``)/``test`` (an images dir, a .txt list of image paths, or a
    list of those), optional ``path`` (root for relative entries), ``names`` (list or dict),
    optional ``nc`` and ``class_map`` (dataset name -> taxonomy name or alias). A split that does
    not exist is reported only when it is requested (``images(split)``).

    Args:
        path: the yaml file.
        taxonomy: what names map onto; default the SmartCash taxonomy from ``loss.json``.

    Raises:
        DatasetError: unreadable yaml, bad names, or names that only partly map onto the taxonomy.
    """
    yaml_path = Path(path).resolve()
    where = str(yaml_path)
    try:
        # One parse for the node tree (the text of each scalar) and the data built from it.
        loader = UniqueKeyLoader(yaml_path.read_text(encoding="utf-8"))
        try:
            document = loader.get_single_node()
            data = loader.construct_document(document) if document is not None else None
        finally:
            loader.dispose()
    except FileNotFoundError as error:
        raise DatasetError(f"{where}: dataset yaml not found (check --data)") from error
    except IsADirectoryError as error:
        raise DatasetError(f"{where}: is a folder; --data takes the dataset's yaml file") from error
    except UnicodeDecodeError as error:
        raise DatasetError(f"{where}: {not_utf8(error)}") from error
    except OSError as error:
        raise DatasetError(f"{where}: cannot read the dataset yaml ({error.strerror or error})") from error
    except yaml.YAMLError as error:
        line = getattr(getattr(error, "problem_mark", None), "line", -1) + 1
        raise DatasetError(f"{where}{f':{line}' if line else ''}: invalid yaml ({error})") from error
    if not isinstance(data, dict):
        raise DatasetError(f"{where}: expected a mapping with train/val/names keys")
    for key in ("names", "class_map"):
        if key in data:
            data[key] = _as_written(data[key], _value_node(document, key), text_keys=key == "class_map")
    names = _names(data, where)
    class_map = data.get("class_map") or {}
    if not isinstance(class_map, dict):
        raise DatasetError(f"{where}: class_map must be a mapping `dataset name: taxonomy name`")
    class_map = {str(k): str(v) for k, v in class_map.items()}
    taxonomy, class_index = _class_mapping(names, class_map, taxonomy or load_taxonomy(), where)

    yaml_dir = yaml_path.parent
    root = yaml_dir
    missing_root = None
    if data.get("path"):
        declared_root = str(data["path"])
        found = _resolve(os.path.expanduser(declared_root), yaml_dir, yaml_dir)
        if found is None:  # a typo, or an export's absolute root: the yaml's folder is the best guess
            missing_root = declared_root
            logger.warning("%s: path: %s not found, using %s (the yaml's folder) instead",
                           where, declared_root, yaml_dir)
        root = found or yaml_dir
    splits: list[tuple[str, SplitSource]] = []
    for split, keys in _SPLIT_KEYS.items():
        value = next((data[k] for k in keys if data.get(k)), None)
        if value is None:
            continue
        entries = tuple(str(v) for v in (value if isinstance(value, list) else [value]))
        resolved = [(entry, _resolve(entry, root, yaml_dir)) for entry in entries]
        splits.append((split, SplitSource(
            entries=entries, sources=tuple(p for _, p in resolved if p is not None),
            missing=tuple(e for e, p in resolved if p is None))))
    return DatasetConfig(path=yaml_path, root=root, source_names=names, taxonomy=taxonomy,
                         class_index=class_index, splits=tuple(splits), missing_root=missing_root,
                         class_map=tuple(class_map.items()))
