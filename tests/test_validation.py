"""Validation core end to end on a tiny model and a tiny non-square dataset (CPU, seconds).

References: the mAP calculator fed independently (ground truth read from the label files),
ultralytics' DetectionValidator matching + DetMetrics, and the training loss.
"""

import copy
import json
import threading
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import yaml

from smartcash.data.dataset_config import load_dataset_config
from smartcash.data.loader import build_dataloader
from smartcash.data.synthetic import ensure_synthetic_dataset
from smartcash.model.build import build_model
from smartcash.model.loss import YoloLoss
from smartcash.model.training.core.parallel_map_calculator import ParallelMapCalculator
from smartcash.model.training.core.prediction_processor import PredictionProcessor
from smartcash.model.training.core.validation_executor import ValidationExecutor, ValidationSettings
from smartcash.config import default_values as _default_values
from smartcash.taxonomy import load_loss_config, load_taxonomy

IMGSZ = 64
EXTRA_WIDTH = 32  # source images become 128 x 96: letterbox scale 0.5, pad_y 8


def _read_labels(path: Path) -> np.ndarray:
    """(n, 5) rows of a YOLO label file; (0, 5) for a background image."""
    rows = [[float(value) for value in line.split()] for line in path.read_text().splitlines() if line.strip()]
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> Path:
    """The synthetic val images padded on the right to 128 x 96, labels renormalised."""
    source = ensure_synthetic_dataset(root=tmp_path_factory.mktemp("synthetic"), num_train=1, num_val=5,
                                      imgsz=96, workers=1)
    root = tmp_path_factory.mktemp("wide")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for image_path in sorted((source.parent / "images" / "val").iterdir()):
        image = cv2.imread(str(image_path))
        height, width = image.shape[:2]
        cv2.imwrite(str(root / "images" / image_path.name), cv2.copyMakeBorder(
            image, 0, 0, 0, EXTRA_WIDTH, cv2.BORDER_CONSTANT, value=(114, 114, 114)))
        labels = _read_labels(source.parent / "labels" / "val" / f"{image_path.stem}.txt")
        labels[:, [1, 3]] *= width / (width + EXTRA_WIDTH)
        np.savetxt(root / "labels" / f"{image_path.stem}.txt", labels, fmt="%g")
    names = yaml.safe_load(source.read_text())["names"]
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "images", "val": "images", "names": names}))
    return root / "data.yaml"


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """yolov5n with objectness and class biases at 0: thousands of candidates, a non-trivial mAP."""
    torch.manual_seed(0)
    model = build_model("yolov5n", 17)
    with torch.no_grad():
        for conv in model.detect.convs:
            conv.bias.view(3, -1)[:, 4:] = 0.0
    return model.eval()


def _loader(data_yaml: Path, batch_size: int = 2):
    """The val batches as the model takes them (``Batch.to``: float pixels)."""
    return [batch.to("cpu") for batch in build_dataloader(load_dataset_config(data_yaml), "val", IMGSZ,
                                                          batch_size, workers=0)]


def _executor(**options) -> ValidationExecutor:
    return ValidationExecutor(show_progress=False, **options)


def _validate(model, data_yaml: Path, **options):
    """What the trainer and ``smartcash.val`` run: ``ValidationExecutor.run`` over the val loader."""
    return _executor(**options).run(model, _loader(data_yaml), "cpu")


def _label_targets(image_path: str) -> np.ndarray:
    """(M, 5) [class, x1, y1, x2, y2] source pixels, straight from the label file."""
    height, width = cv2.imread(image_path).shape[:2]
    label_path = Path(image_path).parent.parent / "labels" / f"{Path(image_path).stem}.txt"
    labels = _read_labels(label_path)
    cx, cy, w, h = (labels[:, i] * scale for i, scale in zip(range(1, 5), (width, height, width, height)))
    return np.stack((labels[:, 0], cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), axis=1)


def _independent_predictions(model, data_yaml: Path) -> tuple[list[torch.Tensor], list[np.ndarray], list[str]]:
    taxonomy = load_taxonomy()
    settings = ValidationSettings.defaults()
    processor = PredictionProcessor(taxonomy.num_classes, taxonomy.fine_to_main, settings.conf_threshold,
                                    settings.iou_threshold, settings.max_det)
    predictions, targets, paths = [], [], []
    with torch.no_grad():
        for batch in _loader(data_yaml):  # same batch size: conv results differ in the last bit across sizes
            decoded, _ = model(batch.images)
            predictions += processor.postprocess(decoded, batch.letterbox, batch.original_shapes).per_image()
            targets += [_label_targets(path) for path in batch.paths]
            paths += batch.paths
    return predictions, targets, paths


