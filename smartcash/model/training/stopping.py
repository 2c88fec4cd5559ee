"""Early stopping in the direction of its metric: higher is better for fitness and mAP, lower for
the loss columns of ``results.csv``.

``phases.EarlyStopping`` tracks a higher-is-better value; ``LowerIsBetterStopping`` is the same
tracker for losses (same checkpoint state: ``best`` starts at +inf instead of -inf).
"""

from __future__ import annotations

import math

from smartcash.model.training.phases import EarlyStopping
from smartcash.model.training.records import lower_is_better


class LowerIsBetterStopping(EarlyStopping):
    """``EarlyStopping`` for a metric where a smaller value is an improvement."""

    def __init__(self, metric: str, patience: int) -> None:
        super().__init__(metric, patience)
        self.best = math.inf

    def update(self, epoch: int, value: float) -> bool:
        """Record ``value`` for ``epoch``; True when it is a new lowest (NaN never is)."""
        if math.isfinite(value) and value < self.best:
            self.best, self.best_epoch = float(value), epoch
            return True
        return False


def directed(tracker: EarlyStopping) -> EarlyStopping:
    """``tracker`` itself for a higher-is-better metric, else a fresh lower-is-better one."""
    if lower_is_better(tracker.metric):
        return LowerIsBetterStopping(tracker.metric, tracker.patience)
    return tracker
