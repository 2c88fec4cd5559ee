"""Pretrained weights as users have them, read without running pickle code (CPU, seconds).

Every file is made here: a YOLOv5 v6 release-style pickle whose classes live in a throwaway
``models`` package that is gone before loading, an ultralytics ``yolov5nu`` pickle saved the way
ultralytics saves it, torchvision and timm EfficientNet-B4 state dicts (.pth and .safetensors), a
SmartCash checkpoint of other classes, and pickles carrying code payloads. What loaded is checked
tensor for tensor against the source (after the float cast), and the timm name map against timm's
own forward pass.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import shlex
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from smartcash.model import build_model
from smartcash.model.build import STRIDES, YOLOV5_LAYER_NAMES
from smartcash.model.restricted_pickle import RestrictedUnpickler, UnsafePickleError
from smartcash.model.weight_files import parse_safetensors, read_weights, timm_to_torchvision
from smartcash.model.weights import WeightsError, load_pretrained
from smartcash.weights import main as weights_main

NUM_CLASSES = 17
YOLOV5_PACKAGE = ("models", "models.common", "models.yolo")


def _yolov5_name(ours: str) -> str:
    """Our state-dict name -> YOLOv5 v6's (``model.<layer>.``, Detect convs under ``m``)."""
    prefix = max((p for p in YOLOV5_LAYER_NAMES.values() if ours.startswith(p + ".")), key=len)
    index = next(i for i, p in YOLOV5_LAYER_NAMES.items() if p == prefix)
    rest = ours[len(prefix) + 1:]
    return f"model.{index}.{rest.replace('convs.', 'm.', 1) if prefix == 'detect' else rest}"


def _fake_yolov5_package() -> dict[str, types.ModuleType]:
    """``models.common`` / ``models.yolo`` with YOLOv5's class names (empty nn.Module subclasses)."""
    package = {name: types.ModuleType(name) for name in YOLOV5_PACKAGE}
    for module, names in (("models.common", ("Conv", "C3", "Bottleneck", "SPPF", "Concat")),
                          ("models.yolo", ("Detect", "DetectionModel"))):
        for name in names:
            setattr(package[module], name, type(name, (nn.Module,), {"__module__": module}))
    return package


def _save_yolov5_release(path: Path, source: nn.Module) -> None:
    """A YOLOv5 v6 release file made from ``source``'s modules: {'model': DetectionModel (half), ...}.

    The object graph is YOLOv5's: DetectionModel.model = Sequential of 25 layers, Conv/C3/SPPF from
    ``models.common``, Detect with ``m`` convs and ``anchors`` in stride units. The throwaway
    package is removed from sys.modules before this returns, so loading cannot import it.
    """
    package = _fake_yolov5_package()
    common, yolo = package["models.common"], package["models.yolo"]
    sys.modules.update(package)
    try:
        graph = copy.deepcopy(source)
        for module in graph.modules():  # ultralytics' blocks -> YOLOv5's classes of the same name
            if type(module).__module__.startswith("ultralytics.") and hasattr(common, type(module).__name__):
                module.__class__ = getattr(common, type(module).__name__)
        detect = yolo.Detect()
        detect.m = graph.detect.convs
        detect.register_buffer("anchors", graph.detect.anchors / torch.tensor(STRIDES).view(-1, 1, 1))
        detect.nc, detect.nl, detect.na = source.num_classes, 3, 3
        detect.stride = torch.tensor(STRIDES, dtype=torch.float32)
        detect.grid = detect.anchor_grid = [torch.empty(0)] * 3
        layers = [graph.get_submodule(YOLOV5_LAYER_NAMES[index]) if index in YOLOV5_LAYER_NAMES
                  else nn.Upsample(None, 2, "nearest") if index in (11, 15) else common.Concat()
                  for index in range(24)]
        model = yolo.DetectionModel()
        model.model = nn.Sequential(*layers, detect)
        model.yaml, model.stride = {"nc": source.num_classes}, detect.stride
        model.names = [str(index) for index in range(source.num_classes)]
        # Plain data a training run leaves in the file too: a numpy scalar, a pathlib.Path.
        torch.save({"epoch": -1, "best_fitness": np.float64(0.5), "model": model.half(), "ema": None,
                    "updates": None, "optimizer": None, "opt": {"weights": Path("yolov5n.pt"), "epochs": 300},
                    "git": {"tag": "v7.0"}, "date": "2022-11-22T12:00:00"}, path)
    finally:
        for name in YOLOV5_PACKAGE:
            del sys.modules[name]


