"""Training configuration: ``configs/default.yaml`` < ``--config`` YAML < CLI flags -> one frozen
``TrainConfig``, validated once here; the code below trusts it.

The numbers (LRs, warm-up, EMA, clip ...) live in ``configs/default.yaml``; this module only
knows their names and types.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import shlex
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from smartcash.atomic import atomic_write_text
from smartcash.cli import MAX_IMGSZ, PLAIN_FOLDER_NAME_RULE, is_plain_folder_name
from smartcash.model.training.records import RESULTS_COLUMNS
from smartcash.yaml_unique import UniqueKeyLoader

#: The loss terms a gain multiplies (loss.json's weights): recipes' ``loss_gains``, ``--loss-gains``.
LOSS_PARTS = ("box", "obj", "cls")

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
#: Config keys holding a path, where a leading ``~`` is the home folder (as a shell would expand it).
PATH_KEYS = ("project", "data", "weights")
#: Flags a ``--resume`` may change; everything else comes from the interrupted run's config.
RESUME_OVERRIDES = ("device", "workers", "threads", "cache", "epochs", "patience", "tensorboard", "mlflow")
#: What early stopping may track: fitness, and the results.csv columns of metrics and losses.
EARLY_STOP_METRICS = ("fitness", *(column for column in RESULTS_COLUMNS
                                   if column.startswith(("metrics/", "val/", "train/"))))


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs (see ``configs/default.yaml`` for the meaning of each)."""

    phase: int
    data: str | None
    model: str
    weights: str | None
    epochs: int
    imgsz: int | None
    imgsz_cpu: int
    imgsz_cuda: int
    batch: int
    workers: int
    cache: str
    threads: int | None
    device: str
    project: str
    name: str
    resume: bool
    exist_ok: bool
    seed: int
    augment: bool
    autoanchor: bool
    amp: bool
    plots: bool
    tensorboard: bool
    mlflow: bool
    recipe: str
    warmup_epochs: float | None
    nominal_batch: int | None
    close_mosaic: int | None
    loss_gains: dict[str, float] | None
    weight_decay: float
    beta1: float
    beta2: float
    final_lr_fraction: float
    warmup_beta1: float
    clip_grad_norm: float
    ema_decay: float
    ema_tau: float
    precise_bn_images: int
    patience: int
    early_stop_metric: str
    fitness_map50: float
    fitness_map50_95: float
    records_flush_every: int
    val_conf: float
    val_iou: float
    max_det: int
    presence_threshold: float
    predict_conf: float
    predict_iou: float

    @property
    def run_dir(self) -> Path:
        """``PROJECT/train/NAME/phaseN``."""
        return Path(self.project) / "train" / self.name / f"phase{self.phase}"

    def phase_dir(self, phase: int) -> Path:
        return Path(self.project) / "train" / self.name / f"phase{phase}"

    def command(self, phase: int, *flags: str) -> str:
        """The ``python -m smartcash.train`` line that reaches this run's ``phase`` (for hints)."""
        project = "" if self.project == default_values()["project"] else f" --project {shlex.quote(self.project)}"
        return " ".join((f"python -m smartcash.train --phase {phase} --name {shlex.quote(self.name)}{project}",
                         *flags))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (saved as ``args.yaml`` and inside every checkpoint)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "<dict>") -> TrainConfig:
        """Build and validate from a complete mapping (e.g. a checkpoint's ``config``)."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown}; valid keys: {sorted(known)}")
        missing = sorted(known - set(values))
        if missing:
            raise ConfigError(f"{source}: missing key(s) {missing} (see {DEFAULT_CONFIG})")
        hints = typing.get_type_hints(cls)
        typed = {name: _coerce(name, value, hints[name], source) for name, value in values.items()}
        for name in PATH_KEYS:  # ~/runs in a YAML (no shell to expand it) is the home folder's
            if isinstance(typed[name], str):
                typed[name] = os.path.expanduser(typed[name])
        config = cls(**typed)
        _validate(config, source)
        return config


def build_parser() -> argparse.ArgumentParser:
    """CLI flags. Every default is None so that only flags actually given override the YAML."""
    parser = argparse.ArgumentParser(
        prog="python -m smartcash.train",
        description="Two-phase SmartCash training (phase 1: frozen backbone; phase 2: all layers).")
    add = parser.add_argument
    add("--phase", type=int, choices=(1, 2), help="training phase (default 1)")
    add("--data", help="data.yaml (default: the built-in synthetic dataset)")
    from smartcash.model.build import MODEL_NAMES

    add("--model", choices=MODEL_NAMES)
    add("--weights", help="phase 1: pretrained weights; phase 2: default NAME/phase1 best.pt")
    add("--epochs", type=int)
    add("--imgsz", type=int, help="input size, multiple of 32 (default: imgsz_cpu / imgsz_cuda of configs/default.yaml)")
    add("--batch", type=int, help="batch size per process")
    add("--workers", type=int)
    add("--cache", help="decoded-image cache of the training images: none | ram | disk (default: "
        "configs/default.yaml's); batches are identical with each")
    add("--threads", type=int, help="torch CPU threads per process (default: its share of the cores; 1 on a busy machine)")
    add("--device", help="cpu | cuda | cuda:N | N (default: cuda if available)")
    add("--project", help="root folder of runs (default runs)")
    add("--name", help="run name (default exp)")
    add("--config", help="YAML overriding configs/default.yaml (flags override both)")
    add("--resume", action="store_const", const=True, default=None,
        help="continue PROJECT/train/NAME/phaseN/weights/last.pt")
    add("--exist-ok", dest="exist_ok", action="store_const", const=True, default=None,
        help="replace the previous run of this name and phase: delete its checkpoints (default: keep "
        "the run in phaseN/previous/<time>/; an unfinished one is refused: --resume it)")
    add("--recipe", help="auto | finetune | scratch | recipe.yaml (default auto: finetune when "
        "--weights loaded a pretrained backbone, else scratch; phase 2: phase 1's)")
    add("--precise-bn", dest="precise_bn_images", type=int,
        help="training images for BatchNorm re-estimation before each validation (0 = off)")
    add("--close-mosaic", dest="close_mosaic", type=int, help="last N epochs without mosaic")
    add("--loss-gains", dest="loss_gains", type=parse_loss_gains, metavar="PART=GAIN[,...]",
        help="multipliers of loss.json's box / obj / cls weights for this run, replacing the recipe's "
        "for the parts named (e.g. cls=0.5)")
    add("--patience", type=int, help="epochs without improvement before stopping (0 = never)")
    add("--seed", type=int)
    add("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
        help="TensorBoard event files in the run folder (needs the tensorboard package; default off)")
    add("--mlflow", action=argparse.BooleanOptionalAction, default=None,
        help="log to MLflow at MLFLOW_TRACKING_URI, else PROJECT/mlruns (needs mlflow or mlflow-skinny; default off)")
    return parser


def loss_gains_problem(gains: dict[str, float]) -> str | None:
    """Why these loss gains are refused (a part that is not box / obj / cls, a gain that is not finite
    and >= 0, all three at 0), or None: one check for the config, the recipes and the benchmark's flag."""
    unknown = sorted(set(gains) - set(LOSS_PARTS))
    if unknown:
        return f"unknown part(s) {unknown}: the parts are {', '.join(LOSS_PARTS)}"
    if not all(math.isfinite(gain) and gain >= 0 for gain in gains.values()):
        return "gains must be finite and >= 0"
    if set(gains) == set(LOSS_PARTS) and not any(gains.values()):
        return "every gain is 0: the loss would be 0 and nothing would be learned"
    return None