def test_results_do_not_depend_on_the_progress_interval(model, data_yaml) -> None:
    results = {interval: ValidationExecutor(progress_interval=interval).run(model, _loader(data_yaml), "cpu")
               for interval in (1, 10)}
    first, second = (results[i].to_dict() for i in (1, 10))
    for timing in ("seconds", "images_per_second"):
        first.pop(timing), second.pop(timing)
    assert first == second
    assert results[1].metrics.num_images == 5 and results[1].metrics.num_batches == 3
    assert results[1].metrics.fine.map50 > 0  # the test is not vacuous


def test_map_equals_the_calculator_on_the_same_predictions(model, data_yaml) -> None:
    taxonomy = load_taxonomy()
    result = _validate(model, data_yaml)
    predictions, targets, _ = _independent_predictions(model, data_yaml)
    calculator = ParallelMapCalculator(17, mode="coco", class_map=taxonomy.fine_to_main)
    calculator.update(predictions, targets)
    expected = calculator.compute()
    for mine, theirs in ((result.metrics.fine, expected), (result.metrics.main, expected.main)):
        assert mine.map50 == pytest.approx(theirs.map50, abs=1e-12)
        assert mine.map50_95 == pytest.approx(theirs.map50_95, abs=1e-12)
        np.testing.assert_allclose(mine.ap, theirs.ap, atol=1e-12)
        np.testing.assert_array_equal(mine.num_targets_per_class, theirs.num_targets_per_class)
    np.testing.assert_array_equal(result.metrics.images_per_class,
                                  [sum(c in t[:, 0] for t in targets) for c in range(17)])
    assert result.metrics_row()["metrics/mAP50"] == pytest.approx(expected.map50)
    assert result.fitness == pytest.approx(0.1 * expected.map50 + 0.9 * expected.map50_95)


def _ultralytics_box_metrics(model, data_yaml: Path):
    """ultralytics' matching and DetMetrics on the detections of ``_independent_predictions``."""
    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils.metrics import DetMetrics, box_iou

    predictions, targets, paths = _independent_predictions(model, data_yaml)
    matcher = SimpleNamespace(iouv=torch.linspace(0.5, 0.95, 10))
    metrics = DetMetrics(names=dict(enumerate(load_taxonomy().names)))
    for prediction, target, path in zip(predictions, targets, paths):
        target = torch.from_numpy(target).float()
        if len(prediction) and len(target):
            iou = box_iou(target[:, 1:], prediction[:, :4])
            correct = BaseValidator.match_predictions(matcher, prediction[:, 5], target[:, 0], iou).numpy()
        else:
            correct = np.zeros((len(prediction), 10), dtype=bool)
        metrics.update_stats({"tp": correct, "conf": prediction[:, 4].numpy(), "pred_cls": prediction[:, 5].numpy(),
                              "target_cls": target[:, 0].numpy(), "target_img": np.unique(target[:, 0].numpy()),
                              "im_name": Path(path).name})
    metrics.process()
    return metrics.box


def test_yolo_mode_equals_ultralytics_metrics(model, data_yaml) -> None:
    result = _validate(model, data_yaml, mode="yolo")
    box = _ultralytics_box_metrics(model, data_yaml)
    assert result.metrics.fine.map50 == pytest.approx(box.map50, abs=1e-9)
    assert result.metrics.fine.map50_95 == pytest.approx(box.map, abs=1e-9)
    assert result.metrics.fine.mean_precision == pytest.approx(box.mp, abs=1e-9)
    assert result.metrics.fine.mean_recall == pytest.approx(box.mr, abs=1e-9)


def test_losses_are_the_training_loss_averaged_over_images(model, data_yaml) -> None:
    result = _validate(model, data_yaml)
    loss = YoloLoss(model, load_loss_config())
    total, images = torch.zeros(3), 0
    with torch.no_grad():
        for batch in _loader(data_yaml):
            _, raw = model(batch.images)
            parts = loss(raw, batch.targets)
            total += torch.stack((parts.box, parts.obj, parts.cls)) * len(batch.images)
            images += len(batch.images)
    expected = (total / images).tolist()
    assert [result.metrics.box_loss, result.metrics.obj_loss, result.metrics.cls_loss] == pytest.approx(expected, rel=1e-5)
    assert not model.training  # the executor restores the mode it found


