"""Recipes: chosen by the starting point with a saved reason, validated at the edge, and what the
trainer does with them (a trainable backbone from scratch, accumulation ramp, closing epochs
without mosaic, phase 2 reading phase 1's recipe)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from smartcash.config import ConfigError, read_yaml
from smartcash.model.training.optim import WarmupCosineSchedule
from smartcash.model.training.recipe import (MAX_WARMUP_BIAS_FACTOR, RECIPE_DIR, choose_recipe, load_recipe,
                                             recipe_from_dict)
from smartcash.model.training import trainer as trainer_module
from tiny_training import tiny_dataset, train_tiny


def test_auto_follows_the_starting_point() -> None:
    scratch = choose_recipe("auto", 1, pretrained_backbone=False)
    assert scratch.recipe.name == "scratch" and "no pretrained backbone" in scratch.reason
    assert not scratch.recipe.phase(1).freeze_backbone
    finetune = choose_recipe("auto", 1, pretrained_backbone=True)
    assert finetune.recipe.name == "finetune" and finetune.recipe.phase(1).freeze_backbone
    # The spec's fine-tuning LRs.
    assert (finetune.recipe.phase(1).head_lr, finetune.recipe.phase(2).head_lr,
            finetune.recipe.phase(2).backbone_lr) == (1e-3, 1e-4, 1e-5)
    assert choose_recipe("finetune", 1, pretrained_backbone=False).reason == "--recipe finetune"
    # Phase 2 takes phase 1's recipe from its checkpoint, settings included.
    saved = scratch.to_dict()
    saved["phase2"]["head_lr"] = 7e-4
    phase2 = choose_recipe("auto", 2, pretrained_backbone=False, previous=saved)
    assert phase2.recipe.phase(2).head_lr == 7e-4 and "phase 1 trained with recipe scratch" in phase2.reason
    overridden = choose_recipe("finetune", 2, False, previous=saved)
    assert overridden.recipe.name == "finetune" and "phase 1 used scratch" in overridden.reason
    assert choose_recipe("auto", 2, False, previous=None).recipe.name == "finetune"  # older checkpoints


def test_shipped_recipes_round_trip_and_bias_warmup_is_bounded(tmp_path) -> None:
    for name in ("finetune", "scratch"):
        recipe = load_recipe(name)
        assert recipe_from_dict(recipe.to_dict()).phases == recipe.phases
        for phase in (1, 2):
            assert recipe.phase(phase).warmup_bias_factor <= MAX_WARMUP_BIAS_FACTOR
    text = (RECIPE_DIR / "finetune.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("warmup_bias_factor: 10.0", "warmup_bias_factor: 800", 1))
    with pytest.raises(ConfigError, match="phase1: warmup_bias_factor must be in"):
        load_recipe(str(bad))
    bad.write_text(re.sub(r"\n  head_lr:[^\n]*", "", text, count=1))
    with pytest.raises(ConfigError, match=r"missing key\(s\) \['head_lr'\]"):
        load_recipe(str(bad))
    for gains, message in (("{box: 1.0, obj: 1.0, cls: .inf}", "must be finite and >= 0"),
                           ("{box: 1.0, obj: 1.0, iou: 1.0}", "loss_gains and loss_gains_separate need box, obj")):
        bad.write_text(text.replace("loss_gains: {box: 1.0, obj: 1.0, cls: 1.0}", f"loss_gains: {gains}", 1))
        with pytest.raises(ConfigError, match=message):
            load_recipe(str(bad))
    # A recipe saved before loss_gains_separate existed (older checkpoints, users' files) loads without it.
    saved = load_recipe("scratch").to_dict()
    for phase in ("phase1", "phase2"):
        del saved[phase]["loss_gains_separate"]
    assert recipe_from_dict(saved).phase(1).loss_gains_separate is None


def test_loss_scaling_follows_yolov5() -> None:
    phase = load_recipe("scratch").phase(1)
    scaled = type(phase)(**{**phase.to_dict(), "loss_scaling": "yolov5"})
    gains = scaled.effective_loss_gains(imgsz=320, num_classes=16)
    base = phase.loss_gains
    assert gains == pytest.approx({"box": base["box"], "obj": base["obj"] * 0.25, "cls": base["cls"] * 0.2})


def test_accumulation_ramps_during_warmup() -> None:
    schedule = WarmupCosineSchedule(epochs=3, warmup_iterations=30, final_fraction=0.01, warmup_bias_factor=10,
                                    beta1=0.937, warmup_beta1=0.8, accumulate=4, warmup_accumulate=True)
    # 1 + 3 * i / 30, rounded: 1 at the start, 2.5 -> 2 at i = 15, 4 from the end of warm-up on.
    assert [schedule.batches_per_step(i) for i in (0, 4, 5, 15, 25, 29, 30, 100)] == [1, 1, 2, 2, 4, 4, 4, 4]
    flat = WarmupCosineSchedule(3, 30, 0.01, 10, 0.937, 0.8, accumulate=4, warmup_accumulate=False)
    assert flat.batches_per_step(0) == 4


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> str:
    return tiny_dataset(tmp_path_factory.mktemp("synthetic"))


def _train(tmp_path: Path, data_yaml: str, *flags: str) -> int:
    return train_tiny(tmp_path, data_yaml, *flags, precise_bn_images=4)


def _keep_whole_notes_only(root: Path) -> None:
    """Drop every label but the whole notes (classes 0..6) under ``root``: the tiny set's nested
    layers become separate objects. Label caches are removed so the next scan reads the change."""
    for label in (root / "labels").rglob("*.txt"):
        rows = [line for line in label.read_text().splitlines() if line.strip() and int(line.split()[0]) < 7]
        label.write_text("".join(f"{row}\n" for row in rows))
    for cache in root.rglob("*.cache"):
        cache.unlink()


def test_default_run_from_scratch_trains_every_layer_and_closes_mosaic(tmp_path, data_yaml, monkeypatch) -> None:
    mosaic_by_epoch = {}
    original = trainer_module.start_epoch

    def record(loader, epoch, mosaic=True):  # what the loader is told for each epoch
        mosaic_by_epoch[epoch] = mosaic
        return original(loader, epoch, mosaic)

    monkeypatch.setattr(trainer_module, "start_epoch", record)
    assert _train(tmp_path, data_yaml, "--epochs", "3", "--close-mosaic", "1", "--name", "s") == 0
    run = tmp_path / "runs/train/s/phase1"
    used = read_yaml(run / "args.yaml")["recipe_used"]
    assert used["name"] == "scratch" and used["reason"].startswith("auto: no pretrained backbone")
    assert mosaic_by_epoch == {0: True, 1: True, 2: False}
    state = torch.load(run / "weights/last.pt", weights_only=True)
    assert state["recipe"] == used
    from smartcash.model.build import build_model

    torch.manual_seed(0)  # the run's initial weights (seed 0)
    initial = build_model("yolov5n", 17).state_dict()
    moved = [k for k, v in state["model"].items() if k.startswith("backbone.") and k.endswith("conv.weight")
             and not torch.equal(v, initial[k])]
    assert moved  # the random backbone trained in phase 1
    # Phase 2 continues with the scratch recipe without being told.
    assert _train(tmp_path, data_yaml, "--phase", "2", "--epochs", "1", "--name", "s") == 0
    used2 = read_yaml(tmp_path / "runs/train/s/phase2/args.yaml")["recipe_used"]
    assert used2["name"] == "scratch" and "phase 1 trained with recipe scratch" in used2["reason"]


def test_transfer_from_another_dataset_keeps_the_backbone_bit_identical(tmp_path, data_yaml) -> None:
    """--weights of a checkpoint trained on other classes: auto picks finetune, phase 1 leaves the
    loaded backbone exactly as loaded (weights and BatchNorm statistics), the head is re-made."""
    assert _train(tmp_path, data_yaml, "--epochs", "1", "--name", "source") == 0
    source = tmp_path / "runs/train/source/phase1/weights/best.pt"
    # The same images under 3 other class names: a dataset of another taxonomy (identity map).
    root = tmp_path / "other"
    shutil.copytree(Path(data_yaml).parent, root)
    other = root / "other.yaml"
    config = read_yaml(data_yaml)
    other.write_text(f"train: {root / str(config['train'])}\nval: {root / str(config['val'])}\n"
                     "names: [a, b, c]\nclass_map: {}\n")
    labels = sorted((root / "labels").rglob("*.txt"))
    for label in labels:  # class ids into 0..2
        lines = [line.split() for line in label.read_text().splitlines() if line.strip()]
        label.write_text("".join(f"{int(p[0]) % 3} {' '.join(p[1:])}\n" for p in lines))
    for cache in root.rglob("*.cache"):
        cache.unlink()
    assert _train(tmp_path, str(other), "--epochs", "2", "--name", "target", "--weights", str(source)) == 0
    target = torch.load(tmp_path / "runs/train/target/phase1/weights/last.pt", weights_only=True)
    assert target["recipe"]["name"] == "finetune" and "pretrained backbone" in target["recipe"]["reason"]
    loaded = torch.load(source, weights_only=True)["ema"]
    for key in ("model", "ema"):
        backbone = {k: v for k, v in target[key].items() if k.startswith("backbone.")}
        assert backbone and all(torch.equal(value, loaded[k]) for k, value in backbone.items()), key
    assert target["model"]["detect.convs.0.weight"].shape[0] == 3 * (5 + 3)  # head re-made for 3 classes


def test_loss_gains_flag_replaces_the_recipes_for_one_run(tmp_path, data_yaml, caplog) -> None:
    """--loss-gains cls=0: the class loss weighs nothing in this run (results.csv records 0), the log
    says so, args.yaml keeps the flag, and the recipe saved for phase 2 is the recipe's own."""
    caplog.set_level("INFO", logger="smartcash")
    assert _train(tmp_path, data_yaml, "--epochs", "1", "--loss-gains", "cls=0", "--name", "g") == 0
    run = tmp_path / "runs/train/g/phase1"
    import csv

    rows = list(csv.DictReader((run / "results.csv").open()))
    assert float(rows[-1]["train/cls_loss"]) == 0.0 and float(rows[-1]["train/box_loss"]) > 0
    assert "loss weights: box 0.05, obj 1, cls 0 (loss.json x gains {'box': 1.0, 'obj': 1.0, 'cls': 0.0}" in caplog.text
    args = read_yaml(run / "args.yaml")
    assert args["loss_gains"] == {"cls": 0.0}
    assert args["loss_used"]["weights"] == {"box": 0.05, "obj": 1.0, "cls": 0.0}
    assert args["loss_used"]["source"] == "recipe's loss_gains + --loss-gains"
    assert args["recipe_used"]["phase1"]["loss_gains"] == load_recipe("scratch").phase(1).loss_gains