def _randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm scales, shifts and statistics and random biases, so that every layer differs
    from every other and from a fresh model (convolution weights are random from their init).
    Ranges keep activations at their usual size through a deep network."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and tensor.ndim == 1:
                values = torch.rand(tensor.shape, generator=generator)
                scale = name.endswith(("running_var", ".weight"))  # BatchNorm variance and gamma
                tensor.copy_(values + 0.5 if scale else values * 0.2 - 0.1)
    return model


@pytest.fixture(scope="module")
def yolov5_release(tmp_path_factory) -> tuple[Path, nn.Module]:
    """(a YOLOv5n release-style file of 80 COCO classes, the model it was made from)."""
    source = _randomised(build_model("yolov5n", 80)).eval()
    path = tmp_path_factory.mktemp("yolov5") / "yolov5n.pt"
    _save_yolov5_release(path, source)
    return path, source


def test_yolov5_release_pickle_loads_without_its_classes(yolov5_release) -> None:
    path, source = yolov5_release
    with pytest.raises(pickle.UnpicklingError):  # what torch itself does with it
        torch.load(path, weights_only=True)
    weights = read_weights(path)
    assert weights.format == "pickled models.yolo.DetectionModel" and weights.key == "model"
    assert "float16" in weights.dtypes and "models.common.C3" in weights.pickled_globals
    assert not any(name in sys.modules for name in YOLOV5_PACKAGE)  # nothing was imported

    target = build_model("yolov5n", NUM_CLASSES)
    report = load_pretrained(target, path)
    assert report.format == weights.format
    # Everything but the 80-class head convs (255 outputs, ours 66): backbone, neck, anchors.
    expected = {name for name in source.state_dict() if not name.startswith("detect.convs.")}
    assert set(report.loaded) == expected and report.loaded_count == 343
    head = [f"{level}.{leaf}" for level in range(3) for leaf in ("weight", "bias")]
    theirs, ours = source.state_dict(), target.state_dict()
    assert sorted(report.skipped) == sorted(
        f"model.24.m.{name}: shape {tuple(theirs[f'detect.convs.{name}'].shape)} != "
        f"{tuple(ours[f'detect.convs.{name}'].shape)}" for name in head)
    half, loaded = copy.deepcopy(source).half().state_dict(), target.state_dict()
    for name in report.loaded:
        assert torch.equal(loaded[name], half[name].to(loaded[name].dtype)), name
    assert torch.equal(target.detect.anchors, source.detect.anchors)  # stride units -> pixels again


def test_yolov5_layer_of_another_kind_does_not_load(tmp_path) -> None:
    """YOLOv5 v5.0's Focus stem (``model.0.conv.conv``) is not our 6x6 Conv stem, and an SPPF whose
    cv1 has no activation computes differently: neither passes silently."""
    source = _randomised(build_model("yolov5n", NUM_CLASSES))
    source.backbone.p5[2].cv1.act = nn.Identity()
    path = tmp_path / "yolov5n_identity_sppf.pt"
    _save_yolov5_release(path, source)
    report = load_pretrained(build_model("yolov5n", NUM_CLASSES), path)
    assert report.loaded_count == len(source.state_dict())
    assert report.notes == ("the file's SPPF (layer 9) activates cv1 with torch.nn.modules.linear.Identity, ours "
                            "(YOLOv5's) with SiLU: the layer loads but computes differently until fine-tuned",)

    state = {_yolov5_name(name): tensor for name, tensor in source.state_dict().items()}
    focus = {name.replace("model.0.conv.", "model.0.conv.conv.").replace("model.0.bn.", "model.0.conv.bn.")
             if name.startswith("model.0.") else name: tensor for name, tensor in state.items()}
    torch.save(focus, tmp_path / "focus.pt")
    report = load_pretrained(build_model("yolov5n", NUM_CLASSES), tmp_path / "focus.pt")
    stem = [name for name in source.state_dict() if name.startswith("backbone.stem.")]
    assert sorted(report.missing) == sorted(stem)
    assert all("layer 0 is another block than ours (backbone.stem)" in entry
               for entry in report.skipped)


