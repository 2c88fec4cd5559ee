"""Detector models (YOLOv5 n/s, EfficientNet-B4 backbone), head decoding, anchors and loss.

``build_model`` is imported lazily so that ``import smartcash.model.training.core.<x>`` stays light.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "build_model":
        from smartcash.model.build import build_model

        return build_model
    raise AttributeError(f"module 'smartcash.model' has no attribute {name!r}")
