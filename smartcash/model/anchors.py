"""Anchors: YOLOv5's defaults, the best-possible-recall check, and re-fitting them to a dataset.

Re-fitting follows YOLOv5's utils/autoanchor.py: k-means on whitened box sizes, then a genetic
search (mutating all anchors, keeping improvements) on the ratio fitness. Deterministic: every
random draw comes from one seeded ``numpy.random.Generator``. Boxes are (w, h) in input pixels
at the training image size; anchors are in pixels, ordered small to large, 3 per stride.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

#: YOLOv5's COCO anchors, (w, h) pixels per stride 8 / 16 / 32 (models/yolov5s.yaml).
DEFAULT_ANCHORS = (
    ((10, 13), (16, 30), (33, 23)),
    ((30, 61), (62, 45), (59, 119)),
    ((116, 90), (156, 198), (373, 326)),
)
#: YOLOv5 re-fits anchors when fewer than this share of boxes can be matched at all.
BPR_THRESHOLD = 0.98
#: Boxes smaller than this many pixels on both sides are left out of the fit (YOLOv5).
MIN_FIT_SIZE = 2.0
KMEANS_ITERATIONS = 30
MUTATION_PROBABILITY, MUTATION_SIGMA = 0.9, 0.1


@dataclass(frozen=True)
class AnchorCheck:
    """Outcome of ``check_anchors``: recall before/after and the anchors the model now has."""

    bpr_before: float
    bpr_after: float
    anchors: tuple[tuple[float, float], ...]  # 9 (w, h) in pixels, small to large
    changed: bool


def anchors_tensor(anchors: Any = None, num_levels: int = 3) -> Tensor:
    """Anchors in any common layout -> (num_levels, A, 2) float32 pixels; defaults when None.

    Accepts (L, A, 2), (L * A, 2) or YOLOv5's L rows of 2A numbers (lists, arrays or tensors).
    """
    values = torch.as_tensor(DEFAULT_ANCHORS if anchors is None else anchors, dtype=torch.float32)
    if values.numel() == 0 or values.numel() % (2 * num_levels):
        raise ValueError(f"anchors need 2 x anchors-per-scale x {num_levels} numbers, got shape {tuple(values.shape)}")
    values = values.reshape(num_levels, -1, 2)
    if not torch.isfinite(values).all() or (values <= 0).any():
        raise ValueError(f"anchors must be positive pixel sizes, got {values.tolist()}")
    mean_area = values.prod(dim=2).mean(dim=1)  # (L,)
    if (mean_area[1:] < mean_area[:-1]).any():
        raise ValueError(f"anchors must go small to large with the stride (8, 16, 32), got {values.tolist()}")
    return values


def _ratio_match(box_sizes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Worst side ratio min(r, 1/r) of every box to every anchor. (N, 2), (K, 2) -> (N, K) in (0, 1]."""
    ratio = box_sizes[:, None, :] / anchors[None, :, :]  # (N, K, 2)
    return np.minimum(ratio, 1 / ratio).min(axis=2)


def best_possible_recall(box_sizes: np.ndarray, anchors: np.ndarray, threshold: float) -> float:
    """Share of boxes with at least one anchor within ``threshold`` side ratio (YOLOv5's BPR).

    box_sizes: (N, 2) (w, h) pixels; anchors: (K, 2) pixels.
    """
    if len(box_sizes) == 0:
        return 1.0
    best = _ratio_match(box_sizes, anchors).max(axis=1)  # (N,)
    return float((best > 1 / threshold).mean())


def anchors_per_box(box_sizes: np.ndarray, anchors: np.ndarray, threshold: float) -> float:
    """Mean number of anchors within ``threshold`` side ratio of a box (each one a positive per cell)."""
    if len(box_sizes) == 0:
        return 0.0
    return float((_ratio_match(box_sizes, anchors) > 1 / threshold).sum(axis=1).mean())


def _fitness(box_sizes: np.ndarray, anchors: np.ndarray, threshold: float) -> float:
    """YOLOv5's anchor fitness: mean best ratio, counting only boxes that can be matched."""
    best = _ratio_match(box_sizes, anchors).max(axis=1)
    return float((best * (best > 1 / threshold)).mean())


def _sort_by_area(anchors: np.ndarray) -> np.ndarray:
    return anchors[np.argsort(anchors.prod(axis=1), kind="stable")]


