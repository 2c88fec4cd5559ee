"""``val``, ``predict`` and ``export`` under misuse (issue 13): flag values ``train`` would refuse, an
output that is an input, a folder or read-only, class names that differ from the checkpoint's, a
dataset that moved, Ctrl-C. Each: one ``error:`` line, exit 2 bad usage / 1 failed run / 130 Ctrl-C,
and no input file changed. The checkpoint is an untrained yolov5n made in a second."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from smartcash.export import main as export_main
from smartcash.inference import Predictor
from smartcash.model.training.core.validation_executor import ValidationExecutor
from smartcash.predict import main as predict_main
from smartcash.val import main as val_main

from .conftest import copy_dataset, make_checkpoint, one_error_line, sha256, tree_digest


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.fixture()
def weights(checkpoint, tmp_path) -> Path:
    """This test's own copy: a test that damages it cannot break the others."""
    path = tmp_path / "weights" / "best.pt"
    path.parent.mkdir()
    shutil.copyfile(checkpoint, path)
    return path


# ------------------------------------------------------------------------- export

def test_export_never_writes_over_its_input_or_a_checkpoint(weights, tmp_path, capsys) -> None:
    pytest.importorskip("onnx")
    before = sha256(weights)
    assert export_main(["--weights", str(weights), "--output", str(weights)]) == 2
    assert "is the input" in one_error_line(capsys.readouterr().err)
    other = make_checkpoint(tmp_path / "other.onnx")  # a checkpoint, whatever its name
    other_before = sha256(other)
    assert export_main(["--weights", str(weights), "--output", str(other)]) == 2
    assert "is a checkpoint" in one_error_line(capsys.readouterr().err)
    assert sha256(weights) == before and sha256(other) == other_before


@pytest.mark.parametrize(("flags", "message"), [
    (["--output", "{tmp}"], "is a folder"),
    (["--output", "{tmp}/locked/x.onnx"], "read-only"),
    (["--opset", "99"], "--opset 99: this torch exports opsets"),
    (["--opset", "3"], "--opset 3: this torch exports opsets"),
    (["--imgsz", "0"], "--imgsz 0: must be in [32, 4096]"),
])
def test_export_flag_values(flags, message, weights, tmp_path, capsys) -> None:
    pytest.importorskip("onnx")
    (tmp_path / "locked").mkdir(mode=0o555)
    flags = [flag.replace("{tmp}", str(tmp_path)) for flag in flags]
    output = [] if "--output" in flags else ["--output", str(tmp_path / "x.onnx")]
    assert export_main(["--weights", str(weights), *output, *flags]) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "x.onnx").exists()


def _files_no_output_may_replace(good_data: Path, tmp_path: Path) -> dict[str, Path]:
    """A private dataset's yaml, one label, one image, and a SmartCash registry: name -> path."""
    data = copy_dataset(good_data, tmp_path / "dataset")
    registry = tmp_path / "runs" / "registry.json"
    registry.parent.mkdir()
    registry.write_text(json.dumps({"version": 1, "runs": {}}))
    return {"data.yaml": data, "label": next(data.parent.rglob("labels/**/*.txt")),
            "image": next(path for path in data.parent.rglob("images/**/*") if path.suffix == ".jpg"),
            "registry": registry}


@pytest.mark.parametrize("command", ["export", "val"])
@pytest.mark.parametrize(("target", "message"), [
    ("data.yaml", "is a dataset file"), ("label", "is a dataset file"), ("image", "is a dataset file"),
    ("registry", "is a model registry"), ("wrong suffix", "must end in"),
])
def test_no_output_writes_over_a_dataset_or_registry(command, target, message, weights, good_data, tmp_path,
                                                    capsys) -> None:
    files = _files_no_output_may_replace(good_data, tmp_path)
    wrong = tmp_path / ("new.txt" if command == "export" else "result.csv")
    output = files.get(target, wrong)
    before = tree_digest(tmp_path)
    if command == "export":
        code = export_main(["--weights", str(weights), "--output", str(output)])
    else:
        code = val_main(["--weights", str(weights), "--data", str(good_data), "--device", "cpu", "--json", str(output)])
    assert code == 2
    error = one_error_line(capsys.readouterr().err)
    assert message in error and (target != "wrong suffix" or (".onnx" if command == "export" else ".json") in error)
    assert tree_digest(tmp_path) == before and not wrong.exists()


# ------------------------------------------------------------------------- val

