"""TrainConfig: default YAML < --config YAML < CLI, validation at the edge, args.yaml round trip."""

from __future__ import annotations

import os

import pytest
import yaml

from smartcash.config import DEFAULT_CONFIG, ConfigError, TrainConfig, build_config, read_yaml, save_config


def test_defaults_come_from_default_yaml(monkeypatch) -> None:
    config = build_config(["--device", "cpu"])
    defaults = yaml.safe_load(DEFAULT_CONFIG.read_text())
    assert config.phase == 1 and config.model == "yolov5n" and config.name == "exp"
    assert config.imgsz == 320  # resolved from the device: CPU
    assert config.recipe == "auto" and config.nominal_batch is None and config.warmup_epochs is None
    assert config.weight_decay == 1e-2 and config.clip_grad_norm == 10.0 and config.precise_bn_images == 128
    assert config.early_stop_metric == "fitness"
    for key, value in defaults.items():
        if key not in ("imgsz", "device", "threads"):
            assert getattr(config, key) == value, key
    # threads: the cores this process may use, shared among torchrun's processes on the node.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert build_config(["--device", "cpu"]).threads == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    assert build_config(["--device", "cpu"]).threads == 2
    assert build_config(["--device", "cpu", "--threads", "4"]).threads == 4
    with pytest.raises(ConfigError, match="threads"):
        build_config(["--device", "cpu", "--threads", "0"])


def test_cli_overrides_yaml_overrides_default(tmp_path) -> None:
    user = tmp_path / "mine.yaml"
    user.write_text("epochs: 7\nbatch: 3\nrecipe: finetune\nnominal_batch: 32\n")
    config = build_config(["--config", str(user), "--epochs", "5", "--device", "cpu", "--phase", "2"])
    assert config.epochs == 5  # CLI wins over the YAML
    assert config.batch == 3  # YAML wins over the default
    assert config.recipe == "finetune" and config.nominal_batch == 32 and config.phase == 2
    assert config.workers == read_yaml(DEFAULT_CONFIG)["workers"]


@pytest.mark.parametrize(("argv", "yaml_text", "message"), [
    (["--imgsz", "100"], "", "imgsz=100: must be a multiple of 32"),
    (["--epochs", "0"], "", "epochs=0: must be >= 1"),
    (["--patience", "-1"], "", "patience=-1: must be >= 0"),
    (["--name", "a/b"], "", "name='a/b': must be a plain folder name"),
    (["--name", "n" * 256], "", "must be a plain folder name (no '/', at most 255 bytes)"),  # Errno 36 after the build
    (["--data", "/no/such/data.yaml"], "", "data='/no/such/data.yaml': file not found"),
    (["--device", "tpu"], "", "device 'tpu' not understood"),
    ([], "epochs: ten\n", "epochs must be int, got 'ten'"),
    ([], "ema_decay: 1.5\n", "ema_decay=1.5: must be in [0, 1)"),
    ([], "learning_rate: 0.1\n", "unknown key(s) ['learning_rate']"),
    ([], "augment: 1\n", "augment must be bool"),
    (["--recipe", "fast"], "", "recipe='fast': must be auto, finetune, scratch or the path"),
    (["--precise-bn", "-1"], "", "precise_bn_images=-1: must be >= 0"),
    ([], "phase1_head_lr: 0.01\n", "unknown key(s) ['phase1_head_lr']"),
    ([], "epochs: [1\n", "invalid YAML"),
    (["--cache", "bogus"], "", "cache='bogus': must be one of none, ram, disk"),
    ([], "cache: RAM\n", "cache='RAM': must be one of none, ram, disk"),
    (["--loss-gains", "iou=2"], "", "loss_gains={'iou': 2.0}: unknown part(s) ['iou']: the parts are box, obj, cls"),
    (["--loss-gains", "cls=-1"], "", "loss_gains={'cls': -1.0}: gains must be finite and >= 0"),
    (["--loss-gains", "box=inf"], "", "loss_gains.box must be a finite number, got inf"),
    ([], "loss_gains: {cls: .nan}\n", "loss_gains.cls must be a finite number, got nan"),
    ([], "weight_decay: .inf\n", "weight_decay must be a finite number, got inf"),
    ([], "fitness_map50: .nan\n", "fitness_map50 must be a finite number, got nan"),
    ([], "epochs: 1\nepochs: 2\n", "bad.yaml:2: invalid YAML (key 'epochs' given twice)"),
    ([], "loss_gains: {cls: high}\n", "loss_gains.cls must be float, got 'high'"),
    ([], "loss_gains: 0.5\n", "loss_gains must be dict"),
    (["--loss-gains", "box=0,obj=0,cls=0"], "", "every gain is 0: the loss would be 0"),
    (["--imgsz", "8192"], "", "imgsz=8192: must be a multiple of 32 (the largest stride), from 32 to 4096"),
])
def test_bad_values_are_rejected_with_clear_messages(tmp_path, argv, yaml_text, message) -> None:
    if yaml_text:
        user = tmp_path / "bad.yaml"
        user.write_text(yaml_text)
        argv = [*argv, "--config", str(user)]
    with pytest.raises(ConfigError) as error:
        build_config([*argv, "--device", "cpu"] if "--device" not in argv else argv)
    assert message in str(error.value)


