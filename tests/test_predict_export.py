"""``smartcash.predict`` and ``smartcash.export`` end to end on one tiny trained checkpoint (CPU).

References: the validation path (dataset letterbox + model + PredictionProcessor) for predict's
boxes, the denomination/feature rule recomputed by hand from the written detections, and PyTorch
for onnxruntime's output.
"""

import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from smartcash.data.dataset_config import load_dataset_config
from smartcash.data.loader import build_dataloader
from smartcash.data.synthetic import ensure_synthetic_dataset
from smartcash.export import main as export_main
from smartcash.model.build import build_model
from smartcash.model.training.core.prediction_processor import PredictionProcessor
from smartcash.predict import CSV_COLUMNS
from smartcash.predict import main as predict_main
from smartcash.taxonomy import Taxonomy
from smartcash.train import main as train_main

IMGSZ = 64
# Source sizes (width, height) of the good test images: letterboxing pads x or y.
GOOD_SIZES = ((96, 64), (64, 80), (64, 64))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """phase 1 best.pt after one epoch, with the EMA head re-drawn (seeded) so that the nearly
    untrained model gives many detections with well-spread scores. ``model`` keeps the trained
    head: predictions made from it instead of the EMA weights would not match."""
    root = tmp_path_factory.mktemp("train")
    data_yaml = ensure_synthetic_dataset(root=root / "synthetic", num_train=8, num_val=4, imgsz=IMGSZ)
    # precise_bn_images 0: statistics from 8 images of 64 px scale some channels up ~30x, and under
    # the re-drawn std-1 head the logits then grow until float32 summation order alone moves
    # scores by ~1e-3; the 1e-4 export checks below are about the graph, not such magnitudes.
    (root / "tiny.yaml").write_text("plots: false\nwarmup_epochs: 0.5\nprecise_bn_images: 0\n")
    assert train_main(["--data", str(data_yaml), "--imgsz", str(IMGSZ), "--batch", "4", "--workers", "0",
                       "--device", "cpu", "--epochs", "1", "--project", str(root / "runs"), "--name", "tiny",
                       "--config", str(root / "tiny.yaml")]) == 0
    state = torch.load(root / "runs/train/tiny/phase1/weights/best.pt", map_location="cpu", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    for key, value in state["ema"].items():
        if key.startswith("detect.convs."):
            state["ema"][key] = torch.randn(value.shape, generator=generator) * (1.0 if key.endswith("weight") else 0.3)
    path = root / "tiny.pt"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def images(checkpoint, tmp_path_factory) -> Path:
    """Good non-square images (from the synthetic val split), a corrupt JPEG, a 0-byte PNG, a text file."""
    source = sorted((checkpoint.parent / "synthetic").rglob("images/val/*.jpg"))
    folder = tmp_path_factory.mktemp("images")
    for index, (width, height) in enumerate(GOOD_SIZES):
        image = cv2.resize(cv2.imread(str(source[index])), (width, height), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"good_{index}.png"), image)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG" * 10)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image\n")
    return folder


def _predict(checkpoint: Path, source: Path, save_dir: Path, *flags: str) -> int:
    return predict_main(["--weights", str(checkpoint), "--source", str(source), "--save-dir", str(save_dir),
                         "--device", "cpu", *flags])


