"""Pictures of what the model sees, for people: the dataset's labels (``labels.png``), the first
augmented training batches (``train_batch0.jpg`` ..), the first validation batch with its labels
and with the predictions of the best weights (``val_batch0_labels.jpg`` / ``val_batch0_pred.jpg``),
and the pictures the trackers show.

Boxes are drawn in their main class's colour with their fine class name. Everything here runs on
the background thread (``background.BackgroundJobs``): it turns host tensors into arrays, draws with
OpenCV / matplotlib and writes files atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from smartcash.atomic import atomic_write_bytes
from smartcash.taxonomy import Taxonomy

#: Training batches drawn in the first epoch.
TRAIN_BATCHES = 3


def images_uint8(images: Tensor) -> np.ndarray:
    """(B, 3, H, W) uint8 (a collated batch) or float in [0, 1] -> (B, H, W, 3) uint8 RGB.

    numpy, not torch ops: this runs on the background thread while the training thread forks its
    loader workers, and torch's intra-op (OpenMP) threads are best kept out of that.
    """
    if images.dtype == torch.uint8:
        return np.ascontiguousarray(images.detach().cpu().numpy().transpose(0, 2, 3, 1))
    pixels = np.asarray(images.detach().cpu().numpy(), dtype=np.float32)
    return np.ascontiguousarray((np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1))


def target_boxes(targets: Tensor, batch_size: int, height: int, width: int) -> list[np.ndarray]:
    """Batch targets (n, 6) [image, class, cx, cy, w, h] normalised -> per image (n_i, 6)
    [x1, y1, x2, y2, NaN, class] in input pixels (NaN score: ground truth)."""
    rows = targets.detach().double().cpu().numpy().reshape(-1, 6)
    centre, size = rows[:, 2:4] * [width, height], rows[:, 4:6] * [width, height]
    boxes = np.concatenate([centre - size / 2, centre + size / 2, np.full((len(rows), 1), np.nan), rows[:, 1:2]],
                           axis=1)
    return _split(boxes, rows[:, 0].astype(np.int64), batch_size)


def prediction_boxes(predictions: Tensor, batch_size: int, min_score: float | None = None) -> list[np.ndarray]:
    """(K, 7) [image, x1, y1, x2, y2, score, class] -> per image (n_i, 6), scores >= ``min_score``
    (default: ``predict_conf`` of configs/default.yaml, what ``smartcash.predict`` keeps; the mAP
    itself uses every detection down to ``val_conf``)."""
    if min_score is None:
        from smartcash.config import default_values

        min_score = float(default_values()["predict_conf"])
    rows = predictions.detach().double().cpu().numpy().reshape(-1, 7)
    rows = rows[rows[:, 5] >= min_score]
    return _split(rows[:, 1:], rows[:, 0].astype(np.int64), batch_size)


def _split(rows: np.ndarray, image_index: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [rows[image_index == image] for image in range(batch_size)]


def batch_picture(images: Tensor, boxes: Sequence[np.ndarray], paths: Sequence[str], taxonomy: Taxonomy) -> np.ndarray:
    """The batch as one BGR grid with ``boxes`` drawn (see ``draw.batch_grid``)."""
    from smartcash.draw import batch_grid

    return batch_grid(images_uint8(images), boxes, taxonomy.names, taxonomy.fine_to_main, paths)


def write_jpeg(path: str | Path, image_bgr: np.ndarray) -> Path:
    from smartcash.draw import encode_jpeg

    atomic_write_bytes(path, encode_jpeg(image_bgr))
    return Path(path)


def write_train_batch(path: str | Path, images: Tensor, targets: Tensor, paths: Sequence[str],
                      taxonomy: Taxonomy) -> Path:
    """``train_batchN.jpg``: an augmented batch (mosaics) with its labels."""
    boxes = target_boxes(targets, images.shape[0], images.shape[2], images.shape[3])
    return write_jpeg(path, batch_picture(images, boxes, paths, taxonomy))


def write_validation_sample(run_dir: str | Path, sample: Any, taxonomy: Taxonomy) -> list[Path]:
    """``val_batch0_labels.jpg`` and ``val_batch0_pred.jpg`` of a ``ValidationSample``."""
    run_dir = Path(run_dir)
    images = sample.images
    truth = target_boxes(sample.targets, images.shape[0], images.shape[2], images.shape[3])
    predicted = prediction_boxes(sample.predictions, images.shape[0])
    return [write_jpeg(run_dir / "val_batch0_labels.jpg", batch_picture(images, truth, sample.paths, taxonomy)),
            write_jpeg(run_dir / "val_batch0_pred.jpg", batch_picture(images, predicted, sample.paths, taxonomy))]


def tracker_images(result: Any, taxonomy: Taxonomy) -> dict[str, np.ndarray]:
    """The pictures trackers show for a validation, as (H, W, 3) uint8 RGB by tag: the PR curves,
    the confusion matrix and, when the result kept its first batch, its predictions."""
    from smartcash.plots import figure_rgb, validation_figures

    images = {f"validation/{stem}": figure_rgb(figure) for stem, figure in validation_figures(result, taxonomy).items()}
    sample = getattr(result, "sample", None)
    if sample is not None:
        grid = batch_picture(sample.images, prediction_boxes(sample.predictions, sample.images.shape[0]),
                             sample.paths, taxonomy)
        images["validation/predictions"] = np.ascontiguousarray(grid[..., ::-1])  # BGR -> RGB
    return images


def write_labels(path: str | Path, labels: Sequence[np.ndarray], taxonomy: Taxonomy) -> Path:
    """``labels.png``: instances per class and layer, box centres and sizes (``plots.labels_figure``)."""
    from smartcash.plots import plot_labels

    return plot_labels(labels, taxonomy, path)
