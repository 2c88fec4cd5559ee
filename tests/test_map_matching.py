"""greedy_match against a plain sequential greedy matcher (the documented rule, one prediction,
view and threshold at a time): the same matches on random small groups with tied IoUs, IoUs on the
thresholds, views that prefer different ground truths and reusable (crowd) ground truths."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from smartcash.model.training.core.map_matching import greedy_match
from smartcash.model.training.core.map_pairs import same_group_pairs

IOUS = [0.0, 0.3, 0.5, 0.55, 0.75, 0.75, 0.9, 1.0]


def reference(prediction_group, truth_group, iou, thresholds, ties_to_last, preferred, reusable) -> set:
    """{(prediction, view, threshold index, truth)}: each prediction in index order takes the free
    candidate it prefers: preferred in the view, then higher IoU, then the later (or earlier) truth."""
    found = set()
    for view in range(preferred.shape[1]):
        for t, threshold in enumerate(thresholds):
            taken = set()
            for p, group in enumerate(prediction_group):
                candidates = [g for g in range(len(truth_group)) if truth_group[g] == group
                              and iou[p, g] >= threshold and (g not in taken or reusable[g])]
                if candidates:
                    best = max(candidates, key=lambda g: (preferred[g, view], iou[p, g], g if ties_to_last else -g))
                    taken.add(best)
                    found.add((p, view, t, best))
    return found


@settings(max_examples=400, deadline=None)
@given(data=st.data(), num_predictions=st.integers(1, 9), num_truths=st.integers(1, 6), num_groups=st.integers(1, 3),
       num_views=st.integers(1, 3), ties_to_last=st.booleans(), many_thresholds=st.booleans())
def test_greedy_match_equals_sequential_matching(data, num_predictions, num_truths, num_groups, num_views,
                                                 ties_to_last, many_thresholds) -> None:
    prediction_group = np.sort(data.draw(st.lists(st.integers(0, num_groups - 1), min_size=num_predictions,
                                                  max_size=num_predictions)))
    truth_group = np.sort(data.draw(st.lists(st.integers(0, num_groups - 1), min_size=num_truths, max_size=num_truths)))
    iou = np.array(data.draw(st.lists(st.sampled_from(IOUS), min_size=num_predictions * num_truths,
                                      max_size=num_predictions * num_truths))).reshape(num_predictions, num_truths)
    preferred = np.array(data.draw(st.lists(st.booleans(), min_size=num_truths * num_views,
                                            max_size=num_truths * num_views))).reshape(num_truths, num_views)
    reusable = np.array(data.draw(st.lists(st.booleans(), min_size=num_truths, max_size=num_truths)))
    thresholds = np.linspace(0.5, 0.95, 10) if many_thresholds else np.array([0.75, 0.5])  # any order
    pairs = same_group_pairs(prediction_group, truth_group)
    if data.draw(st.booleans()):  # any order of pairs
        shuffle = np.array(data.draw(st.permutations(range(len(pairs.prediction)))), dtype=np.int64)
        pairs = type(pairs)(pairs.prediction[shuffle], pairs.ground_truth[shuffle])
    matches = greedy_match(pairs, iou[pairs.prediction, pairs.ground_truth], thresholds, prediction_group,
                           ties_to_last, truth_preferred=preferred if num_views > 1 else None, truth_reusable=reusable)
    found = set()
    for p, column, g, shared in zip(matches.prediction, matches.column, matches.ground_truth, matches.shared):
        views = range(num_views) if shared else [column // len(thresholds)]
        found |= {(int(p), view, int(column % len(thresholds)), int(g)) for view in views}
    expected_preferred = preferred if num_views > 1 else np.ones((num_truths, 1), dtype=bool)
    expected = reference(prediction_group, truth_group, iou, thresholds, ties_to_last, expected_preferred, reusable)
    assert found == expected
    assert len(found) == len(matches.prediction) + (num_views - 1) * int(matches.shared.sum())  # each match listed once


@settings(max_examples=300, deadline=None)
@given(data=st.data(), num_predictions=st.integers(0, 12), num_truths=st.integers(0, 8), num_groups=st.integers(1, 4),
       chunk_pairs=st.integers(1, 20), min_iou=st.sampled_from([0.0, 0.5, 0.75]), table=st.booleans())
def test_overlapping_pairs_equal_all_pairs_filtered(data, num_predictions, num_truths, num_groups, chunk_pairs,
                                                    min_iou, table) -> None:
    """Chunked pair building gives exactly the same-group pairs whose IoU reaches the bound, in
    prediction order (then ground-truth order), whatever the chunk size: against a double loop."""
    from smartcash.model.training.core.map_pairs import overlapping_pairs

    prediction_group = np.sort(np.array(data.draw(st.lists(st.integers(0, num_groups - 1), min_size=num_predictions,
                                                           max_size=num_predictions)), dtype=np.int64))
    truth_group = np.sort(np.array(data.draw(st.lists(st.integers(0, num_groups - 1), min_size=num_truths,
                                                      max_size=num_truths)), dtype=np.int64))
    iou = np.array(data.draw(st.lists(st.sampled_from(IOUS), min_size=num_predictions * num_truths,
                                      max_size=num_predictions * num_truths))).reshape(num_predictions, num_truths)
    pairs, pair_iou = overlapping_pairs(prediction_group, truth_group, lambda p: iou[p.prediction, p.ground_truth],
                                        min_iou, num_groups if table else None, chunk_pairs)
    expected = [(p, g) for p in range(num_predictions) for g in range(num_truths)
                if prediction_group[p] == truth_group[g] and iou[p, g] >= min_iou]
    assert list(zip(pairs.prediction.tolist(), pairs.ground_truth.tolist())) == expected
    assert pair_iou.tolist() == [iou[p, g] for p, g in expected]