def _kmeans(points: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding. (N, D) -> (count, D) centres."""
    centres = [points[rng.integers(len(points))]]
    for _ in range(1, count):
        distance = np.min(((points[:, None] - np.array(centres)[None]) ** 2).sum(axis=2), axis=1)  # (N,)
        total = distance.sum()
        index = rng.choice(len(points), p=distance / total) if total > 0 else rng.integers(len(points))
        centres.append(points[index])
    centres_array = np.array(centres, dtype=np.float64)
    for _ in range(KMEANS_ITERATIONS):
        assignment = ((points[:, None] - centres_array[None]) ** 2).sum(axis=2).argmin(axis=1)  # (N,)
        for cluster in range(count):
            members = points[assignment == cluster]
            if len(members):  # an empty cluster keeps its centre
                centres_array[cluster] = members.mean(axis=0)
    return centres_array


def kmean_anchors(box_sizes: np.ndarray, num_anchors: int, imgsz: int, threshold: float,
                  generations: int = 1000, seed: int = 0) -> np.ndarray:
    """Fit anchors to box sizes: k-means, then genetic evolution of the ratio fitness.

    Args:
        box_sizes: (N, 2) (w, h) pixels at the training image size.
        num_anchors: total anchors (9 = 3 per stride).
        imgsz: training image size, for the random start when there are too few boxes.
        threshold: side-ratio threshold (loss.json anchor_threshold).
        generations: mutation rounds (YOLOv5 uses 1000).
        seed: seeds the one RNG used, so the result is reproducible.

    Returns:
        (num_anchors, 2) anchors in pixels, sorted by area.
    """
    rng = np.random.default_rng(seed)
    sizes = np.asarray(box_sizes, dtype=np.float64).reshape(-1, 2)
    tiny = int((sizes < 3.0).any(axis=1).sum())
    if tiny:
        logger.warning("autoanchor: %d of %d boxes are under 3 pixels on a side", tiny, len(sizes))
    fit_sizes = sizes[(sizes >= MIN_FIT_SIZE).any(axis=1) & (sizes > 0).all(axis=1)]
    if len(fit_sizes) >= num_anchors:
        spread = fit_sizes.std(axis=0)
        spread[spread == 0] = 1.0
        anchors = _kmeans(fit_sizes / spread, num_anchors, rng) * spread  # whitened fit, back to pixels
    else:
        logger.warning("autoanchor: %d boxes for %d anchors, starting from random anchors", len(fit_sizes), num_anchors)
        anchors = np.sort(rng.random(num_anchors * 2)).reshape(num_anchors, 2) * imgsz
        fit_sizes = fit_sizes if len(fit_sizes) else anchors.copy()
    anchors = _sort_by_area(anchors)
    best_fitness = _fitness(fit_sizes, anchors, threshold)
    for _ in range(generations):
        factors = np.ones_like(anchors)
        while (factors == 1).all():  # mutate until something changes
            mutate = rng.random(anchors.shape) < MUTATION_PROBABILITY
            factors = (mutate * rng.random() * rng.standard_normal(anchors.shape) * MUTATION_SIGMA + 1).clip(0.3, 3.0)
        candidate = (anchors * factors).clip(min=MIN_FIT_SIZE)
        fitness = _fitness(fit_sizes, candidate, threshold)
        if fitness > best_fitness:
            best_fitness, anchors = fitness, candidate
    anchors = _sort_by_area(anchors)
    logger.info("autoanchor: fitness %.4f, anchors %s", best_fitness,
                ", ".join(f"{w:.0f},{h:.0f}" for w, h in anchors))
    return anchors


def scaled_box_sizes(normalised_sizes: Sequence[np.ndarray], image_sizes: np.ndarray, imgsz: int) -> np.ndarray:
    """Box (w, h) in pixels after letterboxing each image to ``imgsz`` (long side = imgsz).

    Args:
        normalised_sizes: per image (n_i, 2) box (w, h) normalised to that image.
        image_sizes: (N, 2) source (width, height) of each image, pixels.
        imgsz: training image size.

    Returns:
        (sum n_i, 2) pixels.
    """
    image_sizes = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2)
    letterboxed = imgsz * image_sizes / image_sizes.max(axis=1, keepdims=True)  # (N, 2)
    parts = [np.asarray(sizes, dtype=np.float64).reshape(-1, 2) * shape
             for sizes, shape in zip(normalised_sizes, letterboxed)]
    return np.concatenate(parts) if parts else np.zeros((0, 2))


def write_anchors(model: nn.Module, anchors: Any) -> None:
    """Copy anchors (pixels, any layout ``anchors_tensor`` takes) into the model's head, small to large."""
    detect = getattr(model, "detect", model)
    flat = torch.as_tensor(np.asarray(anchors, dtype=np.float32)).reshape(-1, 2)
    ordered = flat[torch.argsort(flat.prod(dim=1), stable=True)]
    with torch.no_grad():
        detect.anchors.copy_(anchors_tensor(ordered, detect.anchors.shape[0]).to(detect.anchors))
    detect.grid_cache.clear()


def check_anchors(model: nn.Module, dataset_wh: np.ndarray, imgsz: int, threshold: float | None = None,
                  bpr_threshold: float = BPR_THRESHOLD, generations: int = 1000, seed: int = 0,
                  refit: str = "low-recall") -> AnchorCheck:
    """Check the model's anchors against the dataset; re-fit and write them when recall is low.

    Args:
        model: a Detector (or its Detect head).
        dataset_wh: (N, 2) box (w, h) in pixels at the training image size.
        imgsz: training image size.
        threshold: anchor side-ratio threshold; ``loss.json``'s anchor_threshold when None.
        bpr_threshold: re-fit when best possible recall is not above this.
        generations, seed: see ``kmean_anchors``.
        refit: ``low-recall`` re-fits only below ``bpr_threshold`` (YOLOv5: for a head whose box
            outputs were learnt with these anchors); ``always`` fits the dataset and keeps the fit
            when its ratio fitness is higher (for a fresh head, which has learnt nothing with the
            defaults: COCO's anchors at 640 px leave a dataset of large objects at 320 px to one
            stride, a third of the positives per box a fit gives).
    """
    if refit not in ("low-recall", "always"):
        raise ValueError(f"refit must be 'low-recall' or 'always', not {refit!r}")
    if threshold is None:
        from smartcash.taxonomy import load_loss_config

        threshold = load_loss_config().anchor_threshold
    detect = getattr(model, "detect", model)
    sizes = np.asarray(dataset_wh, dtype=np.float64).reshape(-1, 2)
    sizes = sizes[(sizes > 0).all(axis=1)]
    current = detect.anchors.detach().cpu().double().numpy().reshape(-1, 2)
    bpr_before = best_possible_recall(sizes, current, threshold)
    if refit == "always" and len(sizes):
        fitted = kmean_anchors(sizes, len(current), imgsz, threshold, generations, seed)
        before, after = _fitness(sizes, current, threshold), _fitness(sizes, fitted, threshold)
        if after <= before:
            logger.info("autoanchor: the fit (fitness %.4f) is no better than the current anchors (%.4f), "
                        "keeping them", after, before)
            return AnchorCheck(bpr_before, bpr_before, _as_pairs(current), changed=False)
        write_anchors(model, fitted)
        bpr_after = best_possible_recall(sizes, fitted, threshold)
        logger.info("autoanchor: fresh head, anchors fitted to the dataset: fitness %.4f -> %.4f, best "
                    "possible recall %.4f -> %.4f, anchors per box %.1f -> %.1f", before, after, bpr_before,
                    bpr_after, anchors_per_box(sizes, current, threshold), anchors_per_box(sizes, fitted, threshold))
        return AnchorCheck(bpr_before, bpr_after, _as_pairs(fitted), changed=True)
    if bpr_before > bpr_threshold:
        logger.info("autoanchor: best possible recall %.4f, anchors fit the dataset", bpr_before)
        return AnchorCheck(bpr_before, bpr_before, _as_pairs(current), changed=False)
    logger.info("autoanchor: best possible recall %.4f <= %.2f, re-fitting anchors", bpr_before, bpr_threshold)
    fitted = kmean_anchors(sizes, len(current), imgsz, threshold, generations, seed)
    bpr_after = best_possible_recall(sizes, fitted, threshold)
    if bpr_after <= bpr_before:
        logger.info("autoanchor: re-fit reached %.4f, keeping the current anchors", bpr_after)
        return AnchorCheck(bpr_before, bpr_before, _as_pairs(current), changed=False)
    write_anchors(model, fitted)
    logger.info("autoanchor: best possible recall %.4f -> %.4f, new anchors written", bpr_before, bpr_after)
    return AnchorCheck(bpr_before, bpr_after, _as_pairs(fitted), changed=True)


def _as_pairs(anchors: np.ndarray) -> tuple[tuple[float, float], ...]:
    return tuple((float(w), float(h)) for w, h in np.asarray(anchors).reshape(-1, 2))
