"""The run's one metrics sink: ``results.csv``, one row per epoch, buffered and written atomically.

Rows are buffered and the whole file is rewritten (temp file + ``os.replace``) every
``flush_every`` epochs, at the end, on Ctrl-C and on errors: a reader never sees half a row.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from pathlib import Path
from typing import Any

from smartcash.atomic import atomic_write_text

logger = logging.getLogger(__name__)

#: Columns always present, in this order; other keys of a row are appended after them.
RESULTS_COLUMNS = (
    "epoch", "phase",
    "train/box_loss", "train/obj_loss", "train/cls_loss",
    "val/box_loss", "val/obj_loss", "val/cls_loss",
    "metrics/precision", "metrics/recall", "metrics/mAP50", "metrics/mAP50-95",
    "metrics/main_mAP50", "metrics/main_mAP50-95", "metrics/denomination_accuracy",
    "fitness", "lr/backbone", "lr/head", "epoch_time_s",
)


def lower_is_better(column: str) -> bool:
    """True for the loss columns (``train/box_loss``, ``val/cls_loss`` ...): the smaller the better."""
    return "loss" in column


class ResultsWriter:
    """Buffered, atomic writer of ``results.csv``.

    Args:
        path: the CSV file.
        flush_every: rewrite the file after this many new rows.
        resume_before_epoch: keep the earlier rows with ``epoch`` below this (a resumed run);
            ``None`` starts a new file.
        saved_rows: with ``resume_before_epoch``, the rows the checkpoint carries (they include
            the buffered rows a killed run never flushed); ``None`` reads them from the file.
            The file is rewritten with them at once.
    """

    def __init__(self, path: str | os.PathLike[str], flush_every: int = 1,
                 resume_before_epoch: int | None = None,
                 saved_rows: list[dict[str, Any]] | None = None) -> None:
        self.path = Path(path)
        self.flush_every = max(1, flush_every)
        self.columns: list[str] = list(RESULTS_COLUMNS)
        self.rows: list[dict[str, Any]] = []
        self._pending = 0
        if resume_before_epoch is None:
            return
        if saved_rows is None:
            saved_rows = read_results(self.path) if self.path.is_file() else []
        for row in saved_rows:
            if int(float(row["epoch"])) < resume_before_epoch:
                self._add_columns(row)
                self.rows.append(dict(row))
        if self.rows:
            self.flush()

    def add(self, row: dict[str, Any]) -> None:
        """Buffer one epoch's row; rewrites the file every ``flush_every`` rows."""
        self._add_columns(row)
        self.rows.append(dict(row))
        self._pending += 1
        if self._pending >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Rewrite the whole file atomically with every row so far."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, restval="", lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({key: _format(value) for key, value in row.items()})
        atomic_write_text(self.path, buffer.getvalue())
        self._pending = 0

    def _add_columns(self, row: dict[str, Any]) -> None:
        self.columns.extend(key for key in row if key not in self.columns)


def read_results(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a ``results.csv`` as dicts of strings."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _format(value: Any) -> str:
    if isinstance(value, float):
        return repr(value) if not math.isfinite(value) else f"{value:.6g}"
    return "" if value is None else str(value)
