"""COCOeval's ``accumulate`` for every category, area range, max-detections value and IoU threshold
at once (numpy only): the ``precision`` (T, R, K, A, M), ``recall`` (T, K, A, M) and ``scores``
arrays, equal to pycocotools' bit for bit.

pycocotools walks each (category, area, maxDets, threshold) sequence of detections (score order)
and reads, at each of the 101 recall points r, the precision envelope at the first detection
where recall >= r. Recall only moves at true positives, so that detection is the c_r-th true
positive, with c_r the smallest count for which ``c / npig >= r`` (in floating point, as
pycocotools divides). The envelope there is the largest precision at that or any later true
positive (a false positive or an ignored detection never raises precision). So we only need the
true positives of every sequence, their precision ``tp / (fp + tp + eps)`` and a suffix maximum,
all computed on flat arrays of true-positive "events".

Recall for every maxDets value is a count of true positives and comes at once; precision and
scores (the expensive part) are computed per maxDets value when first read, so the 12 summary
numbers, which read precision at maxDets 100 only, pay for one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # COCOeval Params.recThrs
EPS = np.spacing(1)  # COCOeval accumulate: tp / (fp + tp + np.spacing(1))



def recall_counts(truth_counts: np.ndarray) -> np.ndarray:
    """c_r: the smallest c in [0, n] with c / n >= r, per ground-truth count n and recall point r.

    truth_counts: (...,) int -> (..., R) int64; entries for n = 0 are meaningless (0).
    """
    n = np.maximum(truth_counts, 1).astype(np.float64)[..., None]
    count = np.clip(np.ceil(RECALL_THRESHOLDS * n), 0, n)
    for _ in range(2):  # ceil of a rounded product may be one off either way
        count = np.where((count > 0) & ((count - 1) / n >= RECALL_THRESHOLDS), count - 1, count)
        count = np.where(count / n < RECALL_THRESHOLDS, count + 1, count)
    return count.astype(np.int64)


def _suffix_max_in_groups(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """max(values[i:end of i's group]) for groups given by a sorted key. (E,), (E,) -> (E,).

    numpy orders complex numbers lexicographically, so a running maximum over (-group, value)
    from the end restarts at each group boundary and keeps every value exact.
    """
    combined = np.empty(len(values), dtype=np.complex128)
    combined.real = -group
    combined.imag = values
    return np.maximum.accumulate(combined[::-1])[::-1].imag


def _first_scores(categories: np.ndarray, scores: np.ndarray, included: np.ndarray | None, num_categories: int) -> np.ndarray:
    """Score of each category's first included detection, 0 for a category with none: (K,)."""
    kept = np.arange(len(categories)) if included is None else np.flatnonzero(included)
    kept_categories = categories[kept]
    position = np.searchsorted(kept_categories, np.arange(num_categories))  # (K,)
    found = position < len(kept)
    found[found] = kept_categories[position[found]] == np.flatnonzero(found)
    first = np.zeros(num_categories)
    first[found] = scores[kept[position[found]]]
    return first


@dataclass(frozen=True)
class _Events:
    """The matched detections of every (area range, threshold) row, sorted by (row, column).

    key: (E,) row << column_bits(D) | column; column: (E,); in_area: (E,) bool, the detection's
    own area is in the row's range. True positives, a subset: tp_event (P,) their positions among
    the events, tp_column, tp_group = row * K + category, tp_candidate = index of (area,
    column + 1) in the (A, D + 1) table of in-area counts.
    """

    key: np.ndarray
    column: np.ndarray
    in_area: np.ndarray
    tp_event: np.ndarray
    tp_column: np.ndarray
    tp_group: np.ndarray
    tp_candidate: np.ndarray


def column_bits(num_detections: int) -> int:
    """Bits of a column (a detection's place in accumulate order) in an event key
    ``((row << bits | column) << 1) | is_true_positive``: read back with a shift and a mask."""
    return max(num_detections, 1).bit_length()


def _events(matched: np.ndarray, inside_area: np.ndarray, categories: np.ndarray, num_categories: int,
            num_thresholds: int) -> _Events:
    """The matched detections (event keys, see ``column_bits``, sorted), with what the
    accumulation reads of them."""
    width, bits = max(len(categories), 1), column_bits(len(categories))
    mask = (1 << bits) - 1
    key = matched >> 1
    column = key & mask
    in_area = inside_area.reshape(-1)[(key >> bits) // num_thresholds * width + column]
    tp_event = np.flatnonzero((matched & 1) != 0)  # on bool: ~8x faster than on int64
    tp_key = key[tp_event]  # one gather; row and column decoded again
    tp_row, tp_column = tp_key >> bits, tp_key & mask
    return _Events(key, column, in_area, tp_event, tp_column, tp_row * num_categories + categories[tp_column],
                   tp_row // num_thresholds * (width + 1) + tp_column + 1)


def _precision_and_scores(
    events: _Events,
    inside_area: np.ndarray,
    categories: np.ndarray,
    scores: np.ndarray,
    included: np.ndarray | None,
    needed: np.ndarray,
    truth_counts: np.ndarray,
    num_thresholds: int,
) -> tuple[np.ndarray, np.ndarray]:
    """precision (T, R, K, A) and scores (T, R, K, A) for one maxDets value (before the -1s).

    events: all matches (any maxDets); inside_area: (A, D) bool; categories, scores: (D,) in
    accumulate order; included: (D,) bool or None (all), the detections within this maxDets (the
    others count as neither true nor false positives); needed: (K, A, R) recall counts c_r.
    """
    num_categories, num_areas = truth_counts.shape
    num_detections = len(categories)
    num_groups = num_areas * num_thresholds * num_categories  # (area, threshold, category)
    tp_event, tp_column, group, tp_candidate = events.tp_event, events.tp_column, events.tp_group, events.tp_candidate
    in_area = events.in_area
    if included is not None:
        kept = np.flatnonzero(included[tp_column])
        tp_event, tp_column, group, tp_candidate = tp_event[kept], tp_column[kept], group[kept], tp_candidate[kept]
        in_area = in_area & included[events.column]
        inside_area = inside_area & included

    # False positives up to a true positive, inside its category: in-area detections minus matched
    # in-area ones (true positives, or matched to an ignored ground truth), both counted from the
    # category's first column: count(up to the column) - count(before the category).
    candidates = np.zeros((num_areas, num_detections + 1), dtype=np.int64)  # [a, c + 1]: up to c
    np.cumsum(inside_area, axis=1, out=candidates[:, 1:])
    matched = np.zeros(len(in_area) + 1, dtype=np.int64)  # [e + 1]: matched in-area up to event e
    np.cumsum(in_area, out=matched[1:])
    segment = np.searchsorted(categories, np.arange(num_categories + 1))  # (K + 1,) column bounds
    row_start = np.arange(num_areas * num_thresholds)[:, None] << column_bits(num_detections)
    first_event = np.searchsorted(events.key, row_start + segment[:-1]).reshape(-1)  # (A*T*K,)
    area_of_group = np.arange(num_groups) // (num_thresholds * num_categories)
    before = candidates[area_of_group, np.tile(segment[:-1], num_areas * num_thresholds)]
    base = before - matched[first_event]  # (A*T*K,)

    counts = np.bincount(group, minlength=num_groups)
    starts = np.cumsum(counts) - counts
    true_count = (np.arange(len(group)) - starts[group] + 1).astype(np.float64)
    false_count = (candidates.reshape(-1)[tp_candidate] - matched[tp_event + 1] - base[group]).astype(np.float64)
    envelope = _suffix_max_in_groups(true_count / (false_count + true_count + EPS), group)

    # Query every (area, threshold, category, recall point): (A, T, K, R).
    shape = (num_areas, num_thresholds, num_categories, 1)
    event_count, event_start = counts.reshape(shape), starts.reshape(shape)
    count_needed = needed.transpose(1, 0, 2)[:, None]  # (A, 1, K, R)
    reached = (count_needed >= 1) & (count_needed <= event_count)
    at_start = (count_needed == 0) & (event_count > 0)
    index = np.where(reached, event_start + count_needed - 1, len(envelope))  # len: reads the padding 0
    index = np.where(at_start, event_start, index)
    precision = np.append(envelope, 0.0)[index]
    # scores: the detection at the first index with recall >= r; for r = 0 the sequence's first one.
    event_scores = np.append(scores[tp_column], 0.0)[index]
    first_score = _first_scores(categories, scores, included, num_categories)  # (K,)
    score = np.where(count_needed == 0, first_score[None, None, :, None], event_scores)
    return precision.transpose(1, 3, 2, 0), score.transpose(1, 3, 2, 0)


class CocoCurves:
    """COCOeval's ``eval`` arrays, -1 where a category has no (non-ignored) ground truth:
    ``recall`` (T, K, A, M), and on first read ``precision`` and ``scores`` (T, R, K, A, M);
    ``at(m)`` gives precision and scores for max_detections[m] alone.

    Built by ``accumulate`` from the matching's outcome (see there).
    """

    def __init__(
        self,
        matched: np.ndarray,
        outside_area: np.ndarray,
        categories: np.ndarray,
        ranks: np.ndarray,
        scores: np.ndarray,
        truth_counts: np.ndarray,
        max_detections: tuple[int, ...],
        num_thresholds: int,
    ) -> None:
        num_categories, num_areas = truth_counts.shape
        self._inside_area = ~outside_area
        self._categories, self._ranks, self._scores = categories, ranks, scores
        self._truth_counts, self._max_detections, self._num_thresholds = truth_counts, max_detections, num_thresholds
        self._events = _events(matched, self._inside_area, categories, num_categories, num_thresholds)
        self._needed = recall_counts(truth_counts)  # (K, A, R)
        self._present = truth_counts[None, None] > 0  # (1, 1, K, A), broadcast over (T, R, K, A)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # recall = tp / npig at the end of each sequence: a count of true positives.
        num_groups = num_areas * num_thresholds * num_categories
        npig = np.maximum(truth_counts.T[:, None, :], 1)  # (A, 1, K)
        recall = np.full((num_thresholds, num_categories, num_areas, len(max_detections)), -1.0)
        tp_group, tp_rank = self._events.tp_group, ranks[self._events.tp_column]
        for m, limit in enumerate(max_detections):
            group = tp_group if m == len(max_detections) - 1 else tp_group[tp_rank < limit]  # all within the largest
            found = np.bincount(group, minlength=num_groups).reshape(num_areas, num_thresholds, num_categories)
            recall[..., m] = np.where(self._present[0], (found / npig).transpose(1, 2, 0), -1.0)
        self.recall = recall

    def at(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """precision (T, R, K, A) and scores (T, R, K, A) at max_detections[m]."""
        if m not in self._cache:
            included = self._ranks < self._max_detections[m]
            largest = len(self._max_detections) - 1  # the detections were cut at this one
            if included.all() and m != largest:
                self._cache[m] = self.at(largest)  # nothing cut: the same sequences
            else:
                precision, score = _precision_and_scores(
                    self._events, self._inside_area, self._categories, self._scores,
                    None if included.all() else included, self._needed, self._truth_counts, self._num_thresholds,
                )
                self._cache[m] = (np.where(self._present, precision, -1.0), np.where(self._present, score, -1.0))
            if len(self._cache) == len(self._max_detections):
                self._events = None  # everything computed: let the events (tens of MB) go
        return self._cache[m]

    @property
    def precision(self) -> np.ndarray:
        """(T, R, K, A, M), every maxDets value."""
        return np.stack([self.at(m)[0] for m in range(len(self._max_detections))], axis=-1)

    @property
    def scores(self) -> np.ndarray:
        """(T, R, K, A, M): the score at which each precision was read."""
        return np.stack([self.at(m)[1] for m in range(len(self._max_detections))], axis=-1)


def accumulate(
    matched: np.ndarray,
    outside_area: np.ndarray,
    categories: np.ndarray,
    ranks: np.ndarray,
    scores: np.ndarray,
    truth_counts: np.ndarray,
    max_detections: tuple[int, ...],
    num_thresholds: int,
) -> CocoCurves:
    """COCOeval ``accumulate`` from the matching's outcome.

    matched: (E,) int64 sorted, one per detection matched in a row (area range, threshold):
    ((row << column_bits(D) | column) << 1) | is_true_positive (else matched to an ignored ground
    truth, which makes the detection ignored); columns in accumulate order: category ascending,
    then score descending, then image, then rank in its (image, category) group.
    outside_area: (A, D) bool, detection area outside the range (unmatched ones are then ignored);
    categories, ranks, scores: (D,), ranks < max_detections[-1] (the detections were cut there);
    truth_counts: (K, A) non-ignored ground truths (npig); max_detections: M values, ascending.
    """
    return CocoCurves(matched, outside_area, categories, ranks, scores, truth_counts, max_detections, num_thresholds)
