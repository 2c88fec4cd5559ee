"""Run plots with matplotlib: precision-recall curves, the denomination confusion matrix, and the
labels of a dataset (instances per class and layer, box centres and sizes).

Plotting lives here, never in metric code. Figures are made with matplotlib's object API
(``Figure`` + the Agg canvas), never ``pyplot``: no display is needed, and the trainer's background
thread can draw while the training thread plots too (pyplot's global state is not thread-safe).
ultralytics' plotting is not used (it downloads a font).
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


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), tight_layout=True)


def save_figure(figure: Any, path: str | Path, dpi: int = 150) -> Path:
    """Write ``figure`` as an image file (format from the suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path


def figure_rgb(figure: Any, dpi: int = 100) -> np.ndarray:
    """``figure`` rendered to an (H, W, 3) uint8 RGB array (for trackers)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure.set_dpi(dpi)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def class_color_rgb(class_id: int) -> tuple[float, float, float]:
    """``draw.class_color`` as a matplotlib RGB triple in [0, 1] (the same colour in every picture)."""
    from smartcash.draw import class_color

    blue, green, red = class_color(class_id)
    return red / 255, green / 255, blue / 255


def pr_curve_figure(map_result: Any, names: Sequence[str], title: str = "Precision-recall") -> Any:
    """PR curve per class at IoU 0.5 and their mean, from a ``MapResult``.

    Classes without ground truth (NaN AP) are left out, as they are from the mean.
    """
    recall, curves, ap50 = map_result.pr_recall, map_result.pr_curve, map_result.ap50  # (101,), (C, 101), (C,)
    present = ~np.isnan(ap50)
    figure = _figure(9, 6)
    axes = figure.subplots()
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
    return figure


def confusion_matrix_figure(matrix: np.ndarray, names: Sequence[str], title: str = "Denomination confusion matrix",
                            normalize: bool = True) -> Any:
    """Heat map of a (K, K) matrix, rows = truth, columns = prediction; normalized per true row."""
    matrix = np.asarray(matrix, dtype=np.float64)
    shown = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1) if normalize else matrix
    size = len(names)
    figure = _figure(2 + 0.7 * size, 1.5 + 0.6 * size)
    axes = figure.subplots()
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
    return figure


def labels_figure(labels: Sequence[np.ndarray], taxonomy: Taxonomy) -> Any:
    """What a dataset's labels hold: instances per fine class, one bar panel per layer (bars in the
    main class's colour), and 2-D histograms of box centres and of box sizes (normalised units).

    Args:
        labels: per image (n, 5) [class, cx, cy, w, h], normalised, class = taxonomy id.
    """
    rows = np.concatenate([np.asarray(item, dtype=np.float64).reshape(-1, 5) for item in labels]) \
        if len(labels) else np.zeros((0, 5))
    classes = rows[:, 0].astype(np.int64)
    counts = np.bincount(classes, minlength=taxonomy.num_classes)
    layers = sorted(set(taxonomy.layers))
    layer_names = dict(taxonomy.layer_names)
    figure = _figure(4.5 * (len(layers) + 2), 4.5)
    axes = figure.subplots(1, len(layers) + 2, squeeze=False)[0]
    for axis, layer in zip(axes, layers):
        ids = taxonomy.ids_in_layer(layer)
        colors = [class_color_rgb(taxonomy.fine_to_main[i]) for i in ids]
        axis.bar(range(len(ids)), counts[list(ids)], color=colors)
        axis.set_xticks(range(len(ids)), labels=[taxonomy.names[i] for i in ids], rotation=60, ha="right",
                        fontsize=7)
        axis.set(ylabel="instances", title=f"layer {layer}: {layer_names.get(layer, '')} "
                 f"({int(counts[list(ids)].sum())} boxes)")
    bins = np.linspace(0, 1, 51)
    for axis, (x, y, name) in zip(axes[len(layers):], ((1, 2, "box centres"), (3, 4, "box sizes"))):
        # cmin=1 leaves empty cells white; viridis keeps a cell with one box clearly visible.
        *_, image = axis.hist2d(rows[:, x], rows[:, y], bins=(bins, bins), cmap="viridis", cmin=1)
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="boxes")
        axis.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", title=f"{name} ({len(rows)} boxes)",
                 xlabel="x" if x == 1 else "width", ylabel="y" if x == 1 else "height")
        if x == 1:
            axis.invert_yaxis()  # image coordinates: y grows downwards
    return figure


def plot_labels(labels: Sequence[np.ndarray], taxonomy: Taxonomy, path: str | Path) -> Path:
    """``labels_figure`` written to ``path`` (``labels.png`` of a run)."""
    return save_figure(labels_figure(labels, taxonomy), path, dpi=100)


def validation_figures(result: Any, taxonomy: Taxonomy) -> dict[str, Any]:
    """The standard validation figures of a ``ValidationResult``, by file stem."""
    metrics = result.metrics
    return {
        "PR_curve": pr_curve_figure(metrics.fine, taxonomy.names, "Precision-recall (fine classes)"),
        "PR_curve_main": pr_curve_figure(metrics.main, taxonomy.main_names, "Precision-recall (main classes)"),
        "confusion_matrix": confusion_matrix_figure(metrics.classification.confusion_matrix,
                                                    metrics.classification.class_names),
    }


def plot_validation(result: Any, directory: str | Path, taxonomy: Taxonomy) -> list[Path]:
    """The standard validation plots of a ``ValidationResult`` into ``directory``; the paths written."""
    directory = Path(directory)
    written = [save_figure(figure, directory / f"{stem}.png")
               for stem, figure in validation_figures(result, taxonomy).items()]
    logger.info("plots written to %s", directory)
    return written
