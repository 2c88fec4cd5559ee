"""Pictures: boxes land on the pixels their labels give, in their main class's colour; predictions
are filtered and split by image; validation detections go back to the input's pixels; labels.png
counts what the label rows hold; a training run leaves every picture."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from smartcash.data.synthetic import ensure_synthetic_dataset
from smartcash.draw import class_color
from smartcash.model.training import pictures
from smartcash.model.training.core.validation_executor import validation_sample
from smartcash.plots import class_color_rgb, labels_figure
from smartcash.taxonomy import load_taxonomy
from smartcash.train import main

GRAY = 128


def test_target_boxes_hand_computed() -> None:
    targets = torch.tensor([[1, 3, 0.5, 0.25, 0.5, 0.25], [0, 14, 0.25, 0.5, 0.1, 0.2]])
    boxes = pictures.target_boxes(targets, batch_size=3, height=40, width=80)
    assert [len(rows) for rows in boxes] == [1, 1, 0]
    np.testing.assert_allclose(boxes[1][0, :4], [20, 5, 60, 15])  # cx 40 cy 10 w 40 h 10
    np.testing.assert_allclose(boxes[0][0, :4], [16, 16, 24, 24])
    assert math.isnan(boxes[0][0, 4]) and boxes[0][0, 5] == 14 and boxes[1][0, 5] == 3


def test_prediction_boxes_keep_scores_from_the_threshold() -> None:
    predictions = torch.tensor([[0, 1, 2, 3, 4, 0.9, 5], [0, 1, 2, 3, 4, 0.1, 6], [2, 5, 6, 7, 8, 0.25, 16]])
    boxes = pictures.prediction_boxes(predictions, batch_size=3, min_score=0.25)
    assert [len(rows) for rows in boxes] == [1, 0, 1]
    np.testing.assert_allclose(boxes[0], [[1, 2, 3, 4, 0.9, 5]], rtol=1e-6)
    np.testing.assert_allclose(boxes[2], [[5, 6, 7, 8, 0.25, 16]], rtol=1e-6)


def test_validation_sample_boxes_in_input_pixels() -> None:
    class Batch:  # the loader's Batch fields that a sample reads
        images = torch.zeros(2, 3, 64, 64)
        targets = torch.zeros(0, 6)
        letterbox = torch.tensor([[0.5, 0.0, 8.0], [1.0, 4.0, 0.0]])  # input = source * scale + pad
        paths = ["a.jpg", "b.jpg"]

    detections = torch.tensor([[0, 10, 20, 30, 40, 0.8, 1], [1, 10, 20, 30, 40, 0.7, 2]])
    sample = validation_sample(Batch(), detections)
    np.testing.assert_allclose(sample.predictions[:, 1:5], [[5, 18, 15, 28], [14, 20, 34, 40]])
    np.testing.assert_allclose(sample.predictions[:, [0, 5, 6]], detections[:, [0, 5, 6]])
    assert sample.paths == ("a.jpg", "b.jpg")


def _edge_pixels(grid: np.ndarray, left: int, top: int, right: int, bottom: int) -> np.ndarray:
    """BGR pixels half-way down the left and right edges and along the bottom edge of a box."""
    middle_y, middle_x = (top + bottom) // 2, (left + right) // 2
    return grid[[middle_y, middle_y, bottom], [left, right, middle_x]]


def test_batch_picture_draws_each_box_on_its_object_in_its_main_colour() -> None:
    taxonomy = load_taxonomy()
    images = torch.full((2, 3, 64, 64), GRAY / 255)
    # Image 0: 1000_whole (fine 0) at x 8..40, y 16..48; image 1: 1000_nominal_feature (fine 7,
    # main 0 too) at x 24..56, y 24..56. Centres and sizes normalised to 64.
    targets = torch.tensor([[0, 0, 24 / 64, 32 / 64, 32 / 64, 32 / 64], [1, 7, 40 / 64, 40 / 64, 32 / 64, 32 / 64]])
    grid = pictures.batch_picture(images, pictures.target_boxes(targets, 2, 64, 64), ["a.jpg", "b.jpg"], taxonomy)
    assert grid.shape == (64, 128, 3)  # 2 images: 2 columns, 1 row
    colour = np.array(class_color(0), dtype=int)  # main class 0 (1000) for both
    for left, top, right, bottom in ((8, 16, 40, 48), (64 + 24, 24, 64 + 56, 56)):
        edges = _edge_pixels(grid, left, top, right, bottom).astype(int)
        assert np.all(edges == colour), edges
        assert np.all(grid[(top + bottom) // 2, (left + right) // 2] == GRAY)  # the inside is the image
    assert np.all(grid[40, 50] == GRAY) and np.all(grid[10, 64 + 10] == GRAY)  # away from the boxes


def test_labels_figure_counts_instances_per_layer() -> None:
    taxonomy = load_taxonomy()
    labels = [np.array([[0, 0.5, 0.5, 0.2, 0.2], [0, 0.3, 0.3, 0.1, 0.1], [14, 0.5, 0.5, 0.05, 0.4]]),
              np.zeros((0, 5)), np.array([[8, 0.1, 0.9, 0.1, 0.1]])]
    figure = labels_figure(labels, taxonomy)
    axes = figure.axes
    heights = {layer: [patch.get_height() for patch in axes[index].patches] for index, layer in enumerate((1, 2, 3))}
    assert heights[1] == [2, 0, 0, 0, 0, 0, 0] and heights[2] == [0, 1, 0, 0, 0, 0, 0] and heights[3] == [1, 0, 0]
    assert [patch.get_facecolor()[:3] for patch in axes[1].patches][1] == pytest.approx(class_color_rgb(1))
    assert [tick.get_text() for tick in axes[2].get_xticklabels()] == ["security_thread", "watermark", "special_sign"]


def test_training_leaves_the_pictures(tmp_path) -> None:
    data = ensure_synthetic_dataset(root=tmp_path / "data", num_train=8, num_val=4, imgsz=64)
    (tmp_path / "tiny.yaml").write_text("plots: true\nwarmup_epochs: 0.5\nprecise_bn_images: 0\n")
    assert main(["--data", str(data), "--imgsz", "64", "--batch", "2", "--workers", "0", "--device", "cpu",
                 "--epochs", "1", "--project", str(tmp_path / "runs"), "--config", str(tmp_path / "tiny.yaml")]) == 0
    run = tmp_path / "runs/train/exp/phase1"
    assert cv2.imread(str(run / "labels.png")) is not None
    for name in ("train_batch0", "train_batch1", "train_batch2", "val_batch0_labels", "val_batch0_pred"):
        picture = cv2.imread(str(run / f"{name}.jpg"))
        assert picture is not None and picture.shape == (64, 128, 3), name  # batch of 2 images of 64 px side by side
    assert not (run / "train_batch3.jpg").exists()