def test_predict_folder_skips_bad_images_and_writes_results(checkpoint, images, tmp_path, capsys) -> None:
    assert _predict(checkpoint, images, tmp_path / "out", "--batch", "2") == 0
    errors = capsys.readouterr().err
    skipped_lines = [line for line in errors.splitlines() if line.startswith("skipped ")]
    assert any("corrupt.jpg" in line and "unreadable image" in line for line in skipped_lines), errors
    assert any("empty.png" in line and "0-byte image" in line for line in skipped_lines), errors
    assert len(skipped_lines) == 2 and "notes.txt" not in errors

    document = json.loads((tmp_path / "out/predictions.json").read_text())
    assert {Path(entry["path"]).name for entry in document["skipped"]} == {"corrupt.jpg", "empty.png"}
    by_name = {Path(entry["path"]).name: entry for entry in document["images"]}
    assert sorted(by_name) == ["good_0.png", "good_1.png", "good_2.png"]
    taxonomy = Taxonomy.from_dict(torch.load(checkpoint, weights_only=True)["taxonomy"])
    for index, (width, height) in enumerate(GOOD_SIZES):
        entry = by_name[f"good_{index}.png"]
        assert (entry["width"], entry["height"]) == (width, height)
        assert entry["detections"], "the test model should detect something in every image"
        for detection in entry["detections"]:
            x1, y1, x2, y2 = detection["box"]
            assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
            assert detection["score"] >= 0.25
            assert detection["class_name"] == taxonomy.names[detection["class_id"]]
            assert detection["main_id"] == taxonomy.fine_to_main[detection["class_id"]]
            assert detection["main_name"] == taxonomy.main_names[detection["main_id"]]
        # The documented rule, recomputed: the main class of layers 1-2 with the highest summed score.
        sums: dict[int, float] = {}
        for detection in entry["detections"]:
            if taxonomy.layers[detection["class_id"]] in (1, 2):
                sums[detection["main_id"]] = sums.get(detection["main_id"], 0.0) + detection["score"]
        expected = max(sums, key=lambda main_id: (sums[main_id], -main_id)) if sums else None
        assert entry["denomination_id"] == expected
        assert entry["denomination"] == (taxonomy.main_names[expected] if sums else None)
        features = {d["class_name"] for d in entry["detections"] if taxonomy.layers[d["class_id"]] == 3}
        assert set(entry["features"]) == features
        drawn = cv2.imread(str(tmp_path / "out" / f"good_{index}.png"))
        assert drawn is not None and drawn.shape == (height, width, 3)

    with open(tmp_path / "out/predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == sum(len(entry["detections"]) for entry in document["images"])
    first = by_name["good_0.png"]["detections"][0]
    row = next(row for row in rows if row["image"].endswith("good_0.png"))
    assert float(row["x1"]) == pytest.approx(first["box"][0], abs=0.01)
    assert (int(row["class_id"]), row["main_name"]) == (first["class_id"], first["main_name"])


def test_predict_matches_prediction_processor(checkpoint, images, tmp_path) -> None:
    """Predict's boxes == the validation path's (dataset letterbox, EMA model, PredictionProcessor)."""
    good = tmp_path / "good"
    good.mkdir()
    for path in images.glob("good_*.png"):
        (good / path.name).write_bytes(path.read_bytes())
    names = Taxonomy.from_dict(torch.load(checkpoint, weights_only=True)["taxonomy"]).names
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"train": "good", "val": "good", "names": list(names)}))
    assert _predict(checkpoint, good, tmp_path / "out", "--batch", "4", "--conf", "0.3", "--iou", "0.5") == 0
    predicted = {Path(entry["path"]).name: entry["detections"]
                 for entry in json.loads((tmp_path / "out/predictions.json").read_text())["images"]}

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    taxonomy = Taxonomy.from_dict(state["taxonomy"])
    model = build_model(state["model_name"], state["num_classes"], anchors=state["anchors"])
    model.load_state_dict(state["ema"])
    processor = PredictionProcessor(17, taxonomy.fine_to_main, conf_threshold=0.3, iou_threshold=0.5,
                                    max_det=300, multi_label=False)
    loader = build_dataloader(load_dataset_config(tmp_path / "data.yaml"), "val", IMGSZ, 4, workers=0)
    compared = 0
    with torch.no_grad():
        for batch in loader:
            batch = batch.to("cpu")
            detections = processor.postprocess(model.eval()(batch.images)[0], batch.letterbox, batch.original_shapes)
            for path, reference in zip(batch.paths, detections.per_image()):
                rows = predicted[Path(path).name]
                ours = torch.tensor([[*d["box"], d["score"], d["class_id"]] for d in rows]).reshape(-1, 6)
                assert ours.shape == reference.shape and len(ours) > 0
                # Row by row, up to the order of equal scores (the grey letterbox padding gives
                # identical predictions in several cells): every row has a twin within 1e-4.
                difference = (ours[:, None, :] - reference[None, :, :]).abs().amax(dim=2)  # (K, K)
                assert difference.min(dim=0).values.max() <= 1e-4
                assert difference.min(dim=1).values.max() <= 1e-4
                compared += 1
    assert compared == len(GOOD_SIZES)


