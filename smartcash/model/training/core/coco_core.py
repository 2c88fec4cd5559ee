"""COCOeval's ``evaluate`` + ``accumulate`` on index arrays (numpy only): the one core behind
``evaluate_coco`` and ``ParallelMapCalculator(mode="coco")``.

Rules (pycocotools/cocoeval.py 2.0.11; iouType "bbox"), each applied to every image, category,
area range and IoU threshold at once:
  * per (image, category) group, detections sorted by score with a stable sort (ties keep the
    input order) and cut to the largest maxDets (``computeIoU`` / ``evaluateImg``);
  * IoU as ``maskUtils.iou`` on [x, y, w, h]; against a crowd ground truth the union is the
    detection's own area;
  * a ground truth is ignored in an area range when it is a crowd or its ``area`` field lies
    outside [low, high] (both ends inside, so 32**2 is both small and medium);
  * greedy matching per threshold: a detection takes the unmatched, non-ignored ground truth with
    the highest IoU >= min(t, 1 - 1e-10), the last one among equal IoUs; failing that an ignored
    one by the same rule; a crowd stays available to later detections; a detection matched to an
    ignored ground truth is ignored, and so is an unmatched one whose w * h is outside the range;
  * a match to an annotation with id 0 counts as no match (``dtm`` stores the id and 0 means
    unmatched), as in pycocotools;
  * ``accumulate``: per category, the detections of every image (images in id order, each in its
    score order, cut at each maxDets), stable-sorted by score (``coco_accumulation``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smartcash.model.training.core.coco_accumulation import CocoCurves, accumulate, column_bits
from smartcash.model.training.core.map_matching import Matches, greedy_match, rank_in_group, sort_lexicographic
from smartcash.model.training.core.map_pairs import coco_pair_iou, overlapping_pairs

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCOeval Params.iouThrs
ALL_AREAS = (0.0, 1e5**2)  # COCOeval areaRng "all"


@dataclass(frozen=True)
class CocoInput:
    """One evaluation's detections and ground truth as index arrays.

    detection_boxes: (N, 4) float64 [x, y, w, h]; detection_scores: (N,); detection_images,
    detection_categories: (N,) int64 in [0, num_images) and [0, num_categories), images numbered
    in COCOeval's order (sorted ids). truth_boxes: (G, 4); truth_areas: (G,) the annotations'
    ``area`` fields; truth_crowd: (G,) bool; truth_counted: (G,) bool, False for annotation id 0;
    truth_images, truth_categories: (G,) int64. Inside one (image, category) group, rows keep the
    order COCOeval sees them in (dataset order, results order).
    """

    detection_boxes: np.ndarray
    detection_scores: np.ndarray
    detection_images: np.ndarray
    detection_categories: np.ndarray
    truth_boxes: np.ndarray
    truth_areas: np.ndarray
    truth_crowd: np.ndarray
    truth_counted: np.ndarray
    truth_images: np.ndarray
    truth_categories: np.ndarray
    num_images: int
    num_categories: int


@dataclass(frozen=True)
class CocoCoreResult:
    """What ``run_coco`` computes.

    curves: COCOeval's precision / recall / scores arrays. truth_counts: (K, A) non-ignored ground
    truths. detection_order: (D,) the detections within the largest maxDets, as indices into the
    input, in accumulate order (category, score descending, image, rank). matched: (E,) int64
    sorted, one per detection matched in a row (area range, threshold):
    ((row << column_bits(D) | column) << 1) | is_true_positive, column = the detection's place in
    detection_order; a detection not listed in a row is unmatched there (coco_accumulation's events).
    """

    curves: CocoCurves
    truth_counts: np.ndarray
    detection_order: np.ndarray
    matched: np.ndarray

    def true_positives(self, num_rows: int) -> np.ndarray:
        """(D, num_rows) bool: true positives in the first rows (num_rows = T: area range 0 at
        every threshold)."""
        bits = column_bits(len(self.detection_order))
        row, column = self.matched >> (bits + 1), (self.matched >> 1) & ((1 << bits) - 1)
        hits = np.zeros((len(self.detection_order), num_rows), dtype=bool)
        chosen = (self.matched & 1).astype(bool) & (row < num_rows)
        hits[column[chosen], row[chosen]] = True
        return hits


def _accumulate_order(categories: np.ndarray, score_rank: np.ndarray, images: np.ndarray, rank: np.ndarray,
                      group: np.ndarray, sizes: tuple[int, int, int, int]) -> np.ndarray:
    """Order of the kept detections (sorted by group = image * K + category, `rank` inside) by
    (category, score rank, image, rank). The key is unique and holds everything needed to find
    the detection again (its group and rank), so we sort the keys themselves (SIMD sort)."""
    num_categories, num_scores, num_images, largest = (max(int(size), 1) for size in sizes)
    if num_categories * num_scores * num_images * largest >= 2**63:
        return np.lexsort((rank, images, score_rank, categories))
    key = np.sort(((categories * num_scores + score_rank) * num_images + images) * largest + rank)
    rest, rank_sorted = np.divmod(key, largest)
    rest, image_sorted = np.divmod(rest, num_images)
    counts = np.bincount(group, minlength=num_images * num_categories)
    group_first = np.cumsum(counts) - counts  # group is sorted: its rows start here
    return group_first[image_sorted * num_categories + rest // num_scores] + rank_sorted


def _event_keys(matches: Matches, position: np.ndarray, ignored: np.ndarray, counted: np.ndarray,
                num_thresholds: int) -> np.ndarray:
    """The matches as sorted event keys ``((row << column_bits(D) | column) << 1) | true positive``
    (coco_accumulation's input). position: (D,) each detection's column; ignored: (G, A) per area
    range (a match to an ignored ground truth makes the detection ignored: listed, not a true
    positive); counted: (G,), False for annotation id 0 (a match to it is no match: not listed).

    A shared match is listed in every row of its threshold. Sorted once by (threshold, column), it
    is in order in every area range too: one sort of the shared matches, not of A copies.
    """
    bits = column_bits(len(position))
    row_size = 1 << (bits + 1)  # one row of keys
    own = ~matches.shared
    truth, column = matches.ground_truth[own], matches.column[own]
    to_ignored = ignored[truth, column // num_thresholds]
    key = (((column << bits) | position[matches.prediction[own]]) << 1) | ~to_ignored
    own_keys = np.sort(key[to_ignored | counted[truth]])
    shared = matches.shared
    if not shared.any():
        return own_keys
    key = ((matches.column[shared] << bits) | position[matches.prediction[shared]]) << 1
    truth = matches.ground_truth[shared]
    truth_bits = column_bits(len(ignored))
    if (num_thresholds * row_size) << truth_bits < 2**63:  # sort (key, truth) packed: no permutation to apply
        packed = np.sort((key << truth_bits) | truth)
        key, truth = packed >> truth_bits, packed & ((1 << truth_bits) - 1)
    else:
        order = np.argsort(key)  # keys are unique: one match per (threshold, detection)
        key, truth = key[order], truth[order]
    truth_ignored, truth_counted = ignored[truth], counted[truth]  # (S, A), (S,)
    by_area = [(key + area * num_thresholds * row_size + ~ignored_here)[ignored_here | truth_counted]
               for area, ignored_here in enumerate(truth_ignored.T)]
    shared_keys = np.concatenate(by_area)  # sorted: areas ascend, each in order
    return np.insert(shared_keys, np.searchsorted(shared_keys, own_keys), own_keys)


def run_coco(
    data: CocoInput,
    iou_thresholds: np.ndarray = IOU_THRESHOLDS,
    area_ranges: np.ndarray = np.array([ALL_AREAS]),
    max_detections: tuple[int, ...] = (100,),
) -> CocoCoreResult:
    """Match and accumulate as COCOeval does. area_ranges: (A, 2) [low, high]; max_detections
    ascending."""
    num_categories, num_images = data.num_categories, data.num_images
    num_groups = max(num_images * num_categories, 1)
    scores = data.detection_scores
    largest = int(max_detections[-1])
    thresholds = np.minimum(np.asarray(iou_thresholds, dtype=np.float64), 1 - 1e-10)  # evaluateImg
    low, high = np.asarray(area_ranges, dtype=np.float64).T  # (A,) each

    # Detections by (image, category) group, score descending, ties in input order (mergesort).
    distinct_scores, score_rank = np.unique(-scores, return_inverse=True)  # 0: the highest score
    score_rank, num_scores = score_rank.reshape(-1), max(len(distinct_scores), 1)
    group = data.detection_images * num_categories + data.detection_categories
    count = len(scores)
    order = sort_lexicographic([(group, num_groups), (score_rank, num_scores), (np.arange(count), max(count, 1))])
    rank = rank_in_group(group[order])
    order, rank = order[rank < largest], rank[rank < largest]  # dt[0:maxDets[-1]]
    group_sorted = group[order]

    # Ground truth by group, dataset order inside; ignored per area range.
    truth_group = data.truth_images * num_categories + data.truth_categories
    num_truths = len(truth_group)
    truth_order = sort_lexicographic([(truth_group, num_groups), (np.arange(num_truths), max(num_truths, 1))])
    areas, crowd = data.truth_areas[truth_order], data.truth_crowd[truth_order]
    ignored = crowd[:, None] | (areas[:, None] < low) | (areas[:, None] > high)  # (G, A)

    pairs, iou = overlapping_pairs(
        group_sorted, truth_group[truth_order],
        lambda pairs: coco_pair_iou(  # np.take: rows gathered ~2x faster than by indexing
            np.take(data.detection_boxes, order[pairs.prediction], axis=0),
            np.take(data.truth_boxes, truth_order[pairs.ground_truth], axis=0),
            crowd[pairs.ground_truth],
        ),
        float(thresholds.min()) if len(thresholds) else np.inf,
        num_groups,
    )
    matches = greedy_match(pairs, iou, thresholds, group_sorted, ties_to_last=True,
                           truth_preferred=~ignored, truth_reusable=crowd)

    # Accumulate order of the kept detections: category, score, image, rank in the group.
    kept_images = data.detection_images[order]
    kept_categories = data.detection_categories[order]
    by_category = _accumulate_order(kept_categories, score_rank[order], kept_images, rank, group_sorted,
                                    (num_categories, num_scores, num_images, largest))
    position = np.empty(len(order), dtype=np.int64)
    position[by_category] = np.arange(len(order))
    num_thresholds = len(thresholds)
    matched = _event_keys(matches, position, ignored, data.truth_counted[truth_order], num_thresholds)

    detection_order = order[by_category]
    # loadRes: area = w * h. Computed in input order, then gathered: 8 bytes a row, not 32.
    detection_area = (data.detection_boxes[:, 2] * data.detection_boxes[:, 3])[detection_order]
    outside = (detection_area < low[:, None]) | (detection_area > high[:, None])  # (A, D)
    truth_counts = np.stack(
        [np.bincount(data.truth_categories[truth_order][~ignored[:, a]], minlength=num_categories)
         for a in range(len(low))], axis=1,
    ) if len(low) else np.zeros((num_categories, 0), dtype=np.int64)  # (K, A) npig
    curves = accumulate(
        matched, outside, kept_categories[by_category], rank[by_category], scores[detection_order],
        truth_counts, tuple(int(m) for m in max_detections), num_thresholds,
    )
    return CocoCoreResult(curves, truth_counts, detection_order, matched)