def test_ultralytics_yolov5nu_pickle_loads_backbone_and_neck(tmp_path) -> None:
    import ultralytics
    from ultralytics.nn.tasks import DetectionModel

    source = DetectionModel("yolov5nu.yaml", nc=80, verbose=False)
    _randomised(source)
    path = tmp_path / "yolov5nu.pt"
    torch.save({"date": "2024-01-01T00:00:00", "version": ultralytics.__version__, "license": "AGPL-3.0",
                "docs": "https://docs.ultralytics.com", "epoch": -1, "best_fitness": None,
                "model": copy.deepcopy(source).half(), "ema": None, "updates": None, "optimizer": None,
                "train_args": {"model": "yolov5nu.yaml", "imgsz": 640, "epochs": 300},
                "train_metrics": {"metrics/mAP50(B)": np.float64(0.4)}, "train_results": {"epoch": [1]}}, path)

    target = build_model("yolov5n", NUM_CLASSES)
    report = load_pretrained(target, path)
    assert report.format == "pickled ultralytics.nn.tasks.DetectionModel"
    head = [name for name in source.state_dict() if name.startswith("model.24.")]
    assert report.loaded_count == len(source.state_dict()) - len(head) == 342
    assert all(name.startswith(("backbone.", "neck.")) for name in report.loaded)
    assert sorted(entry.split(":")[0] for entry in report.skipped) == sorted(head)
    assert all("anchor-free head" in entry for entry in report.skipped)
    assert sorted(report.missing) == ["detect.anchors", *(f"detect.convs.{i}.{leaf}" for i in range(3)
                                                          for leaf in ("bias", "weight"))]
    assert report.notes == ()  # its SPPF activates cv1 with SiLU, as ours
    ours = target.state_dict()
    for name, tensor in copy.deepcopy(source).half().state_dict().items():
        if not name.startswith("model.24."):
            layer, rest = name.split(".", 2)[1:]
            loaded = ours[f"{YOLOV5_LAYER_NAMES[int(layer)]}.{rest}"]
            assert torch.equal(loaded, tensor.to(loaded.dtype)), name


def test_other_classes_smartcash_checkpoint_remakes_the_head(tmp_path) -> None:
    from smartcash.model.training.checkpoint import save_checkpoint

    source = _randomised(build_model("yolov5n", 5))
    state = source.state_dict()
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model_name": "yolov5n", "num_classes": 5, "anchors": source.detect.anchors,
                           "model": state, "ema": state, "taxonomy": {"fine_classes": []}, "epoch": 9})
    target = build_model("yolov5n", NUM_CLASSES)
    report = load_pretrained(target, path)
    assert report.format == "SmartCash checkpoint"
    head = [f"detect.convs.{i}.{leaf}" for i in range(3) for leaf in ("weight", "bias")]
    assert sorted(entry.split(":")[0] for entry in report.skipped) == sorted(head)
    assert all(": shape (30," in entry for entry in report.skipped)  # 3 anchors x (5 + 5 classes)
    assert set(report.loaded) == set(state) - set(head) and set(report.missing) == set(head)
    loaded = target.state_dict()
    for name in report.loaded:
        assert torch.equal(loaded[name], state[name]), name


