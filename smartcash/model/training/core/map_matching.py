"""Greedy prediction-to-ground-truth matching at many IoU thresholds, vectorized over all images.

Matching is sequential inside one (image, class) group: a prediction may only take a ground truth
that higher-scored predictions of the group left free. Groups are independent, so we iterate over
the *rank* inside a group and handle the k-th candidate prediction of every group, at every
threshold and every "view" (COCO's area ranges), with one set of numpy operations. The number of
iterations is the largest number of predictions that overlap some ground truth in one group, not
the number of images or boxes; groups where each prediction has a single candidate need no loop
at all. COCOeval (map_evaluation, coco_core) and ultralytics semantics (map_evaluation) both run
through ``greedy_match``; the candidate pairs and their IoU come from ``map_pairs``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smartcash.model.training.core.map_pairs import Pairs


@dataclass(frozen=True)
class Matches:
    """Every match made: prediction (Q,) int64, column (Q,) int64 = view * T + threshold index,
    ground_truth (Q,) int64. A prediction appears at most once per column.

    shared (Q,) bool: the match is made alike in every view and listed once, column = the
    threshold index (a group matched once for all views, see ``greedy_match``).
    """

    prediction: np.ndarray
    column: np.ndarray
    ground_truth: np.ndarray
    shared: np.ndarray


def rank_in_group(group: np.ndarray) -> np.ndarray:
    """0, 1, 2 ... inside each run of equal values of a sorted array. (N,) -> (N,)."""
    index = np.arange(len(group))
    is_first = np.ones(len(group), dtype=bool)
    is_first[1:] = group[1:] != group[:-1]
    return index - np.maximum.accumulate(np.where(is_first, index, 0))


def sort_lexicographic(columns: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Indices that sort rows by several non-negative integer columns, first column first.

    columns: [(values (N,), number of distinct values)], the last one the row index 0..N-1, so
    rows are distinct and the order unique. When everything fits in one int64 key we sort the keys
    themselves (numpy's SIMD sort, ~3x faster than argsort) and read the row index back from
    them; otherwise lexsort.
    """
    capacity = 1
    for _, size in columns:
        capacity *= max(int(size), 1)
    if capacity < 2**63:
        key = np.zeros(len(columns[0][0]), dtype=np.int64)
        for values, size in columns:
            key = key * max(int(size), 1) + values
        return np.sort(key) % max(int(columns[-1][1]), 1)
    return np.lexsort([values for values, _ in reversed(columns)])