def test_separate_objects_take_the_recipes_separate_gains(tmp_path, data_yaml, caplog) -> None:
    """The tiny synthetic set nests boxes (recipe's loss_gains); the same images labelled with whole
    notes only are separate objects and train with loss_gains_separate (class loss at half)."""
    root = tmp_path / "whole"
    shutil.copytree(Path(data_yaml).parent, root)
    _keep_whole_notes_only(root)
    separate = load_recipe("scratch").phase(1).loss_gains_separate
    assert separate == {"box": 1.0, "obj": 1.0, "cls": 0.5}
    assert load_recipe("finetune").phase(1).loss_gains_separate is None  # not measured for a pretrained start
    caplog.set_level("INFO", logger="smartcash")
    assert _train(tmp_path, data_yaml, "--epochs", "1", "--name", "nested") == 0
    assert "cls 0.5 (loss.json x gains {'box': 1.0, 'obj': 1.0, 'cls': 1.0}: recipe's loss_gains)" in caplog.text
    assert "training boxes lie inside another (nested boxes)" in caplog.text
    caplog.clear()
    assert _train(tmp_path, str(root / Path(data_yaml).name), "--epochs", "1", "--name", "separate") == 0
    assert ("cls 0.25 (loss.json x gains {'box': 1.0, 'obj': 1.0, 'cls': 0.5}: recipe's loss_gains_separate)"
            in caplog.text)
    assert "0.0% of" in caplog.text and "(separate objects)" in caplog.text
    used = read_yaml(tmp_path / "runs/train/separate/phase1/args.yaml")["loss_used"]
    assert used["gains"] == separate and used["label_layout"]["nested"] == 0 and used["label_layout"]["boxes"] > 0
    caplog.clear()  # the run's own --loss-gains goes on top of the layout's gains
    assert _train(tmp_path, str(root / Path(data_yaml).name), "--epochs", "1", "--name", "both",
                  "--loss-gains", "obj=2") == 0
    assert ("(loss.json x gains {'box': 1.0, 'obj': 2.0, 'cls': 0.5}: recipe's loss_gains_separate + --loss-gains)"
            in caplog.text)