def test_efficientnet_torchvision_and_timm_state_dicts(tmp_path) -> None:
    timm = pytest.importorskip("timm")
    import torchvision

    target = build_model("efficientnet_b4", NUM_CLASSES).eval()
    backbone_names = {name for name in target.state_dict() if name.startswith("backbone.")}

    torchvision_model = _randomised(torchvision.models.efficientnet_b4(weights=None))
    torch.save(torchvision_model.state_dict(), tmp_path / "efficientnet_b4_rwightman-23ab8bcd.pth")
    report = load_pretrained(target, tmp_path / "efficientnet_b4_rwightman-23ab8bcd.pth")
    assert set(report.loaded) == backbone_names and len(backbone_names) == 698
    assert all(entry.startswith(("features.8.", "classifier.1.")) for entry in report.skipped)
    assert not any("eps" in note for note in report.notes)  # the backbone keeps ImageNet's eps 1e-5
    loaded = target.state_dict()
    for name, tensor in torchvision_model.state_dict().items():
        if f"backbone.{name}" in backbone_names:
            assert torch.equal(loaded[f"backbone.{name}"], tensor), name

    timm_model = _randomised(timm.create_model("efficientnet_b4", pretrained=False), seed=1).eval()
    torch.save(timm_model.state_dict(), tmp_path / "timm_efficientnet_b4.pth")
    report = load_pretrained(target, tmp_path / "timm_efficientnet_b4.pth")
    assert set(report.loaded) == backbone_names
    not_ours = [name for name in timm_to_torchvision(timm_model.state_dict())
                if name.startswith(("features.8.", "classifier."))]  # conv_head, bn2, classifier
    assert sorted(entry.split(":")[0] for entry in report.skipped) == sorted(not_ours)
    # The name map is right when our backbone computes what timm's computes (with no change:
    # the backbone keeps the BatchNorm eps the ImageNet weights were trained with).
    features = timm.create_model("efficientnet_b4", pretrained=False, features_only=True,
                                 out_indices=(2, 3, 4)).eval()  # strides 8, 16, 32 as our taps
    features.load_state_dict(timm_model.state_dict(), strict=False)
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ours = target.backbone(images)
        theirs = features((images - target.backbone.mean) / target.backbone.std)
    for level, (mine, reference) in enumerate(zip(ours, theirs, strict=True)):
        assert mine.shape == reference.shape
        assert torch.allclose(mine, reference, atol=1e-5, rtol=1e-4), level

    safetensors_torch = pytest.importorskip("safetensors.torch")
    safetensors_path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(timm_model.state_dict(), str(safetensors_path))
    fresh = build_model("efficientnet_b4", NUM_CLASSES)
    assert set(load_pretrained(fresh, safetensors_path).loaded) == backbone_names
    from_safetensors, from_pth = fresh.state_dict(), target.state_dict()
    assert all(torch.equal(from_safetensors[name], from_pth[name]) for name in backbone_names)


def test_safetensors_reader_matches_the_safetensors_package(tmp_path) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    tensors = {"a.weight": torch.randn(3, 4).half(), "a.num_batches_tracked": torch.tensor(7),
               "b": torch.arange(6, dtype=torch.int32).view(2, 3), "empty": torch.zeros(0, 5),
               "flag": torch.tensor([True, False]), "bf": torch.randn(2).bfloat16()}
    path = tmp_path / "t.safetensors"
    safetensors_torch.save_file(tensors, str(path), metadata={"format": "pt"})
    parsed = parse_safetensors(path.read_bytes())
    reference = safetensors_torch.load_file(str(path))
    assert parsed.keys() == reference.keys() == tensors.keys()
    for name, tensor in reference.items():
        assert parsed[name].dtype == tensor.dtype and torch.equal(parsed[name], tensor), name
    data = bytearray(path.read_bytes())
    with pytest.raises(WeightsError, match="exceeds the file"):
        parse_safetensors(bytes(data[:8]) + b"{}", "cut.safetensors")
    with pytest.raises(WeightsError, match="do not fit"):
        parse_safetensors(bytes(data[:-4]), "truncated.safetensors")


# --- payloads: a pickle that calls code is refused, and the code never runs -------------------

