"""Parity of ParallelMapCalculator with the real tools on random cases built to hit the corners:
IoU ties exactly at thresholds (integer boxes), score ties (2 decimals), > 100 predictions per image
and class, classes missing from ground truth or from predictions, empty images."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_map import Case, make_case, run_faster_coco_eval, run_pycocotools, run_ultralytics
from smartcash.model.training.core.parallel_map_calculator import ParallelMapCalculator

COCO_TOLERANCE = 1e-12
YOLO_TOLERANCE = 1e-9


def hard_case(seed: int, num_images: int, num_classes: int) -> Case:
    """Adversarial case: small integer grid or float boxes, rounded scores, crowded images."""
    rng = np.random.default_rng(seed)
    integer = bool(rng.integers(2))
    round_scores = bool(rng.integers(2))
    truth_classes = rng.choice(num_classes, size=rng.integers(1, num_classes + 1), replace=False)
    predicted_classes = rng.choice(num_classes, size=rng.integers(1, num_classes + 1), replace=False)
    grid = 12 if integer else 40.0

    def boxes(count: int) -> np.ndarray:
        corner = rng.uniform(0, grid, (count, 2))
        size = rng.uniform(0, grid / 2, (count, 2))
        xyxy = np.concatenate([corner, corner + size], 1)
        return np.round(xyxy) if integer else xyxy

    predictions, targets = [], []
    for _ in range(num_images):
        num_truths = rng.choice([0, rng.integers(1, 4), rng.integers(1, 12)])
        truth = boxes(num_truths)
        classes = rng.choice(truth_classes, num_truths)
        crowded = rng.random() < 0.05  # > 100 predictions of one class in one image
        num_predictions = 130 if crowded else rng.choice([0, rng.integers(1, 8), rng.integers(1, 40)])
        predicted = boxes(num_predictions)
        if num_truths and num_predictions:  # half of them near a ground truth (or exactly on it)
            near = rng.random(num_predictions) < 0.5
            source = rng.integers(0, num_truths, num_predictions)
            shift = np.round(rng.normal(0, 1, (num_predictions, 4))) if integer else rng.normal(0, 1.5, (num_predictions, 4))
            moved = truth[source] + shift * (rng.random(num_predictions) < 0.7)[:, None]
            moved = np.concatenate([np.minimum(moved[:, :2], moved[:, 2:]), np.maximum(moved[:, :2], moved[:, 2:])], 1)
            predicted[near] = moved[near]
            label = np.where(rng.random(num_predictions) < 0.8, classes[source], rng.choice(predicted_classes, num_predictions))
        else:
            label = rng.choice(predicted_classes, num_predictions)
        if crowded:
            label[:] = label[0]
        scores = rng.random(num_predictions)
        scores = np.round(scores, 2) if round_scores else scores
        predictions.append(np.column_stack([predicted, scores, label]).astype(np.float64).reshape(-1, 6))
        targets.append(np.column_stack([classes, truth]).astype(np.float64).reshape(-1, 5))
    return Case(predictions, targets, num_classes)


def evaluate(case: Case, mode: str, batch_size: int = 7, class_map=None):
    calculator = ParallelMapCalculator(case.num_classes, mode=mode, class_map=class_map)
    for start in range(0, len(case.predictions), batch_size):
        calculator.update(case.predictions[start : start + batch_size], case.targets[start : start + batch_size])
    return calculator.compute()


def assert_close(actual, expected, tolerance: float, what: str) -> None:
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), f"{what}: NaN pattern differs"
    finite = ~np.isnan(actual)
    difference = np.max(np.abs(actual[finite] - expected[finite]), initial=0.0)
    assert difference <= tolerance, f"{what}: differs by {difference:g}\nactual {actual}\nexpected {expected}"


def has_predictions(case: Case) -> bool:
    return any(len(p) for p in case.predictions)  # pycocotools' loadRes cannot take an empty list


SMALL = [(seed, int(np.random.default_rng(1000 + seed).integers(1, 60)), int(np.random.default_rng(2000 + seed).integers(1, 18))) for seed in range(28)]
LARGE = [(100, 500, 17), (101, 300, 5)]


@pytest.mark.parametrize("seed, num_images, num_classes", SMALL + LARGE)
def test_coco_mode_equals_pycocotools_and_faster_coco_eval(seed: int, num_images: int, num_classes: int) -> None:
    case = hard_case(seed, num_images, num_classes)
    if not has_predictions(case):
        pytest.skip("no predictions at all: pycocotools cannot load an empty result list")
    result = evaluate(case, "coco")
    for reference in (run_pycocotools(case), run_faster_coco_eval(case)):
        assert_close(result.map50, reference.map50, COCO_TOLERANCE, "map50")
        assert_close(result.map50_95, reference.map50_95, COCO_TOLERANCE, "map50_95")
        assert_close(result.ap, reference.ap, COCO_TOLERANCE, "ap")


@pytest.mark.parametrize("seed, num_images, num_classes", SMALL + LARGE)
def test_yolo_mode_equals_ultralytics(seed: int, num_images: int, num_classes: int) -> None:
    case = hard_case(seed, num_images, num_classes)
    result = evaluate(case, "yolo")
    reference = run_ultralytics(case)
    present = result.num_targets_per_class > 0
    assert_close(result.map50 if present.any() else 0.0, reference.map50, YOLO_TOLERANCE, "map50")
    assert_close(result.map50_95 if present.any() else 0.0, reference.map50_95, YOLO_TOLERANCE, "map50_95")
    assert_close(result.ap, reference.ap, YOLO_TOLERANCE, "ap")
    assert_close(result.precision, reference.precision, YOLO_TOLERANCE, "precision")
    assert_close(result.recall, reference.recall, YOLO_TOLERANCE, "recall")
    assert_close(result.f1, reference.f1, YOLO_TOLERANCE, "f1")


def test_realistic_case_both_modes() -> None:
    case = make_case(7, 200, 17, integer_boxes=True, score_decimals=2)
    coco, reference = evaluate(case, "coco"), run_pycocotools(case)
    assert_close([coco.map50, coco.map50_95], [reference.map50, reference.map50_95], COCO_TOLERANCE, "coco")
    yolo, reference = evaluate(case, "yolo"), run_ultralytics(case)
    assert_close([yolo.map50, yolo.map50_95], [reference.map50, reference.map50_95], YOLO_TOLERANCE, "yolo")


def test_main_classes_equal_reference_on_mapped_classes() -> None:
    fine_to_main = [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 7, 7, 7]
    case = hard_case(5, 80, 17)
    lookup = np.array(fine_to_main)

    def mapped(rows: np.ndarray, column: int) -> np.ndarray:
        rows = rows.copy()
        rows[:, column] = lookup[rows[:, column].astype(int)]
        return rows

    main_case = Case([mapped(p, 5) for p in case.predictions], [mapped(t, 0) for t in case.targets], 8)
    for mode, run, tolerance in (("coco", run_pycocotools, COCO_TOLERANCE), ("yolo", run_ultralytics, YOLO_TOLERANCE)):
        result = evaluate(case, mode, class_map=fine_to_main)
        assert result.main is not None and result.main.num_classes == 8
        reference = run(main_case)
        assert_close(result.main.ap, reference.ap, tolerance, f"{mode} main ap")
        assert_close(result.main.map50_95, reference.map50_95, tolerance, f"{mode} main map50_95")


def test_update_order_and_batching_do_not_matter_for_coco() -> None:
    case = hard_case(3, 40, 6)
    one = evaluate(case, "coco", batch_size=1)
    many = evaluate(case, "coco", batch_size=40)
    assert one.map50_95 == many.map50_95 and np.array_equal(one.ap, many.ap, equal_nan=True)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(200, 300))
def test_parity_sweep(seed: int) -> None:
    rng = np.random.default_rng(seed)
    case = hard_case(seed, int(rng.integers(1, 500)), int(rng.integers(1, 18)))
    if has_predictions(case):
        coco, reference = evaluate(case, "coco"), run_pycocotools(case)
        assert_close(coco.ap, reference.ap, COCO_TOLERANCE, "coco ap")
        assert_close(coco.map50_95, reference.map50_95, COCO_TOLERANCE, "coco map50_95")
    yolo, reference = evaluate(case, "yolo"), run_ultralytics(case)
    assert_close(yolo.ap, reference.ap, YOLO_TOLERANCE, "yolo ap")
    assert_close(yolo.f1, reference.f1, YOLO_TOLERANCE, "yolo f1")


@pytest.mark.parametrize("seed", [100, 101, 5])
def test_pairs_built_in_small_chunks_give_the_reference_numbers(seed: int, monkeypatch) -> None:
    """Candidate pairs come a run of predictions at a time (memory bound on dense images): with
    chunks of a few pairs, every chunk boundary falls inside groups, and the numbers still equal
    the tools'."""
    from smartcash.model.training.core import map_pairs

    case = hard_case(seed, 60, 5)
    monkeypatch.setattr(map_pairs, "PAIRS_PER_CHUNK", 7)
    yolo, reference = evaluate(case, "yolo"), run_ultralytics(case)
    assert_close(yolo.ap, reference.ap, YOLO_TOLERANCE, "yolo ap")
    assert_close(yolo.f1, reference.f1, YOLO_TOLERANCE, "yolo f1")
    if has_predictions(case):
        coco, reference = evaluate(case, "coco"), run_pycocotools(case)
        assert_close(coco.ap, reference.ap, COCO_TOLERANCE, "coco ap")


def test_one_dense_image_is_evaluated_in_bounded_memory() -> None:
    """3000 predictions and 3000 ground truths of one class in one image: 9 million candidate
    pairs, of which a few thousand overlap. The pairs never exist all at once (the peak of
    traced numpy memory stays far under the ~1.3 GB that building them together took), and the
    numbers equal ultralytics'."""
    import tracemalloc

    rng = np.random.default_rng(0)
    count = 3000
    centre, size = rng.uniform(0, 640, (count, 2)), rng.uniform(5, 60, (count, 2))
    truth = np.concatenate([centre - size / 2, centre + size / 2], 1)
    moved = truth + rng.normal(0, 2, (count, 4))
    moved = np.concatenate([np.minimum(moved[:, :2], moved[:, 2:]), np.maximum(moved[:, :2], moved[:, 2:])], 1)
    case = Case([np.column_stack([moved, rng.random(count), np.zeros(count)])],
                [np.column_stack([np.zeros(count), truth])], 1)
    tracemalloc.start()
    try:
        result = evaluate(case, "yolo")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 500 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    reference = run_ultralytics(case)
    assert_close(result.ap, reference.ap, YOLO_TOLERANCE, "yolo ap")