def test_predict_exit_codes_and_numbered_save_dirs(checkpoint, images, tmp_path, capsys) -> None:
    missing = tmp_path / "missing.pt"
    assert predict_main(["--weights", str(missing), "--source", str(images)]) == 2
    assert str(missing) in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert predict_main(["--weights", str(checkpoint), "--source", str(empty)]) == 2
    assert f"{empty}: no images" in capsys.readouterr().err
    assert predict_main(["--weights", str(checkpoint), "--source", str(images), "--save-dir", str(images)]) == 2
    assert "would replace the originals" in capsys.readouterr().err

    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    for name in ("corrupt.jpg", "empty.png"):
        (only_bad / name).write_bytes((images / name).read_bytes())
    project = tmp_path / "runs"
    flags = ["--weights", str(checkpoint), "--source", str(only_bad), "--project", str(project), "--device", "cpu"]
    assert predict_main(flags) == 1
    assert predict_main(flags) == 1
    assert sorted(path.name for path in (project / "predict").iterdir()) == ["exp", "exp2"]
    assert json.loads((project / "predict/exp2/predictions.json").read_text())["images"] == []


def test_predict_unreadable_weights_exit_1(images, tmp_path, capsys) -> None:
    """README's exit codes: an unreadable weights file is a failed run (1, as training), a missing one bad usage (2)."""
    weights = tmp_path / "notes.txt"
    weights.write_text("notes: not weights\n")
    out = tmp_path / "out"
    assert _predict(weights, images, out) == 1
    assert capsys.readouterr().err == (f"error: --weights {weights}: not a weights file (its first bytes are "
                                       "b'notes: n'; expected a checkpoint (.pt) written by smartcash.train)\n")
    assert _predict(tmp_path / "missing.pt", images, out) == 2
    assert not out.exists()


def test_predict_name_must_be_a_plain_folder_name(checkpoint, images, tmp_path, capsys) -> None:
    """--name is a folder under PROJECT/predict: one that climbs out of it is refused, as training refuses it."""
    project = tmp_path / "work" / "runs"
    assert predict_main(["--weights", str(checkpoint), "--source", str(images / "good_0.png"), "--device", "cpu",
                         "--project", str(project), "--name", "../../escape"]) == 2
    assert "--name '../../escape': must be a plain folder name" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*"))  # nothing written, inside PROJECT or out of it
    assert predict_main(["--weights", str(checkpoint), "--source", str(images / "good_0.png"), "--device", "cpu",
                         "--project", str(project), "--name", "é" * 128]) == 2  # 256 bytes: Errno 36 mid-run
    assert "(128 characters)': must be a plain folder name (no '/', at most 255 bytes)" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*"))
    taken = project / "predict" / ("n" * 255)  # the longest name, taken: name2 would be 256 bytes
    taken.mkdir(parents=True)
    assert predict_main(["--weights", str(checkpoint), "--source", str(images / "good_0.png"), "--device", "cpu",
                         "--project", str(project), "--name", "n" * 255]) == 2
    assert "would be longer than a folder name may be (255 bytes); choose a shorter --name" in capsys.readouterr().err


def _reference(checkpoint: Path) -> torch.nn.Module:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = build_model(state["model_name"], state["num_classes"], anchors=state["anchors"])
    model.load_state_dict(state["ema"])
    return model.eval()