class _Payload:
    def __init__(self, function, argument) -> None:
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize("call", ["os.system", "exec", "subprocess.Popen", "getattr"])
def test_payload_never_runs(tmp_path, call) -> None:
    marker = tmp_path / "pwned"
    command = f"touch {shlex.quote(str(marker))}"
    payload = {"os.system": _Payload(os.system, command),
               "exec": _Payload(exec, f"open({str(marker)!r}, 'w').write('x')"),
               "subprocess.Popen": _Payload(subprocess.Popen, ["touch", str(marker)]),
               "getattr": _Payload(getattr, "__class__")}[call]
    path = tmp_path / "evil.pt"
    weights = build_model("yolov5n", NUM_CLASSES).state_dict()
    torch.save({"model": nn.Linear(2, 2), "ema": None, "opt": {"seed": payload}, "weights": weights}, path)
    with pytest.raises(WeightsError, match=r"refused: the pickle calls .* it was not run") as error:
        load_pretrained(build_model("yolov5n", NUM_CLASSES), path)
    assert str(path) in str(error.value) and "weights_only=True" in str(error.value)
    assert not marker.exists()

    code = weights_main(["inspect", str(path)])
    assert code == 1 and not marker.exists()  # the file is there and refused: a failed run, not bad usage
    if call == "os.system":  # control: the same file does run the payload when unpickled for real
        torch.load(path, weights_only=False)
        assert marker.exists()



def test_a_legacy_pickle_payload_is_refused_without_torchs_advice_to_run_it(tmp_path, capsys) -> None:
    """A non-zip pickle (torch.save(..., _use_new_zipfile_serialization=False) or pickle.dump) that
    calls code: refused naming the call; torch's "weights_only=False will likely succeed" is not
    passed on (it would run the payload)."""
    marker = tmp_path / "pwned"
    path = tmp_path / "old.pt"
    with path.open("wb") as handle:
        pickle.dump({"model": _Payload(os.system, f"touch {shlex.quote(str(marker))}")}, handle, protocol=2)
    assert weights_main(["inspect", str(path)]) == 1
    error = capsys.readouterr().err
    assert "refused: a legacy (non-zip) pickle" in error and "(it calls posix.system)" in error
    assert "weights_only=False" not in error and "likely succeed" not in error
    assert not marker.exists()

def test_unpickler_refuses_state_on_real_objects_and_names_no_module() -> None:
    def restricted_load(data: bytes):
        return RestrictedUnpickler(io.BytesIO(data), lambda key: b"").load()

    # BUILD on a real set (protocol 2: REDUCE set([]), then BUILD {'a': 1}).
    build_on_real = b"\x80\x02c__builtin__\nset\n]\x85R}X\x01\x00\x00\x00aK\x01sb."
    with pytest.raises(UnsafePickleError, match="sets the state of a real set"):
        restricted_load(build_on_real)
    # A class from a module that does not exist becomes a placeholder holding its state.
    thing = restricted_load(b"\x80\x02cno_such_package.sub\nThing\n)\x81}X\x01\x00\x00\x00xK\x01sb.")
    assert type(thing).pickled_global == "no_such_package.sub.Thing" and thing.state == {"x": 1}
    assert "no_such_package" not in sys.modules


# --- the CLI -----------------------------------------------------------------------------------

def test_cli_inspect_and_convert_round_trip(tmp_path, yolov5_release, capsys) -> None:
    path, _ = yolov5_release
    assert weights_main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "format: pickled models.yolo.DetectionModel (weights from 'model')" in out
    assert "tensors: 349 (float16, int64;" in out
    assert "343 of our 349 tensors would load (backbone 198, neck 144, detect 1)" in out
    assert "model.24.m.0.weight: shape (255, 64, 1, 1) != (66, 64, 1, 1)" in out
    assert "models.common.SPPF" in out and "pathlib.PosixPath" in out

    converted = tmp_path / "yolov5n_state_dict.pt"
    assert weights_main(["convert", str(path), str(converted)]) == 0
    plain = torch.load(converted, weights_only=True)
    source = read_weights(path).tensors
    assert plain.keys() == source.keys()
    assert all(plain[name].dtype != torch.float16 and torch.equal(plain[name], source[name]) for name in plain)
    from_plain = build_model("yolov5n", NUM_CLASSES)
    from_pickle = build_model("yolov5n", NUM_CLASSES)
    loaded = load_pretrained(from_plain, converted).loaded
    assert loaded == load_pretrained(from_pickle, path).loaded
    plain_state, pickle_state = from_plain.state_dict(), from_pickle.state_dict()
    assert all(torch.equal(plain_state[name], pickle_state[name]) for name in loaded)
    capsys.readouterr()


