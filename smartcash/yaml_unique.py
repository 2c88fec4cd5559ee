"""A YAML SafeLoader that refuses a key given twice in one mapping.

Plain YAML keeps the last of two equal keys without a word: in a config a setting silently
replaced, in a dataset yaml a class silently renamed (``names: {0: a, 0: b}``). Used for every
YAML SmartCash reads from a user (configs, recipes, dataset yamls).
"""

from __future__ import annotations

from typing import Any

import yaml


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader whose mappings raise ``ConstructorError`` (with the line) on a repeated key."""


def _mapping_without_repeats(loader: UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    """The mapping, after checking the keys written in it. A merge (``<<: *anchor``) is not a key:
    the keys written beside it override the merged ones, as YAML says; an unhashable key is left to
    ``construct_mapping``'s own error."""
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        try:
            repeated = key in seen
        except TypeError:  # unhashable ([x, y] as a key)
            continue
        if repeated:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_repeats)
