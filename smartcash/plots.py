"""Validation plots: precision-recall curves and the denomination confusion matrix (PNG files).

Plotting lives here, never in metric code. matplotlib is imported lazily with the Agg backend, so
nothing needs a display; ultralytics' plotting is not used (it downloads a font).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smartcash.taxonomy import Taxonomy

logger = logging.getLogger(__name__)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def plot_pr_curve(map_result: Any, names: Sequence[str], path: str | Path, title: str = "Precision-recall") -> Path:
    """PR curve per class at IoU 0.5 and their mean, from a ``MapResult``.

    Classes without ground truth (NaN AP) are left out, as they are from the mean.
    """
    pyplot = _pyplot()
    recall, curves, ap50 = map_result.pr_recall, map_result.pr_curve, map_result.ap50  # (101,), (C, 101), (C,)
    present = ~np.isnan(ap50)
    figure, axes = pyplot.subplots(1, 1, figsize=(9, 6), tight_layout=True)
    show_legend = int(present.sum()) <= 21  # beyond that a legend hides the plot
    for index in np.flatnonzero(present):
        label = f"{names[index]} {ap50[index]:.3f}" if show_legend else None
        axes.plot(recall, curves[index], linewidth=1, label=label)
    if present.any():
        mean_map = map_result.map50
        axes.plot(recall, curves[present].mean(axis=0), linewidth=3, color="blue",
                  label=f"all classes {mean_map:.3f} mAP@0.5" if not math.isnan(mean_map) else "all classes")
    axes.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.01), title=title)
    if present.any():
        axes.legend(bbox_to_anchor=(1.04, 1), loc="upper left", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150)
    pyplot.close(figure)
    return path


def plot_confusion_matrix(matrix: np.ndarray, names: Sequence[str], path: str | Path,
                          title: str = "Denomination confusion matrix", normalize: bool = True) -> Path:
    """Heat map of a (K, K) matrix, rows = truth, columns = prediction; normalized per true row."""
    pyplot = _pyplot()
    matrix = np.asarray(matrix, dtype=np.float64)
    shown = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1) if normalize else matrix
    size = len(names)
    figure, axes = pyplot.subplots(1, 1, figsize=(2 + 0.7 * size, 1.5 + 0.6 * size), tight_layout=True)
    image = axes.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(size), labels=list(names), rotation=45, ha="right")
    axes.set_yticks(range(size), labels=list(names))
    for row in range(size):
        for column in range(size):
            if matrix[row, column]:
                text = f"{shown[row, column]:.2f}" if normalize else f"{int(matrix[row, column])}"
                axes.text(column, row, text, ha="center", va="center", fontsize=7,
                          color="white" if shown[row, column] > 0.5 * (shown.max() or 1) else "black")
    axes.set(xlabel="Predicted", ylabel="True", title=title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150)
    pyplot.close(figure)
    return path


def plot_validation(result: Any, directory: str | Path, taxonomy: Taxonomy) -> list[Path]:
    """The standard validation plots of a ``ValidationResult`` into ``directory``; the paths written."""
    directory = Path(directory)
    written = [
        plot_pr_curve(result.fine, taxonomy.names, directory / "PR_curve.png", "Precision-recall (fine classes)"),
        plot_pr_curve(result.main, taxonomy.main_names, directory / "PR_curve_main.png",
                      "Precision-recall (main classes)"),
        plot_confusion_matrix(result.classification.confusion_matrix, result.classification.class_names,
                              directory / "confusion_matrix.png"),
    ]
    logger.info("plots written to %s", directory)
    return written