def test_fitness_weights_come_from_the_settings(model, data_yaml) -> None:
    settings = ValidationSettings.from_values({**_default_values(), "fitness_map50": 1.0, "fitness_map50_95": 0.0})
    result = _validate(model, data_yaml, settings=settings)
    assert result.fitness == pytest.approx(result.metrics.fine.map50) and result.metrics.fine.map50 > 0


def test_result_serialises_and_row_has_the_trainer_keys(model, data_yaml) -> None:
    result = _validate(model, data_yaml)
    assert set(result.metrics_row()) == {
        "val/box_loss", "val/obj_loss", "val/cls_loss", "metrics/precision", "metrics/recall", "metrics/mAP50",
        "metrics/mAP50-95", "metrics/main_mAP50", "metrics/main_mAP50-95", "metrics/denomination_accuracy"}
    data = json.loads(json.dumps(result.to_dict()))
    assert data["classification"]["class_names"][-1] == "none"
    assert len(data["classification"]["confusion_matrix"]) == 8


def test_val_cli_end_to_end(model, data_yaml, tmp_path) -> None:
    from smartcash import val

    taxonomy = load_taxonomy()
    weights = tmp_path / "run" / "weights" / "best.pt"
    weights.parent.mkdir(parents=True)
    torch.save({"model_name": "yolov5n", "num_classes": 17, "anchors": model.detect.anchors.clone(),
                "model": model.state_dict(), "ema": model.state_dict(),
                "config": {"model": "yolov5n", "imgsz": IMGSZ}, "taxonomy": taxonomy.to_dict()}, weights)
    output = tmp_path / "result.json"
    code = val.main(["--weights", str(weights), "--data", str(data_yaml), "--batch", "2", "--device", "cpu",
                     "--workers", "0", "--json", str(output), "--mode", "yolo"])
    assert code == 0
    saved = json.loads(output.read_text())
    # Independent of the executor: ultralytics' matching and AP over the labels read from the files.
    box = _ultralytics_box_metrics(model, data_yaml)
    assert box.map50 > 0  # not vacuous
    assert saved["metrics"]["metrics/mAP50"] == pytest.approx(box.map50, abs=1e-9)
    assert saved["metrics"]["metrics/mAP50-95"] == pytest.approx(box.map, abs=1e-9)
    assert saved["num_images"] == 5
    for name in ("PR_curve.png", "PR_curve_main.png", "confusion_matrix.png"):
        assert (tmp_path / "run" / "val_val" / name).stat().st_size > 0


def test_val_cli_precise_bn_re_estimates_statistics_first(model, data_yaml, tmp_path, capsys) -> None:
    from smartcash import val
    from smartcash.data.dataset import YoloDataset
    from smartcash.data.dataset_config import load_dataset_config
    from smartcash.model.training.precise_bn import PreciseBatchNorm

    taxonomy = load_taxonomy()
    weights = tmp_path / "best.pt"
    torch.save({"model_name": "yolov5n", "num_classes": 17, "anchors": model.detect.anchors.clone(),
                "model": model.state_dict(), "ema": model.state_dict(),
                "config": {"model": "yolov5n", "imgsz": IMGSZ, "seed": 0}, "taxonomy": taxonomy.to_dict()}, weights)
    output = tmp_path / "result.json"
    assert val.main(["--weights", str(weights), "--data", str(data_yaml), "--batch", "2", "--device", "cpu",
                     "--workers", "0", "--json", str(output), "--precise-bn", "3", "--no-plots"]) == 0
    assert "re-estimated on 3 training images" in capsys.readouterr().out
    # The same numbers as re-estimating by hand, then evaluating.
    reference = copy.deepcopy(model)
    dataset = YoloDataset(load_dataset_config(data_yaml), "train", IMGSZ, augment=False)
    PreciseBatchNorm(dataset, 3, seed=0, batch_size=2)(reference, torch.device("cpu"))
    expected = _validate(reference.eval(), data_yaml)
    saved = json.loads(output.read_text())["metrics"]
    assert saved["metrics/mAP50-95"] == pytest.approx(expected.metrics.fine.map50_95)
    plain = _validate(model, data_yaml)
    assert saved["metrics/mAP50-95"] != pytest.approx(plain.metrics.fine.map50_95)  # the statistics did change