@pytest.mark.parametrize(("flags", "message"), [
    (["--batch", "0"], "--batch 0: must be >= 1"),
    (["--workers", "-1"], "--workers -1: must be >= 0"),
    (["--imgsz", "16"], "--imgsz 16: must be in [32, 4096]"),
    (["--conf", "1.5"], "--conf 1.5: must be in [0, 1)"),
    (["--iou", "0"], "--iou 0.0: must be in (0, 1]"),
    (["--precise-bn", "-2"], "--precise-bn -2: must be >= 0"),
    (["--progress-interval", "0"], "--progress-interval 0: must be >= 1"),
    (["--json", "{tmp}"], "is a folder"),
    (["--json", "{tmp}/locked/result.json"], "read-only"),
    (["--json", "{weights}"], "is the input"),
])
def test_val_flag_values(flags, message, weights, good_data, tmp_path, capsys) -> None:
    (tmp_path / "locked").mkdir(mode=0o555)
    flags = [flag.replace("{tmp}", str(tmp_path)).replace("{weights}", str(weights)) for flag in flags]
    before = sha256(weights)
    assert val_main(["--weights", str(weights), "--data", str(good_data), "--device", "cpu", *flags]) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert sha256(weights) == before


def _renamed(data: Path, destination: Path, names: list[str]) -> Path:
    copy = copy_dataset(data, destination)
    config = yaml.safe_load(copy.read_text())
    copy.write_text(yaml.safe_dump({**config, "names": names, "nc": len(names)}))
    return copy


def test_val_with_other_class_names_is_refused(weights, good_data, tmp_path, capsys) -> None:
    names = [f"thing{index}" for index in range(17)]  # 17 classes, but not the checkpoint's
    data = _renamed(good_data, tmp_path / "ds", names)
    assert val_main(["--weights", str(weights), "--data", str(data), "--device", "cpu", "--no-plots"]) == 2
    error = one_error_line(capsys.readouterr().err)
    assert "its classes ['thing0'" in error and f"are not the classes {weights} was trained on" in error


def test_val_maps_reordered_names_onto_the_checkpoint(good_data, tmp_path, capsys) -> None:
    """A checkpoint with its own names, a dataset listing them in another order: the boxes are
    counted under the checkpoint's class of the same NAME, not of the same position."""
    own = [f"note{index}" for index in range(17)]
    weights = make_checkpoint(tmp_path / "own.pt", names=own)
    data = _renamed(good_data, tmp_path / "ds", own[::-1])
    labels = (data.parent / "labels/val").glob("*.txt")
    dataset_ids = [int(line.split()[0]) for path in labels for line in path.read_text().splitlines()]
    expected = [0] * 17
    for dataset_id in dataset_ids:
        expected[16 - dataset_id] += 1  # dataset id i is the checkpoint's class 16 - i
    result = tmp_path / "result.json"
    assert val_main(["--weights", str(weights), "--data", str(data), "--device", "cpu", "--no-plots",
                     "--json", str(result), "--workers", "0", "--imgsz", "64"]) == 0
    assert json.loads(result.read_text())["fine"]["num_targets_per_class"] == expected


def test_val_without_data_after_the_training_data_moved(tmp_path, capsys) -> None:
    moved = tmp_path / "gone/data.yaml"
    weights = make_checkpoint(tmp_path / "best.pt", data=moved)
    assert val_main(["--weights", str(weights), "--device", "cpu"]) == 2
    error = one_error_line(capsys.readouterr().err)
    assert f"was trained on {moved}, which no longer exists; pass --data" in error