def test_bad_cli_choice_exits_with_usage() -> None:
    with pytest.raises(SystemExit):
        build_config(["--model", "yolov9"])
    for gains in ("cls", "cls=half", "", "cls=1,", "cls=1,cls=2"):
        with pytest.raises(SystemExit):
            build_config(["--loss-gains", gains])


def test_loss_gains_from_flag_or_yaml(tmp_path) -> None:
    assert build_config(["--device", "cpu"]).loss_gains is None  # the recipe's
    config = build_config(["--device", "cpu", "--loss-gains", "cls=0.5, box=2"])
    assert config.loss_gains == {"cls": 0.5, "box": 2.0}
    user = tmp_path / "mine.yaml"
    user.write_text("loss_gains: {obj: 1, cls: 2}\n")
    assert build_config(["--device", "cpu", "--config", str(user)]).loss_gains == {"obj": 1.0, "cls": 2.0}
    merged = build_config(["--device", "cpu", "--config", str(user), "--loss-gains", "cls=0.5"]).loss_gains
    assert merged == {"obj": 1.0, "cls": 0.5}  # the flag replaces the parts it names
    from smartcash.cli import argv_from_keywords
    from smartcash.config import build_parser

    argv = argv_from_keywords(build_parser(), {"loss_gains": {"cls": 0.5, "box": 2}}, "train")  # the Python API
    assert argv == ["--loss-gains=cls=0.5,box=2"]
    assert build_config(["--device", "cpu", *argv]).loss_gains == {"cls": 0.5, "box": 2.0}
    save_config(config, tmp_path / "args.yaml")
    assert TrainConfig.from_dict(read_yaml(tmp_path / "args.yaml"), "args.yaml") == config


def test_missing_config_file_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        build_config(["--config", str(tmp_path / "nope.yaml"), "--device", "cpu"])


def test_args_yaml_round_trip_and_frozen(tmp_path) -> None:
    config = build_config(["--device", "cpu", "--epochs", "3", "--seed", "11"])
    save_config(config, tmp_path / "args.yaml")
    again = TrainConfig.from_dict(read_yaml(tmp_path / "args.yaml"), "args.yaml")
    assert again == config
    with pytest.raises(AttributeError):
        config.epochs = 4  # type: ignore[misc]
    assert config.run_dir.as_posix() == "runs/train/exp/phase1"


def test_train_main_returns_2_on_bad_config(capsys) -> None:
    from smartcash.train import main

    assert main(["--imgsz", "33", "--device", "cpu"]) == 2
    assert "imgsz=33" in capsys.readouterr().err
    assert main(["--cache", "bogus", "--device", "cpu"]) == 2
    assert "cache='bogus': must be one of none, ram, disk" in capsys.readouterr().err


def test_validation_and_prediction_numbers_come_from_default_yaml(tmp_path) -> None:
    from smartcash import predict, val
    from smartcash.model.training.core.validation_executor import ValidationSettings

    defaults = yaml.safe_load(DEFAULT_CONFIG.read_text())
    override = tmp_path / "override.yaml"
    override.write_text("val_conf: 0.01\nmax_det: 100\npresence_threshold: 0.5\nfitness_map50: 0.5\n")
    config = build_config(["--device", "cpu", "--config", str(override)])
    settings = ValidationSettings.from_values(config.to_dict())  # what the trainer's validator gets
    assert settings == ValidationSettings(0.01, defaults["val_iou"], 100, 0.5, (0.5, defaults["fitness_map50_95"]))
    assert ValidationSettings.defaults().conf_threshold == defaults["val_conf"]
    val_args = val.build_parser().parse_args(["--weights", "w.pt"])
    assert (val_args.conf, val_args.iou) == (defaults["val_conf"], defaults["val_iou"])
    predict_args = predict.build_parser().parse_args(["--weights", "w.pt", "--source", "x"])
    assert (predict_args.conf, predict_args.iou, predict_args.max_det) == (
        defaults["predict_conf"], defaults["predict_iou"], defaults["max_det"])
    with pytest.raises(ConfigError, match="val_iou"):
        build_config(["--device", "cpu", "--config", str(_write(tmp_path / "bad.yaml", "val_iou: 0\n"))])


def _write(path, text: str):
    path.write_text(text)
    return path


def test_yaml_numbers_and_home_paths_as_a_user_writes_them(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home/ds").mkdir(parents=True)
    (tmp_path / "home/ds/data.yaml").write_text("train: images\nval: images\nnames: [a]\n")
    user = tmp_path / "mine.yaml"
    # YAML 1.1 reads 1e-2 (no dot) as text; ~ has no shell to expand it inside a YAML
    user.write_text("weight_decay: 1e-2\nproject: ~/smartcash_runs\ndata: ~/ds/data.yaml\n")
    config = build_config(["--config", str(user), "--device", "cpu"])
    assert config.weight_decay == 0.01
    assert config.project == str(tmp_path / "home/smartcash_runs") and config.data == str(tmp_path / "home/ds/data.yaml")