def parse_loss_gains(text: str) -> dict[str, float]:
    """``"cls=0.5,box=2"`` -> ``{"cls": 0.5, "box": 2.0}`` (the parts are checked with the config)."""
    gains: dict[str, float] = {}
    for item in (piece.strip() for piece in text.split(",")):
        part, equals, value = item.partition("=")
        try:
            if not equals:
                raise ValueError
            gain = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: expected PART=GAIN, e.g. cls=0.5") from None
        if part.strip() in gains:
            raise argparse.ArgumentTypeError(f"{part.strip()!r} given twice")
        gains[part.strip()] = gain
    return gains


def build_config(argv: list[str] | None = None) -> TrainConfig:
    """Parse ``argv``, merge default YAML < ``--config`` < flags, resolve device/imgsz, validate."""
    return config_from_arguments(vars(build_parser().parse_args(argv)))


def config_from_arguments(arguments: dict[str, Any]) -> TrainConfig:
    """``build_parser``'s parsed flags (None = not given) -> the config: default YAML < ``--config``
    < flags, device and imgsz resolved, validated."""
    args = dict(arguments)
    user_yaml = args.pop("config")
    values = default_values()
    if user_yaml is not None:
        override = read_yaml(user_yaml)
        unknown = sorted(set(override) - set(values))
        if unknown:
            raise ConfigError(f"{user_yaml}: unknown key(s) {unknown}; valid keys: {sorted(values)}")
        values.update(override)
    flags = {key: value for key, value in args.items() if value is not None}
    if isinstance(values.get("loss_gains"), dict) and "loss_gains" in flags:  # the flag names parts: merge
        flags["loss_gains"] = {**values["loss_gains"], **flags["loss_gains"]}
    values.update(flags)
    source = f"{user_yaml or DEFAULT_CONFIG} + command line"
    # One parser for the flag and the YAML: `device: 0` in a YAML is an int, and means GPU 0.
    device = values.get("device")
    values["device"] = resolve_device("" if device is None else str(device), source)
    if values.get("imgsz") is None:
        values["imgsz"] = values["imgsz_cuda"] if values["device"].startswith("cuda") else values["imgsz_cpu"]
    if values.get("threads") is None:
        values["threads"] = default_threads()
    return TrainConfig.from_dict(values, source)


