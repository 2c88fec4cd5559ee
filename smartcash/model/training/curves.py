"""Loss and metric curves of a run: one PNG with a panel per ``results.csv`` column, against epoch."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from smartcash.model.training.records import read_results

logger = logging.getLogger(__name__)

#: Panels in reading order: losses on the first row, metrics below, then the LRs.
CURVE_COLUMNS = (
    "train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision", "metrics/recall",
    "val/box_loss", "val/obj_loss", "val/cls_loss", "metrics/mAP50", "metrics/mAP50-95",
    "metrics/main_mAP50", "metrics/main_mAP50-95", "metrics/denomination_accuracy",
    "lr/backbone", "lr/head",
)


def plot_curves(results_csv: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path | None:
    """Draw ``results.csv`` to ``out_path`` (PNG). Returns the path, or None if there is no row.

    Columns that are absent or empty in every row are skipped.
    """
    rows = read_results(results_csv)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window (safe on headless servers)
    import matplotlib.pyplot as plt

    epochs = [float(row["epoch"]) for row in rows]
    panels = []
    for column in CURVE_COLUMNS:
        values = [_number(row.get(column)) for row in rows]
        if any(value is not None for value in values):
            panels.append((column, values))
    columns = 5
    lines = max(1, -(-len(panels) // columns))
    figure, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 2.6 * lines), squeeze=False)
    for axis in axes.flat[len(panels):]:
        axis.axis("off")
    for axis, (column, values) in zip(axes.flat, panels):
        points = [(x, y) for x, y in zip(epochs, values) if y is not None]
        axis.plot([x for x, _ in points], [y for _, y in points], marker=".", linewidth=1.5)
        axis.set_title(column, fontsize=9)
        axis.set_xlabel("epoch", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None