def test_export_onnx_matches_pytorch_with_dynamic_batch(checkpoint, tmp_path, capsys) -> None:
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    output = tmp_path / "tiny.onnx"
    assert export_main(["--weights", str(checkpoint), "--format", "onnx", "--output", str(output)]) == 0
    assert "max abs diff" in capsys.readouterr().out
    proto = onnx.load(str(output))
    onnx.checker.check_model(proto)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert json.loads({p.key: p.value for p in proto.metadata_props}["names"])[14] == "security_thread"

    model = _reference(checkpoint)
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(1)
    for batch_size in (1, 3):
        images = torch.rand(batch_size, 3, IMGSZ, IMGSZ, generator=generator)
        (onnx_output,) = session.run(None, {"images": images.numpy()})
        with torch.no_grad():
            torch_output = model(images)[0].numpy()  # (B, N, 5 + nc)
        assert onnx_output.shape == torch_output.shape == (batch_size, 3 * (8 * 8 + 4 * 4 + 2 * 2), 22)
        # Max abs diff 1e-4 on scores, and on boxes in units of the input size: in pixels a box
        # side is (2 sigmoid(t))^2 * anchor with anchors up to 373 px, which turns a 1e-6
        # difference in a logit (float32 accumulation order) into ~1e-3 px.
        assert np.abs(onnx_output[..., 4:] - torch_output[..., 4:]).max() <= 1e-4
        assert np.abs(onnx_output[..., :4] - torch_output[..., :4]).max() / IMGSZ <= 1e-4


def test_export_static_batch(checkpoint, tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    output = tmp_path / "static.onnx"
    assert export_main(["--weights", str(checkpoint), "--output", str(output), "--no-dynamic", "--imgsz", "96"]) == 0
    dims = onnx.load(str(output)).graph.input[0].type.tensor_type.shape.dim
    assert [dim.dim_value for dim in dims] == [1, 3, 96, 96]



def test_export_refuses_an_opset_too_old_for_the_model_before_exporting(checkpoint, tmp_path, capsys) -> None:
    """Opsets 7 and 8 cannot hold nearest upsampling: a usage error, not torch's graph dump."""
    output = tmp_path / "old.onnx"
    assert export_main(["--weights", str(checkpoint), "--output", str(output), "--opset", "8"]) == 2
    error = capsys.readouterr().err
    assert "--opset 8: the model's nearest upsampling needs opset 9 or newer" in error
    assert "graph" not in error and not output.exists()

def test_export_without_onnx_names_the_install_command(checkpoint, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    assert export_main(["--weights", str(checkpoint), "--output", str(tmp_path / "x.onnx")]) == 2
    error = capsys.readouterr().err
    assert "pip install onnx onnxruntime" in error
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("source, message", [
    ("", "--source is empty: give an image file or a folder"),
    ("   ", "--source is empty: give an image file or a folder"),
    ("https://example.com/note.jpg", "--source https://example.com/note.jpg: URLs are not supported (download the "
                                     "file first)"),
    ("clip.mp4", "--source clip.mp4: videos are not supported (extract frames first"),
    ("CLIP.MOV", "--source CLIP.MOV: videos are not supported (extract frames first"),
])
def test_predict_source_that_is_no_local_image_or_folder_exits_2(source, message, checkpoint, tmp_path,
                                                                 monkeypatch, capsys) -> None:
    """Path("") is the current folder and Path("https://x") is "https:/x": the text is checked as given."""
    monkeypatch.chdir(tmp_path)
    cv2.imwrite("photo.jpg", np.zeros((40, 40, 3), np.uint8))  # what an empty --source would have predicted
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    before = sorted(tmp_path.rglob("*"))
    assert predict_main(["--weights", str(checkpoint), "--source", source, "--device", "cpu", "--imgsz", "64"]) == 2
    assert message in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before  # no runs/ folder made