def test_cli_errors(tmp_path, yolov5_release, capsys) -> None:
    path, _ = yolov5_release
    before = path.read_bytes()
    same = path.parent / "." / path.name
    assert weights_main(["convert", str(path), str(same)]) == 2
    assert path.read_bytes() == before
    assert weights_main(["inspect", str(tmp_path / "missing.pt")]) == 2
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert weights_main(["inspect", str(tmp_path / "junk.pt")]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)
    assert "is the input" in errors[0] and "not found" in errors[1] and "junk.pt" in errors[2]
    assert weights_main(["inspect", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path}: is a folder; give the weights file in it "
                                       "(.pt, .pth or .safetensors)\n")
    assert weights_main(["inspect", str(path), "--model", "yolov5s"]) == 0  # n weights, s model: anchors only
    assert "into yolov5s (17 classes): 1 of our 349 tensors would load (detect 1)" in capsys.readouterr().out


def test_convert_never_writes_over_a_checkpoint(tmp_path, yolov5_release, capsys) -> None:
    """OUT that is another run's best.pt (or an earlier conversion) is refused, as val's --json is."""
    path, _ = yolov5_release
    best = tmp_path / "runs/train/other/phase1/weights/best.pt"
    best.parent.mkdir(parents=True)
    model = build_model("yolov5n", NUM_CLASSES)
    torch.save({"model_name": "yolov5n", "num_classes": NUM_CLASSES, "model": model.state_dict(),
                "ema": model.state_dict()}, best)
    converted = tmp_path / "converted.pt"
    assert weights_main(["convert", str(path), str(converted)]) == 0
    for target in (best, converted):
        before = target.read_bytes()
        capsys.readouterr()
        assert weights_main(["convert", str(path), str(target)]) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"error: OUT {target}: is a checkpoint") and "never overwritten" in error, error
        assert target.read_bytes() == before
    assert sorted(p.name for p in best.parent.iterdir()) == ["best.pt"]  # nor a temp file left
    assert weights_main(["convert", str(path), str(tmp_path / "state.bin")]) == 2  # not a .pt / .pth name
    assert "must end in .pt or .pth" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted.pt", "runs"]


def test_nothing_fits_is_an_error(tmp_path, yolov5_release) -> None:
    path, _ = yolov5_release
    with pytest.raises(WeightsError, match="none of its 349 tensors fit this model's weights"):
        load_pretrained(build_model("yolov5s", NUM_CLASSES), path)


def test_a_backbone_learnt_on_the_builtin_synthetic_notes_is_named_when_auto_freezes_it(tmp_path, monkeypatch,
                                                                                        caplog) -> None:
    """Frozen (auto's finetune), a backbone from the built-in synthetic set learnt far less on the VND
    photographs than every layer training from it (README "Learning", transfer): the run says so."""
    from smartcash.data.synthetic import dataset_dir_name
    from smartcash.model.training.checkpoint import save_checkpoint
    from smartcash.model.training.recipe import warn_synthetic_backbone

    monkeypatch.setenv("SMARTCASH_CACHE", str(tmp_path / "cache"))
    synthetic = tmp_path / "cache" / dataset_dir_name(0, 300, 100, 320) / "data.yaml"
    source = build_model("yolov5n", 5)
    state = source.state_dict()
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model_name": "yolov5n", "num_classes": 5, "anchors": source.detect.anchors,
                           "model": state, "ema": state, "taxonomy": {"fine_classes": []}, "epoch": 9,
                           "config": {"data": str(synthetic)}})
    report = load_pretrained(build_model("yolov5n", NUM_CLASSES), path)
    assert report.trained_on == str(synthetic)
    photos = tmp_path / "photos" / "data.yaml"
    warn_synthetic_backbone(report.trained_on, photos, str(path))
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith(f"--weights {path} learnt on SmartCash's built-in synthetic notes ({synthetic})")
    assert warning.endswith("pass --recipe scratch for that")
    caplog.clear()
    warn_synthetic_backbone(report.trained_on, synthetic, str(path))  # synthetic again: finetune is fine
    other = tmp_path / "cache" / "large-objects-v1-seed0-train500-val120" / "data.yaml"
    warn_synthetic_backbone(str(other), photos, str(path))  # another set in the cache folder
    warn_synthetic_backbone("", photos, str(path))  # not a SmartCash checkpoint
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