def test_a_resumed_run_keeps_the_loss_gains_it_started_with(tmp_path, data_yaml, caplog, monkeypatch) -> None:
    """Labels edited between an interrupt and --resume (here: only whole notes left, a separate-
    object layout) do not change the gains mid-run: the checkpoint carries ``loss_used``."""
    root = tmp_path / "data"
    shutil.copytree(Path(data_yaml).parent, root)
    data = str(root / Path(data_yaml).name)
    original = trainer_module.Trainer.before_epoch

    def interrupt_at_epoch_1(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        original(self, epoch)

    monkeypatch.setattr(trainer_module.Trainer, "before_epoch", interrupt_at_epoch_1)
    assert _train(tmp_path, data, "--epochs", "2", "--name", "cut") == 130
    monkeypatch.setattr(trainer_module.Trainer, "before_epoch", original)
    last = tmp_path / "runs/train/cut/phase1/weights/last.pt"
    saved = torch.load(last, weights_only=True)["loss_used"]
    assert saved["gains"] == {"box": 1.0, "obj": 1.0, "cls": 1.0} and saved["label_layout"]["nested"] > 0
    _keep_whole_notes_only(root)  # now the labels read as separate objects
    caplog.set_level("INFO", logger="smartcash")
    assert _train(tmp_path, data, "--name", "cut", "--resume") == 0
    assert ("cls 0.5 (loss.json x gains {'box': 1.0, 'obj': 1.0, 'cls': 1.0}: recipe's loss_gains"
            f"{trainer_module.KEPT_ON_RESUME})") in caplog.text
    assert "(separate objects)" in caplog.text  # the layout is still reported as it is now
    used = read_yaml(tmp_path / "runs/train/cut/phase1/args.yaml")["loss_used"]
    assert used["gains"] == saved["gains"] and used["source"].endswith(trainer_module.KEPT_ON_RESUME)
    assert torch.load(last, weights_only=True)["loss_used"]["gains"] == saved["gains"]
