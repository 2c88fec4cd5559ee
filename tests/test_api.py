"""The Python API: keywords are the commands' flags (the same parser), unknown keywords are a
TypeError, ``import smartcash`` stays light, and the README's example runs as written.

References: the training's own results.csv (validate of its best.pt gives the mAP it recorded),
the predict command's predictions.json, onnx's checker, and the README text itself.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import smartcash
from smartcash.cli import UsageError, argv_from_keywords
from smartcash.config import build_parser
from smartcash.data.synthetic import ensure_synthetic_dataset
from smartcash.model.training.records import read_results

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(TrainResult, data.yaml) of a 1-epoch run through ``smartcash.train(...)``."""
    from smartcash import train

    root = tmp_path_factory.mktemp("api")
    data = ensure_synthetic_dataset(root=root / "data", num_train=8, num_val=4, imgsz=64)
    (root / "tiny.yaml").write_text("plots: false\nwarmup_epochs: 0.5\nprecise_bn_images: 8\n")
    result = train(phase=1, data=data, imgsz=64, batch=4, workers=0, device="cpu", epochs=1,
                   project=root / "runs", name="api", config=root / "tiny.yaml")
    return result, data


def test_keywords_become_the_commands_flags() -> None:
    parser = build_parser()
    argv = argv_from_keywords(parser, {"phase": 2, "data": Path("d.yaml"), "precise_bn": 64, "resume": True,
                                       "tensorboard": False, "mlflow": True, "weights": None}, "train")
    assert argv == ["--phase=2", "--data=d.yaml", "--precise-bn=64", "--resume", "--no-tensorboard", "--mlflow"]
    parsed = parser.parse_args(argv)
    assert (parsed.precise_bn_images, parsed.resume, parsed.tensorboard, parsed.mlflow) == (64, True, False, True)
    assert argv_from_keywords(parser, {"resume": False}, "train") == []  # a plain switch left off
    # a value that starts with a dash stays the flag's value, not another flag
    assert parser.parse_args(argv_from_keywords(parser, {"name": "-x"}, "train")).name == "-x"


def test_unknown_or_bad_keywords() -> None:
    from smartcash import export, predict, train, validate

    with pytest.raises(TypeError, match=r"train\(\) got unexpected keyword argument\(s\) 'epoch'; valid keywords.*"
                                        r"\bepochs\b"):
        train(epoch=3)
    with pytest.raises(TypeError, match=r"validate\(\) got unexpected.*'plots'.*no_plots"):
        validate(weights="x.pt", plots=False)
    with pytest.raises(TypeError, match=r"takes True or False"):
        train(resume="yes")
    with pytest.raises(TypeError, match=r"predict\(\): save_dir takes a value, not True"):
        predict(weights="x.pt", source="images", save_dir=True)  # was: a folder named "True"
    with pytest.raises(UsageError, match=r"predict\(\): .*required: --weights, --source"):
        predict()
    with pytest.raises(UsageError, match=r"export\(\): .*invalid choice: 'tflite'"):
        export(weights="x.pt", format="tflite")
    with pytest.raises(UsageError, match=r"train\(\): .*--epochs: invalid int value: 'many'"):
        train(epochs="many")


def test_import_stays_light() -> None:
    code = ("import sys, smartcash; from smartcash import __version__; "
            "heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'ultralytics', 'cv2', 'albumentations', 'matplotlib', 'mlflow', 'tensorboard', 'numpy')]; "
            "print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.stdout.strip() == "[]"
    assert set(smartcash.__all__) == {"__version__", "train", "validate", "predict", "export"}


def test_train_module_is_the_function_and_the_command() -> None:
    import smartcash.train as train_module
    from smartcash import train

    assert train is train_module and callable(train) and callable(train.main)


def test_train_returns_the_result_and_validate_reproduces_it(trained, tmp_path) -> None:
    from smartcash import validate

    result, data = trained
    assert result.best_weights.is_file() and result.epochs_completed == 1 and result.best_epoch == 0
    (row,) = read_results(result.run_dir / "results.csv")
    assert result.metrics["metrics/mAP50-95"] == pytest.approx(float(row["metrics/mAP50-95"]), rel=1e-5)
    measured = validate(weights=result.best_weights, data=data, device="cpu", workers=0, batch=3,
                        json=tmp_path / "val.json", no_plots=True)
    # The best.pt weights and BatchNorm statistics are those the training validated.
    assert measured.metrics.fine.map50 == pytest.approx(float(row["metrics/mAP50"]), rel=1e-4, abs=1e-6)
    assert measured.metrics.main.map50_95 == pytest.approx(float(row["metrics/main_mAP50-95"]), rel=1e-4, abs=1e-6)
    assert json.loads((tmp_path / "val.json").read_text())["metrics"]["metrics/mAP50"] == \
        pytest.approx(measured.metrics.fine.map50)


def test_predict_and_export(trained, tmp_path) -> None:
    from smartcash import export, predict

    result, data = trained
    source = Path(data).parent / "images" / "val"
    answers = predict(weights=result.best_weights, source=source, save_dir=tmp_path / "out", device="cpu",
                      conf=0.001)
    written = json.loads((tmp_path / "out" / "predictions.json").read_text())["images"]
    assert [answer.to_dict() for answer in answers] == written and len(answers) == 4
    assert any(answer.detections for answer in answers)
    for answer in answers:
        for detection in answer.detections:
            assert detection.main_id == [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 7, 7, 7][detection.class_id]
    import onnx

    path = export(weights=result.best_weights, output=tmp_path / "model.onnx")
    assert path == tmp_path / "model.onnx"
    onnx.checker.check_model(onnx.load(str(path)))


def _readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- api-example -->\s*```python\n(.*?)```\s*<!-- /api-example -->", text, re.S)
    assert match, "README.md: no python block between the api-example markers"
    return match.group(1)


def test_readme_example_runs(tmp_path, monkeypatch, capsys) -> None:
    import torch

    import smartcash.config

    monkeypatch.chdir(tmp_path)  # its runs/ go here
    # One torch thread, as the README advises on a shared machine: two OpenMP threads that wait on
    # another job's cores make this 10x slower; the example itself is run as written.
    monkeypatch.setattr(smartcash.config, "default_threads", lambda: 1)
    threads = torch.get_num_threads()
    try:
        exec(compile(_readme_example(), "README.md (api-example)", "exec"), {"__name__": "readme_example"})
    finally:
        torch.set_num_threads(threads)  # training set it for the whole process
    printed = capsys.readouterr().out
    assert (tmp_path / "runs/train/notebook/phase1/weights/best.pt").is_file()
    assert (tmp_path / "runs/train/notebook/phase1/weights/best.onnx").is_file()
    assert printed.count("\n") >= 4
