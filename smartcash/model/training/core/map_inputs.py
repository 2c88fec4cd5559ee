"""Turn per-image prediction / target arrays (numpy or torch, any device) into checked numpy rows.

Part of the mAP calculator: numpy only. torch is never imported here; a tensor is recognised
through ``sys.modules`` (if the caller has tensors, torch is already imported).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PREDICTION_LAYOUT = "(N, 6) [x1, y1, x2, y2, score, class]"
TARGET_LAYOUT = "(M, 5) [class, x1, y1, x2, y2]"


@dataclass(frozen=True)
class ImageRows:
    """Rows of every image of one update call, concatenated.

    rows: (R, width) float64, image after image, each image's rows in the caller's order.
    counts: (num_images,) int64, rows per image.
    """

    rows: np.ndarray
    counts: np.ndarray


def _torch_tensor_type() -> type | None:
    torch = sys.modules.get("torch")
    return getattr(torch, "Tensor", None) if torch is not None else None


def _shape_error(name: str, index: int, layout: str, shape: tuple) -> ValueError:
    return ValueError(f"{name}[{index}]: expected an array of shape {layout} (or empty), got shape {shape}")


def _check_shape(item: Any, name: str, index: int, width: int, layout: str) -> int:
    """Number of rows of one image's array; raises ValueError for any other shape."""
    shape = tuple(getattr(item, "shape", ()))
    if not hasattr(item, "shape") or not hasattr(item, "dtype"):
        raise ValueError(f"{name}[{index}]: expected a numpy array or torch tensor {layout}, got {type(item).__name__}")
    if shape == (0,) or (len(shape) == 2 and shape[1] == width):
        return int(shape[0])
    raise _shape_error(name, index, layout, shape)


def to_rows(items: Sequence[Any], name: str, width: int, layout: str) -> ImageRows:
    """Concatenate one array per image into float64 rows.

    items: sequence of (n_i, width) numpy arrays or torch tensors (any device); (0,) is empty.
    Torch tensors are concatenated on their device and copied to the host once.
    """
    if isinstance(items, (str, bytes, dict)) or not hasattr(items, "__len__"):
        raise ValueError(f"{name}: expected a sequence with one array per image, got {type(items).__name__}")
    items = list(items)
    counts = np.array([_check_shape(item, name, i, width, layout) for i, item in enumerate(items)], dtype=np.int64)
    tensor_type = _torch_tensor_type()
    non_empty = [item for item, count in zip(items, counts) if count]
    if not non_empty:
        return ImageRows(np.zeros((0, width), dtype=np.float64), counts)
    if tensor_type is not None and all(isinstance(item, tensor_type) for item in non_empty):
        torch = sys.modules["torch"]
        joined = torch.cat([item.detach().reshape(-1, width).to(torch.float64) for item in non_empty])
        rows = joined.cpu().numpy()
    else:
        arrays = []
        for item in non_empty:
            if tensor_type is not None and isinstance(item, tensor_type):
                item = item.detach().to("cpu").double().numpy()
            arrays.append(np.asarray(item).reshape(-1, width))
        for array, index in zip(arrays, np.flatnonzero(counts)):
            if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
                raise ValueError(f"{name}[{index}]: expected numeric values, got dtype {array.dtype}")
        rows = np.concatenate(arrays).astype(np.float64, copy=False)
    return ImageRows(np.ascontiguousarray(rows), counts)


def _locate(counts: np.ndarray, row: int) -> tuple[int, int]:
    """(image index, row within that image) of a concatenated row index."""
    ends = np.cumsum(counts)
    image = int(np.searchsorted(ends, row, side="right"))
    return image, int(row - (ends[image] - counts[image]))


def _raise_first(bad: np.ndarray, data: ImageRows, name: str, what: str) -> None:
    if bad.any():
        row = int(np.argmax(bad))
        image, within = _locate(data.counts, row)
        values = data.rows[row].tolist()
        raise ValueError(f"{name}[{image}] row {within}: {what}; got {values}")


def check_rows(
    data: ImageRows, name: str, num_classes: int, class_column: int, box_columns: slice, layout: str
) -> None:
    """Raise ValueError naming argument, image and row for non-finite values, x2 < x1 or y2 < y1,
    and class ids that are not integers in [0, num_classes)."""
    rows = data.rows
    _raise_first(~np.isfinite(rows).all(axis=1), data, name, f"values must be finite, layout {layout}")
    boxes = rows[:, box_columns]  # (R, 4) x1, y1, x2, y2
    _raise_first(
        (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]),
        data,
        name,
        f"box must have x2 >= x1 and y2 >= y1, layout {layout}",
    )
    classes = rows[:, class_column]
    _raise_first(
        (classes != np.floor(classes)) | (classes < 0) | (classes >= num_classes),
        data,
        name,
        f"class (column {class_column}) must be an integer in [0, {num_classes}), layout {layout}",
    )


def check_max_area(data: ImageRows, name: str, box_columns: slice, max_area: float) -> None:
    """Raise ValueError for a box whose width * height exceeds max_area (COCO's 'all' area range)."""
    boxes = data.rows[:, box_columns]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    _raise_first(
        area > max_area,
        data,
        name,
        f"box area exceeds {max_area:g} (COCO's 'all' area range [0, 1e5^2]); such boxes would be ignored by "
        "COCOeval, use mode='yolo' or smaller (pixel) coordinates",
    )