def test_val_ctrl_c_exits_130_quietly(weights, good_data, tmp_path, capsys, monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ValidationExecutor, "run", interrupted)
    result = tmp_path / "result.json"
    assert val_main(["--weights", str(weights), "--data", str(good_data), "--device", "cpu", "--workers", "0",
                     "--json", str(result)]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted: ")
    assert not result.exists()


# ------------------------------------------------------------------------- predict

@pytest.fixture()
def source(good_data, tmp_path) -> Path:
    folder = tmp_path / "source"
    folder.mkdir()
    for image in sorted((good_data.parent / "images/val").iterdir())[:3]:
        (folder / image.name).write_bytes(image.read_bytes())
    return folder


@pytest.mark.parametrize(("flags", "message"), [
    (["--batch", "0"], "--batch 0: must be >= 1"),
    (["--conf", "-0.1"], "--conf -0.1: must be in [0, 1)"),
    (["--iou", "1.5"], "--iou 1.5: must be in (0, 1]"),
    (["--imgsz", "8"], "--imgsz 8: must be in [32, 4096]"),
    (["--save-dir", "{tmp}/file.txt"], "is a file; give a folder"),
    (["--save-dir", "{tmp}/locked/out"], "read-only"),
    (["--save-dir", "{tmp}/mine"], "holds other files"),
])
def test_predict_flag_values(flags, message, weights, source, tmp_path, capsys) -> None:
    (tmp_path / "locked").mkdir(mode=0o555)
    (tmp_path / "file.txt").write_text("mine\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/photo.jpg").write_bytes(b"not to be replaced")
    flags = [flag.replace("{tmp}", str(tmp_path)) for flag in flags]
    before = tree_digest(tmp_path)
    assert predict_main(["--weights", str(weights), "--source", str(source), "--device", "cpu", *flags]) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert tree_digest(tmp_path) == before


def test_predict_save_dir_inside_source_never_predicts_its_own_drawings(weights, source, capsys) -> None:
    flags = ["--weights", str(weights), "--source", str(source), "--device", "cpu", "--imgsz", "64"]
    for run in ("out1", "out2"):
        assert predict_main([*flags, "--save-dir", str(source / run)]) == 0
        predicted = [Path(item["path"]).name for item in
                     json.loads((source / run / "predictions.json").read_text())["images"]]
        assert len(predicted) == 3, run  # the 3 originals, never the first run's drawn copies
    assert predict_main([*flags, "--save-dir", str(source / "out1")]) == 0  # an earlier output: reused
    assert len(json.loads((source / "out1/predictions.json").read_text())["images"]) == 3


def test_predict_ctrl_c_writes_what_is_done_then_exits_130(weights, source, tmp_path, capsys, monkeypatch) -> None:
    original = Predictor.predict
    calls = {"count": 0}

    def predict_then_interrupt(self, images, paths):
        calls["count"] += 1
        if calls["count"] == 2:
            raise KeyboardInterrupt
        return original(self, images, paths)

    monkeypatch.setattr(Predictor, "predict", predict_then_interrupt)
    out = tmp_path / "out"
    assert predict_main(["--weights", str(weights), "--source", str(source), "--device", "cpu", "--batch", "1",
                         "--imgsz", "64", "--save-dir", str(out)]) == 130
    assert "Traceback" not in capsys.readouterr().err
    assert len(json.loads((out / "predictions.json").read_text())["images"]) == 1
    assert (out / "predictions.csv").is_file()


def test_an_input_size_past_the_largest_is_bad_usage(weights, good_data, tmp_path, capsys) -> None:
    # --imgsz 1000000 used to try to allocate terabytes (a cv2 traceback, or all the memory)
    assert val_main(["--weights", str(weights), "--data", str(good_data), "--imgsz", "1000000"]) == 2
    assert "--imgsz 1000000: must be in [32, 4096]" in one_error_line(capsys.readouterr().err)
    assert export_main(["--weights", str(weights), "--output", str(tmp_path / "x.onnx"), "--imgsz", "8192"]) == 2
    assert "must be in [32, 4096]" in one_error_line(capsys.readouterr().err)


def test_val_reports_a_broken_dataset_as_training_does(weights, good_data, tmp_path, capsys) -> None:
    """val exited 2 (bad usage) where train exits 1 (bad data) for the same dataset yaml; a --data file
    that is not there stays a wrong input (2)."""
    data = copy_dataset(good_data, tmp_path / "ds")
    config = yaml.safe_load(data.read_text())
    flags = ["--weights", str(weights), "--device", "cpu", "--no-plots", "--workers", "0"]
    missing_split = data.with_name("missing_split.yaml")
    missing_split.write_text(yaml.safe_dump({**config, "val": "images/nowhere"}))
    empty = data.parent / "empty"
    empty.mkdir()
    no_images = data.with_name("no_images.yaml")
    no_images.write_text(yaml.safe_dump({**config, "val": "empty"}))
    for yaml_file, reason in ((missing_split, "val split not found"), (no_images, "val split has no usable images")):
        assert val_main([*flags, "--data", str(yaml_file)]) == 1
        assert reason in one_error_line(capsys.readouterr().err)
    assert val_main([*flags, "--data", str(tmp_path / "nowhere.yaml")]) == 2
    assert one_error_line(capsys.readouterr().err) == f"error: --data {tmp_path / 'nowhere.yaml'}: no such file"