def default_values() -> dict[str, Any]:
    """``configs/default.yaml`` as a mapping (a fresh copy; the file is read once per process).

    The one source of the product's default numbers: training, validation (conf, IoU, max_det,
    presence threshold, fitness weights) and prediction thresholds, and the default input size.
    """
    return dict(_default_values())


@functools.lru_cache(maxsize=1)
def _default_values() -> dict[str, Any]:
    return read_yaml(DEFAULT_CONFIG)


def default_threads() -> int:
    """torch threads per process: the cores this process may use, shared among torchrun's local
    processes (torch alone would give every process every core).

    Measured on 2 quiet cores with 2 loader workers (3 phase-1 epochs on the synthetic set): 27 s
    at 2 threads, 33 s at 1, so the loader workers do not call for fewer threads. On a machine
    other jobs also load, OpenMP threads that wait on each other make a step many times slower
    (benchmarks/bench_training.py, 1.5 s at 1 thread vs 7.2 s at 2): there use ``--threads 1``.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def resolve_device(device: str, source: str = "config") -> str:
    """``""`` -> cuda if available else cpu; ``"0"`` -> ``"cuda:0"``; checks CUDA is there."""
    import torch

    text = device.strip().lower()
    if text in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text.isdigit():
        text = f"cuda:{text}"
    if text == "cpu":
        return text
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(f"{source}: device {device!r} asked for CUDA but torch sees no GPU "
                              "(use --device cpu)")
        index = int(text[5:]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"{source}: device {device!r}: only {torch.cuda.device_count()} GPU(s)")
        return text
    raise ConfigError(f"{source}: device {device!r} not understood (cpu | cuda | cuda:N | N)")


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML mapping, or a ConfigError naming the file (and line) that is wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: config file not found") from error
    except IsADirectoryError as error:
        raise ConfigError(f"{path}: is a folder; --config takes a YAML file") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the config file ({error})") from error
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(error, 'problem', error)})") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    return data


def save_config(config: TrainConfig, path: str | os.PathLike[str],
                extra: dict[str, Any] | None = None) -> None:
    """Write ``args.yaml`` atomically: the config, then ``extra`` (e.g. the recipe a run resolved)."""
    atomic_write_text(path, yaml.safe_dump({**config.to_dict(), **(extra or {})}, sort_keys=False))


def _coerce(name: str, value: Any, hint: Any, source: str) -> Any:
    """Check ``value`` against the field's type; ints are accepted for floats."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ConfigError(f"{source}: {name} must not be empty")
    for kind in allowed:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and not isinstance(value, bool) and isinstance(value, (int, float, str)):
            try:  # a str: YAML 1.1 reads 1e-2 (no dot) as text
                number = float(value)
            except ValueError:
                continue
            if not math.isfinite(number):
                raise ConfigError(f"{source}: {name} must be a finite number, got {value!r}")
            return number
        if kind is str and isinstance(value, (str, Path)):
            return str(value)
        if typing.get_origin(kind) is dict and isinstance(value, dict):
            return {str(key): _coerce(f"{name}.{key}", item, float, source) for key, item in value.items()}
    wanted = " or ".join(getattr(kind, "__name__", str(kind)) for kind in allowed)
    raise ConfigError(f"{source}: {name} must be {wanted}, got {value!r}")