def _segment_max(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Row-wise maximum over each run of rows: (N, C), starts (S,) ascending from 0 -> (S, C).

    Runs are short (the candidate ground truths of one prediction), so one pass per offset inside
    a run beats ``np.maximum.reduceat``, which pays per run and column.
    """
    lengths = np.diff(np.append(starts, len(values)))
    best = values[starts]
    longest_first = np.argsort(-lengths, kind="stable")
    longer = np.searchsorted(-lengths[longest_first], -np.arange(1, lengths.max()), side="left")  # runs with length > k
    for offset, count in enumerate(longer, start=1):
        runs = longest_first[:count]
        best[runs] = np.maximum(best[runs], values[starts[runs] + offset])
    return best


def _by_preference(prediction: np.ndarray, iou: np.ndarray, truth: np.ndarray, ties_to_last: bool) -> tuple:
    """Pairs sorted by prediction, then ascending preference: IoU, then the later (COCOeval) or
    the earlier (ultralytics) ground truth among equal IoUs. (P,) each -> the same, sorted.

    The three fields fit one int64 key in practice: sort the keys (SIMD) and decode them.
    """
    distinct, iou_rank = np.unique(iou, return_inverse=True)
    iou_rank = iou_rank.reshape(-1)
    num_truths, num_iou = int(truth.max()) + 1, len(distinct)
    tie = truth if ties_to_last else num_truths - 1 - truth
    if (int(prediction.max()) + 1) * num_iou * num_truths < 2**63:
        key = np.sort((prediction * num_iou + iou_rank) * num_truths + tie)
        prediction, rest = np.divmod(key, num_iou * num_truths)
        iou_rank, tie = np.divmod(rest, num_truths)
    else:
        order = np.lexsort((tie, iou_rank, prediction))
        prediction, iou_rank, tie = prediction[order], iou_rank[order], tie[order]
    truth = tie if ties_to_last else num_truths - 1 - tie
    return prediction, distinct[iou_rank], truth


def _match_views(
    prediction: np.ndarray,
    truth: np.ndarray,
    iou: np.ndarray,
    pair_rank: np.ndarray,
    thresholds: np.ndarray,
    preferred: np.ndarray,
    reusable: np.ndarray | None,
    num_truths: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The greedy loop over ranks. Pairs sorted by (rank, prediction), each prediction's pairs in
    ascending preference; preferred: (P, V) bool; reusable: (P,) or None.
    Returns (prediction, column = view * T + threshold, truth) of every match."""
    num_pairs, num_views = preferred.shape
    num_columns = num_views * len(thresholds)
    # key: a larger value is a better pair of the same prediction (the position encodes IoU and
    # tie order, a preferred ground truth adds num_pairs); -1 below the threshold. key % num_pairs
    # gives the pair back.
    key_dtype = np.int32 if 2 * num_pairs < 2**31 else np.int64
    base_key = np.arange(num_pairs, dtype=key_dtype)[:, None] + preferred.astype(key_dtype) * key_dtype(num_pairs)
    passes = iou[:, None] >= thresholds[None, :]  # (P, T)
    key = np.where(passes[:, None, :], base_key[:, :, None], key_dtype(-1)).reshape(num_pairs, num_columns)

    segment_starts = np.flatnonzero(np.r_[True, prediction[1:] != prediction[:-1]])  # one per prediction
    rank_bounds = np.searchsorted(pair_rank, np.arange(pair_rank[-1] + 2))
    segment_bounds = np.searchsorted(segment_starts, rank_bounds)
    matched = np.zeros((num_truths, num_columns), dtype=bool)  # taken, per view and threshold
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for rank in range(int(pair_rank[-1]) + 1):
        low, high = rank_bounds[rank], rank_bounds[rank + 1]
        starts = segment_starts[segment_bounds[rank] : segment_bounds[rank + 1]] - low
        if rank == 0:  # nothing is taken yet
            candidate_key = key[low:high]
        else:
            taken = matched[truth[low:high]]  # (S, C)
            if reusable is not None:
                taken &= ~reusable[low:high, None]
            candidate_key = np.where(taken, key_dtype(-1), key[low:high])
        best = _segment_max(candidate_key, starts).reshape(-1)  # (segments * C,), -1: no match
        hit = np.flatnonzero(best >= 0)  # flat: much faster than nonzero on 2-D
        chosen = best[hit] % key_dtype(num_pairs)
        column = hit % num_columns
        matched[truth[chosen], column] = True
        found.append((prediction[chosen], column, truth[chosen]))
    return tuple(np.concatenate(parts) for parts in zip(*found))


def _all_in_group(group_index: np.ndarray, holds: np.ndarray) -> np.ndarray:
    """Per element: does `holds` hold for every element of its group? group_index: (P,) small
    non-negative ints; holds: (P,) bool -> (P,) bool."""
    failed = np.zeros(int(group_index.max()) + 1, dtype=bool)
    failed[group_index[~holds]] = True
    return ~failed[group_index]


def _match_alone(prediction: np.ndarray, truth: np.ndarray, iou: np.ndarray, thresholds: np.ndarray,
                 reusable: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy matching where every prediction has one candidate ground truth (the common case:
    one box near one object). Nothing to choose: a prediction takes its ground truth at every
    threshold its IoU reaches, unless a lower-indexed prediction took it there first (never a
    reusable one): at the thresholds above the best IoU of the earlier predictions on the same
    ground truth. No loop: a running maximum per ground truth, of threshold counts (exact ints).
    (S,) pairs in prediction order -> (prediction, threshold index, truth) of every match."""
    # By ground truth, then prediction: pairs come in prediction order, one per prediction.
    order = sort_lexicographic([(truth, int(truth.max()) + 1), (np.arange(len(truth)), len(truth))])
    prediction, truth, iou = prediction[order], truth[order], iou[order]
    by_threshold = np.argsort(thresholds, kind="stable")
    reached = np.zeros(len(iou), dtype=np.intp)  # thresholds <= iou: the first `reached` of them
    for threshold in thresholds:  # a few passes: faster than searchsorted's binary searches
        reached += iou >= threshold
    first = np.r_[True, truth[1:] != truth[:-1]]
    # Best `reached` among the earlier pairs of the same ground truth: a running maximum that
    # restarts per ground truth (an offset per segment keeps segments apart), shifted by one.
    segment_offset = (np.cumsum(first) - 1) * (len(thresholds) + 1)
    running = np.maximum.accumulate(reached + segment_offset) - segment_offset
    earlier = np.empty_like(running)
    earlier[0] = 0
    earlier[1:] = np.where(first[1:], 0, running[:-1])
    if reusable is not None:
        earlier[reusable[order]] = 0  # a crowd is never taken
    count = np.maximum(reached - earlier, 0)  # thresholds earlier .. reached - 1
    pair = np.repeat(np.arange(len(truth)), count)
    threshold = earlier[pair] + np.arange(len(pair)) - np.repeat(np.cumsum(count) - count, count)
    return prediction[pair], by_threshold[threshold], truth[pair]


def _match_ranked(prediction: np.ndarray, truth: np.ndarray, iou: np.ndarray, group_index: np.ndarray,
                  is_first: np.ndarray, preferred: np.ndarray | None, reusable: np.ndarray | None,
                  thresholds: np.ndarray, num_truths: int) -> list[tuple[np.ndarray, ...]]:
    """The rank loop (``_match_views``) for groups where a prediction may choose. Pairs in
    prediction order, each prediction's in ascending preference; is_first: a prediction's first
    pair; preferred: (P, V) or None -> [(prediction, column, truth, shared)]."""
    views = preferred is not None and preferred.shape[1] > 1
    preferred = np.ones((len(prediction), 1), dtype=bool) if preferred is None else preferred
    # A group whose candidate ground truths share one preference pattern across the views (one
    # object, or objects of one size) orders them alike in every view: matched once, shared.
    uniform = np.ones(len(prediction), dtype=bool)
    if views:
        same = np.r_[True, (preferred[1:] == preferred[:-1]).all(axis=1) | (group_index[1:] != group_index[:-1])]
        uniform = _all_in_group(group_index, same)
    # Rank among the predictions that have a candidate: only they can take a ground truth away.
    pair_rank = rank_in_group(group_index[is_first])[np.cumsum(is_first) - 1]
    rank_dtype = np.int16 if pair_rank.max() < 2**15 else np.int64  # int16: numpy's radix sort
    by_rank = np.argsort(pair_rank.astype(rank_dtype), kind="stable")  # keeps preference order
    parts = []
    for subset, num_views in ((by_rank[uniform[by_rank]], 1), (by_rank[~uniform[by_rank]], preferred.shape[1])):
        if len(subset):
            found = _match_views(prediction[subset], truth[subset], iou[subset], pair_rank[subset], thresholds,
                                 preferred[subset][:, :num_views], None if reusable is None else reusable[subset],
                                 num_truths)
            parts.append((*found, np.full(len(found[0]), views and num_views == 1)))
    return parts


def greedy_match(
    pairs: Pairs,
    iou: np.ndarray,
    thresholds: np.ndarray,
    prediction_group: np.ndarray,
    ties_to_last: bool,
    truth_preferred: np.ndarray | None = None,
    truth_reusable: np.ndarray | None = None,
) -> Matches:
    """Greedy matching in prediction order, independently per group, view and threshold.

    Each prediction, in index order inside its group, takes the free ground truth it prefers
    among those with IoU >= threshold: in COCOeval a ground truth that is not ignored in the view
    (``truth_preferred``) beats any ignored one, whatever the IoUs (``evaluateImg`` sorts ignored
    ground truth last and stops at the first one once it holds a regular match); then the highest
    IoU; then among equal IoUs the last ground truth (COCOeval) or the first (ultralytics).
    A ``truth_reusable`` ground truth (COCO crowd) stays free after being matched. A group whose
    candidates are preferred alike in every view is matched once: its matches come back shared.
    Groups where each prediction has one candidate need no loop (``_match_alone``).

    pairs: P pairs with iou (P,); thresholds (T,); prediction_group (N,) sorted ascending;
    truth_preferred: (M, V) bool or None (one view, no preference); truth_reusable: (M,) or None.
    """
    empty = np.zeros(0, dtype=np.int64)
    prediction, truth = pairs.prediction, pairs.ground_truth
    keep = iou >= thresholds.min()  # a pair below every threshold can never match
    if not keep.all():  # overlapping_pairs has dropped them already
        prediction, truth, iou = prediction[keep], truth[keep], iou[keep]
    if len(prediction) == 0:
        return Matches(empty, empty, empty, np.zeros(0, dtype=bool))
    if (prediction[1:] < prediction[:-1]).any():  # same_group_pairs gives them in prediction order
        order = np.argsort(prediction, kind="stable")
        prediction, truth, iou = prediction[order], truth[order], iou[order]
    views = truth_preferred is not None and truth_preferred.shape[1] > 1
    reusable = None if truth_reusable is None else truth_reusable[truth]
    # Pairs in prediction order are in group order: groups are runs.
    group = prediction_group[prediction]
    group_index = np.cumsum(np.r_[True, group[1:] != group[:-1]]) - 1
    is_first = np.r_[True, prediction[1:] != prediction[:-1]]  # a prediction's first pair
    simple = _all_in_group(group_index, is_first & np.r_[is_first[1:], True])  # ... and its last
    parts = []
    if simple.any():  # alike in every view (nothing to prefer): shared
        found = _match_alone(prediction[simple], truth[simple], iou[simple], thresholds,
                             None if reusable is None else reusable[simple])
        parts.append((*found, np.full(len(found[0]), views)))
    rest = np.flatnonzero(~simple)
    if len(rest):
        # Sorting inside each prediction's run of pairs keeps group_index and is_first in place.
        prediction, iou, truth = _by_preference(prediction[rest], iou[rest], truth[rest], ties_to_last)
        preferred = None if truth_preferred is None else truth_preferred[truth]
        parts += _match_ranked(prediction, truth, iou, group_index[rest], is_first[rest], preferred,
                               None if truth_reusable is None else truth_reusable[truth], thresholds,
                               int(truth.max()) + 1)
    return Matches(*(np.concatenate(arrays) for arrays in zip(*parts)))
