"""The anchor-based YOLOv5 detection head and the decoding of its raw outputs into boxes.

Raw output per scale: (B, A, H, W, 5 + nc) logits, channel order [x, y, w, h, objectness,
class_0 ...] as in YOLOv5 v6, so YOLOv5 weights load into it unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

#: YOLOv5's bias prior: about 8 objects per 640x640 image, spread over each scale's cells.
PRIOR_OBJECTS_PER_IMAGE = 8.0
PRIOR_IMAGE_SIZE = 640.0
#: YOLOv5's class prior: the probability mass 0.6 shared over the classes.
PRIOR_CLASS_PROBABILITY = 0.6


class GridCache:
    """Per (scale, height, width, device, dtype): the cell-offset grid and the anchor grid, built on
    first use and reused every forward.

    The anchor grid is read from the anchors when its entry is built, so an entry goes stale when
    the anchors change: whoever changes them clears the cache (autoanchor, loading weights, a
    ``Detect`` loading a state dict, the prediction processor at a phase switch).
    """

    def __init__(self) -> None:
        self._grids: dict[tuple[int, int, int, torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def grids(self, level: int, height: int, width: int, anchors: Tensor, device: torch.device,
              dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(1, 1, H, W, 2) [x - 0.5, y - 0.5] of every cell in cells, and (1, A, 1, 1, 2) the scale's
        anchor [w, h] in input pixels (``anchors``: (L, A, 2), read only when the entry is built)."""
        key = (level, height, width, torch.device(device), dtype)
        entry = self._grids.get(key)
        if entry is None:
            rows = torch.arange(height, device=device, dtype=dtype)
            columns = torch.arange(width, device=device, dtype=dtype)
            y, x = torch.meshgrid(rows, columns, indexing="ij")  # (H, W) each
            cells = (torch.stack((x, y), dim=-1) - 0.5).view(1, 1, height, width, 2)
            anchor = anchors[level].to(device=device, dtype=dtype).view(1, -1, 1, 1, 2)
            entry = self._grids[key] = (cells, anchor)
        return entry

    def clear(self) -> None:
        self._grids.clear()

    def __len__(self) -> int:
        return len(self._grids)


def decode_predictions(raw: Sequence[Tensor], anchors: Tensor, strides: Tensor | Sequence[float],
                       cache: GridCache | None = None) -> Tensor:
    """Decode raw head outputs into boxes in input pixels (YOLOv5 v6 decoding).

    xy = (2 sigmoid(t_xy) - 0.5 + cell) * stride, wh = (2 sigmoid(t_wh))^2 * anchor.

    Args:
        raw: per scale (B, A, H, W, 5 + nc) logits.
        anchors: (L, A, 2) anchor [w, h] in input pixels, one row per scale.
        strides: (L,) pixels per cell of each scale.
        cache: grids to reuse (cleared by whoever changes ``anchors``); a throwaway one when None.

    Returns:
        (B, N, 5 + nc), N = sum(A * H * W): [cx, cy, w, h] in input pixels, then objectness
        and class probabilities (sigmoid applied).
    """
    cache = cache if cache is not None else GridCache()
    decoded = []
    for level, prediction in enumerate(raw):
        batch, _, height, width, num_outputs = prediction.shape
        grid, anchor = cache.grids(level, height, width, anchors, prediction.device, prediction.dtype)
        probabilities = prediction.sigmoid()
        xy = (probabilities[..., :2] * 2 + grid) * strides[level]
        wh = (probabilities[..., 2:4] * 2).pow(2) * anchor
        boxes = torch.cat((xy, wh, probabilities[..., 4:]), dim=-1)  # (B, A, H, W, 5 + nc)
        decoded.append(boxes.view(batch, -1, num_outputs))
    return torch.cat(decoded, dim=1)


def _full_precision(conv: nn.Module, feature: Tensor) -> Tensor:
    """``conv(feature)`` in float32 even under AMP: the head's logits become box offsets and sizes,
    which bfloat16's 8-bit mantissa would round by ~0.4 % of a cell and ~1 % of a size (what
    mAP50-95 measures). A 1x1 convolution: a small share of the model's work."""
    device_type = feature.device.type
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return conv(feature)
    with torch.autocast(device_type, enabled=False):
        return conv(feature.float())


class Detect(nn.Module):
    """One 1x1 convolution per scale producing A x (5 + nc) channels (66 for 3 anchors, nc = 17).

    Attributes:
        anchors: buffer (L, A, 2), anchor [w, h] in input pixels, small to large; saved in the
            state dict so a checkpoint carries its (possibly re-fitted) anchors.
        stride: buffer (L,) pixels per cell, [8, 16, 32]; not saved (fixed by the architecture).
    """

    def __init__(self, num_classes: int, in_channels: Sequence[int], anchors: Tensor,
                 strides: Sequence[float]) -> None:
        super().__init__()
        if anchors.ndim != 3 or anchors.shape[0] != len(in_channels) or anchors.shape[2] != 2:
            raise ValueError(f"anchors must be (scales={len(in_channels)}, anchors, 2), got {tuple(anchors.shape)}")
        self.num_classes = num_classes
        self.num_outputs = 5 + num_classes
        self.num_levels, self.num_anchors = anchors.shape[0], anchors.shape[1]
        self.convs = nn.ModuleList(nn.Conv2d(channels, self.num_anchors * self.num_outputs, 1)
                                   for channels in in_channels)
        self.register_buffer("anchors", anchors.detach().clone().float())
        self.register_buffer("stride", torch.tensor(strides, dtype=torch.float32), persistent=False)
        self.grid_cache = GridCache()
        self.initialize_biases()

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        """A loaded state dict may carry other anchors: the cached anchor grids go."""
        self.grid_cache.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def initialize_biases(self) -> None:
        """YOLOv5's priors: few objects per cell, classes near-uniform (faster, stabler start)."""
        class_prior = math.log(PRIOR_CLASS_PROBABILITY / (self.num_classes - 0.99))
        with torch.no_grad():
            for conv, stride in zip(self.convs, self.stride.tolist()):
                bias = conv.bias.view(self.num_anchors, self.num_outputs)
                cells = (PRIOR_IMAGE_SIZE / stride) ** 2
                bias[:, 4] += math.log(PRIOR_OBJECTS_PER_IMAGE / cells)
                bias[:, 5:] += class_prior

    def forward(self, features: Sequence[Tensor]) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """features: per scale (B, C_l, H_l, W_l). Train: raw list; eval: (decoded, raw)."""
        raw = []
        for conv, feature in zip(self.convs, features):
            batch, _, height, width = feature.shape
            output = _full_precision(conv, feature).view(batch, self.num_anchors, self.num_outputs, height, width)
            raw.append(output.permute(0, 1, 3, 4, 2).contiguous())  # (B, A, H, W, 5 + nc)
        if self.training:
            return raw
        return decode_predictions(raw, self.anchors, self.stride, self.grid_cache), raw
