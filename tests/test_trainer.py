"""The two-phase trainer on a tiny synthetic set (8 train / 4 val images at 64 px, CPU).

What is checked against something independent: the phase switch against the weights before and
after real optimisation steps; resume against an uninterrupted run (bit-identical state dicts);
the run folder and checkpoint format against the contract; NaN handling against the last good
checkpoint on disk; DDP against a plain run's outputs.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from smartcash.config import build_config, read_yaml
from smartcash.model.build import build_model
from smartcash.model.head import decode_predictions
from smartcash.model.loss import LossOutput, YoloLoss
from smartcash.model.training.core.prediction_processor import PredictionProcessor
from smartcash.model.training.optim import ModelEMA
from smartcash.model.training.phases import EarlyStopping, enter_phase
from smartcash.model.training.recipe import load_recipe
from smartcash.model.training.records import read_results
from smartcash.model.training.registry import ModelRegistry
from smartcash.model.training.step import optimization_step
from smartcash.model.training.trainer import Trainer
from smartcash.taxonomy import load_loss_config, load_taxonomy
from tiny_training import tiny_dataset, train_tiny

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT_KEYS = {"version", "date", "phase", "epoch", "interrupted", "model_name", "num_classes", "anchors",
                   "model", "ema", "ema_updates", "optimizer", "scaler", "scheduler", "iteration", "best_fitness",
                   "early_stopping", "metrics", "results", "rng", "config", "taxonomy", "recipe", "loss_used"}
REQUIRED_COLUMNS = {"epoch", "phase", "train/box_loss", "train/obj_loss", "train/cls_loss", "val/box_loss",
                    "val/obj_loss", "val/cls_loss", "metrics/precision", "metrics/recall", "metrics/mAP50",
                    "metrics/mAP50-95", "metrics/main_mAP50", "metrics/main_mAP50-95",
                    "metrics/denomination_accuracy", "lr/backbone", "lr/head", "epoch_time_s"}


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> str:
    return tiny_dataset(tmp_path_factory.mktemp("synthetic"))


def _train(tmp_path: Path, data_yaml: str, *flags: str, plots: bool = False) -> int:
    return train_tiny(tmp_path, data_yaml, *flags, plots=plots)


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _backbone(state: dict) -> dict:
    return {key: value for key, value in state.items() if key.startswith("backbone.")}


def test_two_phases_end_to_end(tmp_path, data_yaml) -> None:
    # The finetune recipe: the head-only phase 1 the two phases are designed around.
    assert _train(tmp_path, data_yaml, "--phase", "1", "--epochs", "2", "--name", "run", "--recipe", "finetune",
                  plots=True) == 0
    assert _train(tmp_path, data_yaml, "--phase", "2", "--epochs", "1", "--name", "run") == 0
    phase1, phase2 = tmp_path / "runs/train/run/phase1", tmp_path / "runs/train/run/phase2"
    for name in ("weights/last.pt", "weights/best.pt", "results.csv", "args.yaml", "results.png",
                 "PR_curve.png", "confusion_matrix.png"):
        assert (phase1 / name).is_file(), name
    rows1, rows2 = read_results(phase1 / "results.csv"), read_results(phase2 / "results.csv")
    assert REQUIRED_COLUMNS <= set(rows1[0]) and len(rows1) == 2 and len(rows2) == 1
    assert {row["phase"] for row in rows1} == {"1"} and rows2[0]["phase"] == "2"
    assert float(rows1[-1]["lr/backbone"]) == 0.0  # backbone not in the phase 1 optimiser
    assert float(rows2[0]["lr/head"]) == pytest.approx(10 * float(rows2[0]["lr/backbone"]))

    best1, last2 = _load(phase1 / "weights/best.pt"), _load(phase2 / "weights/last.pt")
    assert set(best1) == CHECKPOINT_KEYS
    args = read_yaml(phase1 / "args.yaml")
    assert best1["recipe"] == args.pop("recipe_used") and best1["recipe"]["name"] == "finetune"
    assert args.pop("loss_used")["weights"] == {"box": 0.05, "obj": 1.0, "cls": 0.5}  # finetune: loss.json's own
    assert best1["config"] == args
    assert "phase 1 trained with recipe finetune" in _load(phase2 / "weights/best.pt")["recipe"]["reason"]
    assert best1["anchors"].shape == (3, 3, 2) and best1["taxonomy"]["fine_classes"][14]["name"] == "security_thread"
    assert torch.equal(best1["anchors"], last2["anchors"])  # phase 2 keeps phase 1's (autoanchor) anchors
    # Phase 2 trains the backbone that phase 1 left untouched.
    changed = [key for key, value in _backbone(best1["ema"]).items()
               if value.is_floating_point() and not torch.equal(value, last2["model"][key])]
    assert changed
    registry = ModelRegistry(tmp_path / "runs/registry.json")
    assert registry.get("run/phase2").weights == str((phase2 / "weights/best.pt").resolve())
    assert {entry.id for entry in registry.entries()} == {"run/phase1", "run/phase2"}


def _random_batch(num_classes: int = 17) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 64, 64, generator=generator)
    boxes = torch.rand(6, 4, generator=generator) * 0.4 + 0.2
    targets = torch.cat([torch.tensor([[0.0], [0], [0], [1], [1], [1]]),
                         torch.randint(0, num_classes, (6, 1), generator=generator).float(), boxes], dim=1)
    return images, targets  # (2, 3, 64, 64), (6, 6) [image, class, cx, cy, w, h]


def _steps(model, setup, config, count: int = 2) -> None:
    loss_fn = YoloLoss(model, load_loss_config())
    ema = ModelEMA(model, config.ema_decay, config.ema_tau)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    images, targets = _random_batch()
    model.train()
    for step in range(count):
        setup.schedule.apply(setup.optimizer, 10 + step, 0)  # past warm-up: real LRs
        optimization_step(model, images, targets, loss_fn, setup.optimizer, scaler, ema, update=True,
                          clip_grad_norm=config.clip_grad_norm, amp=False, where=(0, step))
    return ema


def test_phase_switch_freezes_then_unfreezes_backbone() -> None:
    config = build_config(["--device", "cpu", "--epochs", "3"])
    recipe = load_recipe("finetune")
    torch.manual_seed(0)
    model = build_model("yolov5n", 17)
    backbone_before = {k: v.clone() for k, v in _backbone(model.state_dict()).items()}
    head_before = [p.detach().clone() for p in list(model.neck.parameters()) + list(model.detect.parameters())]

    setup = enter_phase(1, model, config, recipe.phase(1), batches_per_epoch=4)
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    grouped = [p for group in setup.optimizer.param_groups for p in group["params"]]
    assert not backbone_ids & {id(p) for p in grouped}
    assert {g["name"] for g in setup.optimizer.param_groups} == {"head/weight", "head/norm", "head/bias"}
    assert all(g["initial_lr"] == 1e-3 for g in setup.optimizer.param_groups)
    assert all(g["weight_decay"] == (0.01 if g["kind"] == "weight" else 0.0) for g in setup.optimizer.param_groups)
    ema = _steps(model, setup, config)
    after = _backbone(model.state_dict())
    assert all(torch.equal(backbone_before[k], after[k]) for k in after)  # weights AND BatchNorm stats
    assert all(torch.equal(after[k], v) for k, v in _backbone(ema.state_dict()).items())
    head_after = list(model.neck.parameters()) + list(model.detect.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(head_before, head_after))  # neck + head did train

    setup2 = enter_phase(2, model, config, recipe.phase(2), batches_per_epoch=4)
    assert setup2.optimizer is not setup.optimizer and setup2.early_stopping.best == -math.inf
    lrs = {g["name"]: g["initial_lr"] for g in setup2.optimizer.param_groups}
    assert lrs == {"head/weight": 1e-4, "head/norm": 1e-4, "head/bias": 1e-4,
                   "backbone/weight": 1e-5, "backbone/norm": 1e-5, "backbone/bias": 1e-5}
    setup2.schedule.apply(setup2.optimizer, 0, 0)  # first warm-up iteration
    for group in setup2.optimizer.param_groups:
        # Biases start at 10x their own LR (not YOLOv5's fixed 0.01: 1000x the backbone's 1e-5).
        assert group["lr"] == pytest.approx(10 * group["initial_lr"] if group["kind"] == "bias" else 0.0)
        assert group["betas"][0] == config.warmup_beta1
    _steps(model, setup2, config)
    changed = _backbone(model.state_dict())
    assert any(not torch.equal(backbone_before[k], changed[k]) for k in changed if k.endswith("conv.weight"))
    assert any(not torch.equal(backbone_before[k], changed[k]) for k in changed if k.endswith("running_mean"))


def test_phase_switch_decodes_with_the_anchors_phase_2_starts_from() -> None:
    config = build_config(["--device", "cpu", "--epochs", "2"])
    recipe = load_recipe("scratch")
    model = build_model("yolov5n", 17).eval()
    processor = PredictionProcessor(17, load_taxonomy().fine_to_main, conf_threshold=0.001, iou_threshold=0.6,
                                    max_det=300)
    enter_phase(1, model, config, recipe.phase(1), batches_per_epoch=4, prediction_processor=processor)
    with torch.no_grad():
        _, raw = model(torch.rand(1, 3, 64, 64))
        processor.decode(raw, model.detect.anchors, model.detect.stride)  # phase 1's anchors cached
        model.detect.anchors.mul_(2.0)  # phase 2's checkpoint carries other anchors
    enter_phase(2, model, config, recipe.phase(2), batches_per_epoch=4, prediction_processor=processor)
    torch.testing.assert_close(processor.decode(raw, model.detect.anchors, model.detect.stride),
                               decode_predictions(raw, model.detect.anchors, model.detect.stride))


def test_detect_decodes_with_the_anchors_of_a_loaded_state_dict() -> None:
    model = build_model("yolov5n", 17).eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        model(image)  # fills the head's grid cache with the built-in anchors
        state = model.state_dict()
        state["detect.anchors"] = state["detect.anchors"] * 0.5
        model.load_state_dict(state)
        decoded, raw = model(image)
    torch.testing.assert_close(decoded, decode_predictions(raw, state["detect.anchors"], model.detect.stride))


def test_schedule_warmup_then_cosine() -> None:
    config = build_config(["--device", "cpu", "--epochs", "4"])
    setup = enter_phase(1, build_model("yolov5n", 17), config, load_recipe("finetune").phase(1),
                        batches_per_epoch=10)
    schedule, optimizer = setup.schedule, setup.optimizer
    assert schedule.warmup_iterations == 10
    schedule.apply(optimizer, 5, 0)
    weight = next(g for g in optimizer.param_groups if g["kind"] == "weight")
    bias = next(g for g in optimizer.param_groups if g["kind"] == "bias")
    assert weight["lr"] == pytest.approx(0.5e-3) and bias["lr"] == pytest.approx(0.01 + (1e-3 - 0.01) * 0.5)
    assert schedule.batches_per_step(0) == schedule.accumulate == 4  # nominal 64 / batch 16, no ramp
    schedule.apply(optimizer, 35, 3)
    expected = 1e-3 * (((1 - math.cos(3 * math.pi / 4)) / 2) * (0.01 - 1) + 1)
    assert weight["lr"] == pytest.approx(expected) and bias["lr"] == pytest.approx(expected)


def test_early_stopping() -> None:
    tracker = EarlyStopping("fitness", patience=2)
    assert tracker.update(0, 0.1) and not tracker.update(1, 0.1) and not tracker.should_stop(1)
    assert not tracker.update(2, float("nan")) and tracker.should_stop(2)
    assert not EarlyStopping("fitness", patience=0).should_stop(100)


def test_resume_is_bit_identical(tmp_path, data_yaml, monkeypatch) -> None:
    assert _train(tmp_path, data_yaml, "--epochs", "2", "--name", "straight") == 0

    original = Trainer.before_epoch

    def interrupt_at_epoch_1(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        original(self, epoch)

    monkeypatch.setattr(Trainer, "before_epoch", interrupt_at_epoch_1)
    assert _train(tmp_path, data_yaml, "--epochs", "2", "--name", "cut") == 130
    cut_last = tmp_path / "runs/train/cut/phase1/weights/last.pt"
    assert _load(cut_last)["epoch"] == 0 and _load(cut_last)["interrupted"]
    assert len(read_results(cut_last.parents[1] / "results.csv")) == 1  # flushed on interrupt
    monkeypatch.setattr(Trainer, "before_epoch", original)
    assert _train(tmp_path, data_yaml, "--name", "cut", "--resume") == 0

    straight, resumed = _load(tmp_path / "runs/train/straight/phase1/weights/last.pt"), _load(cut_last)
    assert resumed["epoch"] == straight["epoch"] == 1
    for key in ("model", "ema"):
        assert straight[key].keys() == resumed[key].keys()
        different = [name for name in straight[key] if not torch.equal(straight[key][name], resumed[key][name])]
        assert not different, f"{key}: {different[:5]}"
    rows_straight = read_results(tmp_path / "runs/train/straight/phase1/results.csv")
    rows_resumed = read_results(cut_last.parents[1] / "results.csv")
    for a, b in zip(rows_straight, rows_resumed, strict=True):
        assert a["train/box_loss"] == b["train/box_loss"] and a["metrics/mAP50"] == b["metrics/mAP50"]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_yaml, monkeypatch, capsys) -> None:
    state = {"epoch": 0}
    original_epoch, original_loss = Trainer.before_epoch, YoloLoss.__call__

    def track_epoch(self, epoch):
        state["epoch"] = epoch
        original_epoch(self, epoch)

    def poisoned(self, raw, targets):
        out = original_loss(self, raw, targets)
        if state["epoch"] == 1:
            return LossOutput(out.total * float("nan"), out.box, out.obj, out.cls)
        return out

    monkeypatch.setattr(Trainer, "before_epoch", track_epoch)
    monkeypatch.setattr(YoloLoss, "__call__", poisoned)
    assert _train(tmp_path, data_yaml, "--epochs", "3", "--name", "nan") == 1
    assert "non-finite loss at epoch 1, batch 0" in capsys.readouterr().err
    weights = tmp_path / "runs/train/nan/phase1/weights"
    last = _load(weights / "last.pt")
    assert last["epoch"] == 0 and all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert (weights / "best.pt").is_file()
    assert len(read_results(weights.parent / "results.csv")) == 1


def test_phase2_without_phase1_names_the_path(tmp_path, data_yaml, capsys) -> None:
    assert _train(tmp_path, data_yaml, "--phase", "2", "--name", "fresh") == 1
    err = capsys.readouterr().err
    assert "phase 1 best checkpoint not found" in err and "runs/train/fresh/phase1/weights/best.pt" in err


@pytest.mark.slow
def test_ddp_two_gloo_processes(tmp_path, data_yaml) -> None:
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text("plots: false\n")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
               "-m", "smartcash.train", "--phase", "1", "--epochs", "1", "--data", data_yaml, "--imgsz", "64",
               "--batch", "2", "--workers", "0", "--device", "cpu", "--project", str(tmp_path / "runs"),
               "--name", "ddp", "--config", str(tiny)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs/train/ddp/phase1"
    assert len(read_results(run / "results.csv")) == 1 and (run / "weights/best.pt").is_file()
    assert not any(name.startswith(".") for name in os.listdir(run / "weights"))  # only rank 0 wrote


def test_amp_step_runs_the_model_in_bfloat16_and_the_loss_in_float32() -> None:
    """The CUDA AMP path on the CPU (autocast supports bfloat16 there): the model's outputs are
    half precision, the loss sees them as float32, and the step lands close to a float32 step."""
    images, targets = _random_batch()
    results = {}
    for amp in (False, True):
        torch.manual_seed(0)
        model = build_model("yolov5n", 17).train()
        seen = []
        loss_fn = YoloLoss(model, load_loss_config())
        original = loss_fn.__call__

        class Recording(YoloLoss):
            def __call__(self, raw, targets):
                seen.append({level.dtype for level in raw})
                return original(raw, targets)

        loss_fn.__class__ = Recording
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        losses = optimization_step(model, images, targets, loss_fn, optimizer, torch.amp.GradScaler("cpu", enabled=False),
                                   ModelEMA(model, 0.9999, 2000.0), update=True, clip_grad_norm=10.0, amp=amp,
                                   amp_dtype=torch.bfloat16, where=(0, 0))
        assert seen == [{torch.float32}] and losses.total.dtype == torch.float32
        results[amp] = (float(losses.total.detach()), model.detect.convs[0].weight.detach().clone())
    (loss32, weight32), (loss16, weight16) = results[False], results[True]
    assert loss16 == pytest.approx(loss32, rel=0.05) and loss16 != loss32  # bfloat16 really ran
    assert torch.allclose(weight16, weight32, atol=2e-3)  # one AdamW step of lr 1e-3 either way