def _save_checkpoint(model, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_name": "yolov5n", "num_classes": 17, "anchors": model.detect.anchors.clone(),
                "model": model.state_dict(), "ema": model.state_dict(),
                "config": {"model": "yolov5n", "imgsz": IMGSZ}, "taxonomy": load_taxonomy().to_dict()}, path)
    return path


@pytest.mark.parametrize(("content", "problem"), [(b"notes: not weights\n", "its first bytes are b'notes: n'"),
                                                  (b"", "an empty file")], ids=["text", "empty"])
def test_val_cli_unreadable_weights_exit_1_missing_weights_exit_2(content, problem, data_yaml, tmp_path,
                                                                  capsys) -> None:
    """README's exit codes: an unreadable weights file is a failed run (1, as training), a missing one bad usage (2)."""
    from smartcash import val

    flags = ["--data", str(data_yaml), "--device", "cpu", "--workers", "0", "--no-plots"]
    weights = tmp_path / "notes.txt"
    weights.write_bytes(content)
    assert val.main(["--weights", str(weights), *flags]) == 1
    error = capsys.readouterr().err
    assert error == (f"error: --weights {weights}: not a weights file ({problem}; expected a checkpoint (.pt) "
                     "written by smartcash.train)\n")
    assert val.main(["--weights", str(tmp_path / "missing.pt"), *flags]) == 2
    assert "missing.pt: no such file" in capsys.readouterr().err


def test_val_cli_reports_the_imgsz_it_used(model, data_yaml, tmp_path, capsys, caplog) -> None:
    from smartcash import val

    weights = _save_checkpoint(model, tmp_path / "best.pt")
    assert val.main(["--weights", str(weights), "--data", str(data_yaml), "--batch", "2", "--device", "cpu",
                     "--workers", "0", "--imgsz", "70", "--no-plots"]) == 0
    assert "imgsz 70 is not a multiple of 32: using 96" in caplog.text
    summary = next(line for line in capsys.readouterr().out.splitlines() if "[val]:" in line)
    assert "imgsz 96," in summary, summary


def test_val_cli_name_must_be_a_plain_folder_name(model, data_yaml, tmp_path, capsys) -> None:
    """--name is a folder under PROJECT/val: one that climbs out of it is refused, as training refuses it."""
    from smartcash import val

    weights = _save_checkpoint(model, tmp_path / "downloads" / "best.pt")  # outside a run: PROJECT/val/NAME
    project = tmp_path / "work" / "runs"
    assert val.main(["--weights", str(weights), "--data", str(data_yaml), "--batch", "2", "--device", "cpu",
                     "--workers", "0", "--project", str(project), "--name", "../../escape"]) == 2
    assert "--name '../../escape': must be a plain folder name" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["downloads"]  # nothing written anywhere


def test_progress_callback_reports_every_interval_and_the_last_batch(model, data_yaml) -> None:
    calls = []
    result = _executor(progress_interval=2).run(model, _loader(data_yaml), "cpu",
                                                progress_callback=lambda *args: calls.append(args))
    assert [(done, total) for done, total, _ in calls] == [(2, 3), (3, 3)]  # 5 images, batches of 2
    # The loss it reports is the one the result ends with (box + obj + cls per image).
    metrics = result.metrics
    assert calls[-1][2] == pytest.approx(metrics.box_loss + metrics.obj_loss + metrics.cls_loss, rel=1e-5)


def test_stop_request_returns_the_batches_done_as_partial(model, data_yaml) -> None:
    stop = threading.Event()
    stop.set()
    stopped = _executor(stop_check_interval=2).run(model, _loader(data_yaml), "cpu", stop=stop)
    assert stopped.partial and stopped.to_dict()["partial"] is True
    assert stopped.metrics.num_batches == 2 and stopped.metrics.num_images == 4
    # The same four images validated alone give the same numbers: a stop drops images, never mixes them.
    four = build_dataloader(load_dataset_config(data_yaml), "val", IMGSZ, 2, workers=0)
    first_four = [batch for _, batch in zip(range(2), four, strict=False)]
    alone = _executor().run(model, first_four, "cpu")
    assert stopped.metrics.fine.map50_95 == alone.metrics.fine.map50_95
    assert not _executor().run(model, _loader(data_yaml), "cpu", stop=lambda: False).partial
    # Asked only between batches, never after the last: a request at the end keeps the full result.
    assert not _executor(stop_check_interval=3).run(model, _loader(data_yaml), "cpu", stop=stop).partial
