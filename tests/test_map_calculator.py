"""ParallelMapCalculator on cases small enough to compute by hand, its input checks, tensor inputs
and its import weight. (Parity with the real tools on random cases is in test_map_parity.py.)"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from smartcash.model.training.core.parallel_map_calculator import ParallelMapCalculator

# One image, two classes. Class 0: two ground truths and three predictions, scores .9 / .8 / .7:
# an exact hit (IoU 1), a miss far away, an exact hit. Class 1: a prediction, no ground truth.
PREDICTIONS = [np.array([[0, 0, 10, 10, 0.9, 0],
                         [50, 50, 60, 60, 0.8, 0],
                         [20, 20, 30, 30, 0.7, 0],
                         [0, 0, 5, 5, 0.6, 1]], dtype=np.float64)]
TARGETS = [np.array([[0, 0, 0, 10, 10],
                     [0, 20, 20, 30, 30]], dtype=np.float64)]


def _compute(mode: str, predictions=PREDICTIONS, targets=TARGETS, num_classes: int = 2, **kwargs):
    calculator = ParallelMapCalculator(num_classes, mode=mode, **kwargs)
    calculator.update(predictions, targets)
    return calculator.compute()


def test_hand_computed_coco() -> None:
    # In score order the class-0 predictions are TP, FP, TP at every threshold (IoUs are 1 or 0):
    # recall .5 .5 1, precision 1 .5 2/3, envelope 1 2/3 2/3. COCO reads the envelope at the 101
    # recall points r = 0, .01 ... 1 with searchsorted(left): r <= .5 (51 points) -> 1,
    # r > .5 (50 points) -> 2/3. AP = (51 + 50 * 2/3) / 101 = 84.333... / 101.
    result = _compute("coco")
    expected = (51 + 50 * 2 / 3) / 101
    assert result.ap[0] == pytest.approx(np.full(10, expected), abs=1e-12)
    # Class 1 has no ground truth: NaN, and out of the mean (not a 0 that halves it).
    assert np.isnan(result.ap[1]).all()
    assert result.map50 == pytest.approx(expected, abs=1e-12)
    assert result.map50_95 == pytest.approx(expected, abs=1e-12)
    assert result.num_targets_per_class.tolist() == [2, 0]
    # Best-F1 operating point: all three kept -> P = 2/3, R = 1.
    assert result.precision[0] == pytest.approx(2 / 3, abs=1e-9) and result.recall[0] == pytest.approx(1.0)


def test_hand_computed_yolo() -> None:
    # ultralytics compute_ap: mrec = [0, .5, .5, 1, 1], mpre = [1, 1, .5, 2/3, 0] -> envelope
    # [1, 1, 2/3, 2/3, 0]; np.interp at x = 0, .01 ... 1 gives 1 for x < .5, 2/3 for .5 <= x < 1
    # and 0 at x = 1 (the sentinel). Trapezoid: 49 intervals of 1 (.49) + (1 + 2/3) / 2 * .01
    # + 49 intervals of 2/3 (.32667) + (2/3 + 0) / 2 * .01 = 0.828333...
    result = _compute("yolo")
    expected = 0.49 + (1 + 2 / 3) / 2 * 0.01 + 49 * 0.01 * 2 / 3 + (2 / 3) / 2 * 0.01
    assert result.ap[0] == pytest.approx(np.full(10, expected), abs=1e-9)
    assert np.isnan(result.ap[1]).all()
    assert result.map50 == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("mode", ["coco", "yolo"])
def test_iou_exactly_on_a_threshold(mode: str) -> None:
    # Prediction [0, 0, 10, 7.5] on ground truth [0, 0, 10, 10]: IoU = 75 / 100 = 0.75 exactly.
    # Both tools count IoU >= threshold: it is a hit at .50 .55 .60 .65 .70 .75 (6 of 10) and a
    # miss above. A single hit has AP 1 in COCO; ultralytics' trapezoid ends on its sentinel
    # (precision 0 at recall 1), losing half of the last .01 interval: 1 - .005 = .995.
    # (yolo mode's float32 IoU: 75 / (100 + 75 - 75 + 1e-7) rounds to 0.75 in float32.)
    hit = 1.0 if mode == "coco" else 0.995
    result = _compute(mode, [np.array([[0, 0, 10, 7.5, 0.9, 0]])], [np.array([[0, 0, 0, 10, 10]])], 1)
    assert result.ap[0].tolist() == pytest.approx([hit] * 6 + [0.0] * 4, abs=1e-9)
    assert result.map50 == pytest.approx(hit) and result.map50_95 == pytest.approx(0.6 * hit)


def test_main_classes_through_class_map() -> None:
    # Fine classes 0 and 1 both map to main class 0: the class-1 prediction (IoU 0.25 with the
    # first ground truth: 25 / 100) becomes a false positive of main class 0, ranked last
    # (score .6): TP FP TP FP -> same envelope as before, AP unchanged.
    result = _compute("coco", class_map=[0, 0])
    assert result.main is not None and result.main.num_classes == 1
    assert result.main.map50 == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)


def test_empty_inputs_and_no_ground_truth() -> None:
    calculator = ParallelMapCalculator(3)
    calculator.update([np.zeros((0, 6)), np.zeros((0,))], [np.zeros((0, 5)), np.zeros((0, 5))])
    result = calculator.compute()
    assert result.num_images == 2 and np.isnan(result.map50) and np.isnan(result.ap).all()
    # Ground truth but no predictions: AP 0 (counted), not NaN.
    calculator.reset()
    calculator.update([np.zeros((0, 6))], [np.array([[1, 0, 0, 5, 5]])])
    result = calculator.compute()
    assert result.map50 == 0.0 and result.ap[1].tolist() == [0.0] * 10 and np.isnan(result.ap[0]).all()


def test_torch_tensors_equal_numpy() -> None:
    as_tensors = _compute("coco", [torch.from_numpy(p).float() for p in PREDICTIONS],
                          [torch.from_numpy(t) for t in TARGETS])
    as_arrays = _compute("coco")
    np.testing.assert_array_equal(as_tensors.ap, as_arrays.ap)


@pytest.mark.parametrize(("predictions", "targets", "message"), [
    ([np.zeros((2, 5))], [np.zeros((0, 5))], r"predictions\[0\]: expected an array of shape \(N, 6\)"),
    ([np.zeros((0, 6))], [np.zeros((1, 4))], r"targets\[0\]: expected an array of shape \(M, 5\)"),
    ([np.zeros((0, 6)), np.array([[0, 0, 1, np.nan, 0.5, 0]])], [np.zeros((0, 5))] * 2,
     r"predictions\[1\] row 0: values must be finite"),
    ([np.array([[0, 0, 1, 1, np.inf, 0]])], [np.zeros((0, 5))], r"predictions\[0\] row 0: values must be finite"),
    ([np.array([[5, 0, 1, 1, 0.5, 0]])], [np.zeros((0, 5))], r"predictions\[0\] row 0: box must have x2 >= x1"),
    ([np.zeros((0, 6))], [np.array([[0, 0, 5, 1, 1]])], r"targets\[0\] row 0: box must have x2 >= x1 and y2 >= y1"),
    ([np.array([[0, 0, 1, 1, 0.5, 3]])], [np.zeros((0, 5))], r"predictions\[0\] row 0: class .* in \[0, 3\)"),
    ([np.zeros((0, 6))], [np.array([[-1, 0, 0, 1, 1]])], r"targets\[0\] row 0: class .* in \[0, 3\)"),
    ([np.zeros((0, 6))], [np.array([[0.5, 0, 0, 1, 1]])], r"targets\[0\] row 0: class .* must be an integer"),
    ([np.zeros((0, 6))] * 2, [np.zeros((0, 5))], r"predictions has 2 entries but targets has 1"),
    ([[0, 0, 1, 1, 0.5, 0]], [np.zeros((0, 5))], r"predictions\[0\]: expected a numpy array or torch tensor"),
])
def test_bad_input_names_argument_image_and_expectation(predictions, targets, message) -> None:
    calculator = ParallelMapCalculator(3)
    with pytest.raises(ValueError, match=message):
        calculator.update(predictions, targets)
    assert calculator.num_images == 0  # a rejected batch leaves nothing behind


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        ParallelMapCalculator(0)
    with pytest.raises(ValueError, match="mode"):
        ParallelMapCalculator(3, mode="voc")
    with pytest.raises(ValueError, match="class_map"):
        ParallelMapCalculator(3, class_map=[0, 1])


def test_import_pulls_in_numpy_only() -> None:
    code = ("import sys; import smartcash.model.training.core.parallel_map_calculator; "
            "heavy = [m for m in ('torch', 'ultralytics', 'cv2', 'albumentations', 'torchvision') if m in sys.modules]; "
            "print(','.join(heavy))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == ""


@pytest.mark.parametrize("mode", ["coco", "yolo"])
def test_scores_outside_zero_one_warn_that_precision_recall_f1_are_off(mode: str, recwarn) -> None:
    """A perfect box scored -3 (a logit): AP 1, but recall and F1 read on the [0, 1] grid are 0."""
    calculator = ParallelMapCalculator(1, mode=mode)
    calculator.update([np.array([[0, 0, 10, 10, -3.0, 0]])], [np.array([[0, 0, 0, 10, 10]])])
    with pytest.warns(UserWarning, match=r"prediction scores span \[-3, -3\], outside \[0, 1\]"):
        result = calculator.compute()
    assert result.map50 == pytest.approx(1.0 if mode == "coco" else 0.995)
    calculator = ParallelMapCalculator(1, mode=mode)  # probabilities: no warning
    calculator.update([np.array([[0, 0, 10, 10, 0.9, 0]])], [np.array([[0, 0, 0, 10, 10]])])
    calculator.compute()
    assert not [w for w in recwarn if "outside [0, 1]" in str(w.message)]