def _validate(config: TrainConfig, source: str) -> None:
    def fail(key: str, reason: str) -> None:
        raise ConfigError(f"{source}: {key}={getattr(config, key)!r}: {reason}")

    if config.phase not in (1, 2):
        fail("phase", "must be 1 (frozen backbone) or 2 (all layers)")
    from smartcash.model.build import MODEL_NAMES

    if config.model not in MODEL_NAMES:
        fail("model", f"must be one of {', '.join(MODEL_NAMES)}")
    for key in ("epochs", "batch", "records_flush_every", "max_det"):
        if getattr(config, key) < 1:
            fail(key, "must be >= 1")
    if config.nominal_batch is not None and config.nominal_batch < 1:
        fail("nominal_batch", "must be >= 1 (or null: the recipe's)")
    for key in ("workers", "patience", "seed", "precise_bn_images"):
        if getattr(config, key) < 0:
            fail(key, "must be >= 0")
    from smartcash.data.image_cache import CACHE_MODES

    if config.cache not in CACHE_MODES:
        fail("cache", f"must be one of {', '.join(CACHE_MODES)} (decoded training images in memory, "
             "as .npy files, or neither)")
    if config.threads is not None and config.threads < 1:
        fail("threads", "must be >= 1")
    for key in ("imgsz", "imgsz_cpu", "imgsz_cuda"):
        if getattr(config, key) is None or not 32 <= getattr(config, key) <= MAX_IMGSZ or getattr(config, key) % 32:
            fail(key, f"must be a multiple of 32 (the largest stride), from 32 to {MAX_IMGSZ}")
    for key in ("val_conf", "predict_conf", "presence_threshold"):
        if not 0 <= getattr(config, key) < 1:
            fail(key, "must be in [0, 1)")
    for key in ("val_iou", "predict_iou"):
        if not 0 < getattr(config, key) <= 1:
            fail(key, "must be in (0, 1]")
    for key in ("fitness_map50", "fitness_map50_95"):
        if not getattr(config, key) >= 0:
            fail(key, "must be >= 0")
    for key in ("clip_grad_norm", "ema_tau"):
        if not getattr(config, key) > 0:
            fail(key, "must be > 0")
    if not config.weight_decay >= 0:
        fail("weight_decay", "must be >= 0")
    problem = None if config.loss_gains is None else loss_gains_problem(config.loss_gains)
    if problem:
        fail("loss_gains", problem)
    for key in ("warmup_epochs", "close_mosaic"):
        if getattr(config, key) is not None and not getattr(config, key) >= 0:
            fail(key, "must be >= 0 (or null: the recipe's)")
    if config.recipe not in ("auto", "finetune", "scratch") and not Path(config.recipe).is_file():
        fail("recipe", "must be auto, finetune, scratch or the path of a recipe YAML")
    for key in ("beta1", "beta2", "warmup_beta1", "ema_decay"):
        if not 0 <= getattr(config, key) < 1:
            fail(key, "must be in [0, 1)")
    if not 0 < config.final_lr_fraction <= 1:
        fail("final_lr_fraction", "must be in (0, 1]")
    if not is_plain_folder_name(config.name):
        fail("name", PLAIN_FOLDER_NAME_RULE)
    if config.early_stop_metric not in EARLY_STOP_METRICS:
        fail("early_stop_metric", f"must be one of {', '.join(EARLY_STOP_METRICS)} (results.csv columns; "
             "losses are lower-is-better)")
    for key in ("data", "weights"):
        path = getattr(config, key)
        if path is not None and not Path(path).is_file():
            fail(key, "file not found")
    if not (config.device == "cpu" or config.device.startswith("cuda")):
        fail("device", "must be cpu, cuda or cuda:N")
    from smartcash.model.training.trackers import TRACKERS, missing_package

    for key in TRACKERS:
        hint = missing_package(key) if getattr(config, key) else None
        if hint:
            fail(key, f"the {key} package is not installed: {hint}, or turn it off (--no-{key})")
