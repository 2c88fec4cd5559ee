"""Training recipes: what each phase does (freeze, LRs, warm-up, accumulation, closing epochs
without mosaic, loss gains), chosen by the starting point.

A recipe is data, a YAML file in ``configs/recipes/`` (or a user's path) with a ``phase1`` and a
``phase2`` section. ``finetune`` keeps what a pretrained backbone knows (phase 1 head-only);
``scratch`` trains every layer from the start, since a random backbone has nothing to keep.
``choose_recipe`` resolves ``--recipe auto`` and says why, in one line that the trainer logs and
saves in ``args.yaml`` and the checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smartcash.config import LOSS_PARTS, ConfigError, loss_gains_problem, read_yaml

logger = logging.getLogger(__name__)

RECIPE_DIR = Path(__file__).resolve().parents[3] / "configs" / "recipes"
RECIPE_NAMES = ("finetune", "scratch")
#: Bias warm-up starts at most this many times a group's own LR (YOLOv5: 0.1 over lr0 0.01).
MAX_WARMUP_BIAS_FACTOR = 10.0


@dataclass(frozen=True)
class PhaseRecipe:
    """One phase of a recipe.

    Attributes:
        freeze_backbone: backbone out of the optimiser, its BatchNorm in eval.
        head_lr: LR of the neck + head (+ EfficientNet adapters).
        backbone_lr: LR of the backbone (ignored while frozen).
        warmup_epochs: epochs of linear warm-up (LRs from 0, biases down to theirs, beta1 up).
        warmup_max_fraction: the warm-up never takes more than this fraction of the phase (a short
            phase over a large dataset would otherwise spend most of itself warming up).
        warmup_bias_factor: biases start the warm-up at this multiple of their own LR (<= 10).
        warmup_accumulate: gradient accumulation ramps from 1 batch to ``nominal_batch`` images
            over the warm-up (more, smaller steps while the model is far from anything).
        nominal_batch: images per optimiser step (gradients accumulate up to it).
        close_mosaic: the last this many epochs train without mosaic (on the image sizes the
            model is evaluated at).
        loss_gains: multipliers of loss.json's box / obj / cls weights.
        loss_gains_separate: optional; the gains instead of ``loss_gains`` when the training labels
            are separate objects (almost no box inside another, as in photos of whole notes;
            ``smartcash.data.layout``). Absent or null: ``loss_gains`` whatever the layout.
        loss_scaling: ``yolov5`` also scales obj by (imgsz / 640)^2 (fewer cells, fewer
            negatives per image) and cls by nc / 80, as YOLOv5's train.py does to its hyps (which
            are set for 640 px and 80 classes); ``none`` uses the weights as they are.
    """

    freeze_backbone: bool
    head_lr: float
    backbone_lr: float
    warmup_epochs: float
    warmup_max_fraction: float
    warmup_bias_factor: float
    warmup_accumulate: bool
    nominal_batch: int
    close_mosaic: int
    loss_gains: dict[str, float]
    loss_scaling: str = "none"
    loss_gains_separate: dict[str, float] | None = None

    def loss_gains_for(self, separate_objects: bool) -> dict[str, float]:
        """The gains for training labels of this layout (``smartcash.data.layout``)."""
        return dict(self.loss_gains_separate if separate_objects and self.loss_gains_separate else self.loss_gains)

    def effective_loss_gains(self, imgsz: int, num_classes: int) -> dict[str, float]:
        """``loss_gains`` with ``loss_scaling`` applied for this image size and class count."""
        gains = dict(self.loss_gains)
        if self.loss_scaling == "yolov5":
            gains["obj"] *= (imgsz / 640) ** 2
            gains["cls"] *= num_classes / 80
        return gains

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str
    phases: dict[int, PhaseRecipe]

    def phase(self, phase: int) -> PhaseRecipe:
        return self.phases[phase]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source,
                **{f"phase{phase}": recipe.to_dict() for phase, recipe in self.phases.items()}}


@dataclass(frozen=True)
class RecipeChoice:
    """The recipe a run uses and why (one line, logged and saved)."""

    recipe: Recipe
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.recipe.to_dict(), "reason": self.reason}


def recipe_path(name_or_path: str) -> Path:
    if name_or_path in RECIPE_NAMES:
        return RECIPE_DIR / f"{name_or_path}.yaml"
    return Path(name_or_path)


def _phase_recipe(values: Any, where: str) -> PhaseRecipe:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of the phase's settings")
    fields = {field.name: field for field in dataclasses.fields(PhaseRecipe)}
    required = {name for name, field in fields.items() if field.default is dataclasses.MISSING}
    unknown, missing = sorted(set(values) - set(fields)), sorted(required - set(values))
    if unknown or missing:
        raise ConfigError(f"{where}: " + "; ".join(
            part for part in (f"unknown key(s) {unknown}" if unknown else "",
                              f"missing key(s) {missing}" if missing else "") if part)
            + f" (see {RECIPE_DIR / 'finetune.yaml'})")
    try:
        gains = _gains(values["loss_gains"])
        separate = None if values.get("loss_gains_separate") is None else _gains(values["loss_gains_separate"])
        recipe = PhaseRecipe(
            freeze_backbone=bool(values["freeze_backbone"]), head_lr=float(values["head_lr"]),
            backbone_lr=float(values["backbone_lr"]), warmup_epochs=float(values["warmup_epochs"]),
            warmup_max_fraction=float(values["warmup_max_fraction"]),
            warmup_bias_factor=float(values["warmup_bias_factor"]),
            warmup_accumulate=bool(values["warmup_accumulate"]), nominal_batch=int(values["nominal_batch"]),
            close_mosaic=int(values["close_mosaic"]), loss_gains=gains,
            loss_scaling=str(values.get("loss_scaling", "none")), loss_gains_separate=separate)
    except (TypeError, ValueError, KeyError) as error:
        raise ConfigError(f"{where}: {error!r} (loss_gains and loss_gains_separate need box, obj and cls "
                          "numbers)") from error
    checks = [
        (recipe.head_lr > 0, "head_lr must be > 0"),
        (recipe.freeze_backbone or recipe.backbone_lr > 0, "backbone_lr must be > 0 when the backbone trains"),
        (recipe.warmup_epochs >= 0, "warmup_epochs must be >= 0"),
        (0 < recipe.warmup_max_fraction <= 1, "warmup_max_fraction must be in (0, 1]"),
        (0 <= recipe.warmup_bias_factor <= MAX_WARMUP_BIAS_FACTOR,
         f"warmup_bias_factor must be in [0, {MAX_WARMUP_BIAS_FACTOR:g}] (a bias warm-up far above a "
         "group's own LR scrambles what it starts from)"),
        (recipe.nominal_batch >= 1, "nominal_batch must be >= 1"),
        (recipe.close_mosaic >= 0, "close_mosaic must be >= 0"),
        (not any(loss_gains_problem(each) for each in (gains, separate or {})),
         "loss_gains and loss_gains_separate must be finite and >= 0"),
        (recipe.loss_scaling in ("none", "yolov5"), "loss_scaling must be none or yolov5"),
    ]
    for ok, reason in checks:
        if not ok:
            raise ConfigError(f"{where}: {reason}")
    return recipe


def _gains(values: Any) -> dict[str, float]:
    """A recipe's box / obj / cls gains: exactly those parts, as numbers."""
    if not isinstance(values, dict) or set(values) != set(LOSS_PARTS):
        raise KeyError(f"parts {sorted(values) if isinstance(values, dict) else values!r}, expected {list(LOSS_PARTS)}")
    return {key: float(values[key]) for key in LOSS_PARTS}


def recipe_from_dict(saved: dict[str, Any], where: str = "checkpoint") -> Recipe:
    """The Recipe a checkpoint saved (``Recipe.to_dict()``), validated like a file."""
    phases = {phase: _phase_recipe(saved.get(f"phase{phase}"), f"{where}: recipe phase{phase}")
              for phase in (1, 2)}
    return Recipe(str(saved.get("name", "?")), str(saved.get("source", where)), phases)


def load_recipe(name_or_path: str) -> Recipe:
    """``finetune``, ``scratch`` or a recipe YAML path -> Recipe (validated)."""
    path = recipe_path(name_or_path)
    values = read_yaml(path)
    phases = {}
    for phase in (1, 2):
        if f"phase{phase}" not in values:
            raise ConfigError(f"{path}: no 'phase{phase}' section")
        phases[phase] = _phase_recipe(values[f"phase{phase}"], f"{path}: phase{phase}")
    name = name_or_path if name_or_path in RECIPE_NAMES else str(path)
    return Recipe(name, str(path), phases)


def choose_recipe(requested: str, phase: int, pretrained_backbone: bool,
                  previous: dict[str, Any] | None = None) -> RecipeChoice:
    """The recipe for this phase and the one-line reason.

    Args:
        requested: ``auto``, ``finetune``, ``scratch`` or a path (``--recipe``).
        phase: 1 or 2.
        pretrained_backbone: phase 1 loaded backbone weights from ``--weights``.
        previous: phase 2: the recipe phase 1 saved in its checkpoint (None for an older one).
    """
    if phase == 2 and previous and requested in ("auto", previous.get("name")):
        # Exactly the settings phase 1 ran with, even if the YAML changed since.
        return RecipeChoice(recipe_from_dict(previous),
                            f"{'auto' if requested == 'auto' else '--recipe ' + requested}: phase 1 "
                            f"trained with recipe {previous.get('name')}")
    if requested != "auto":
        why = f"--recipe {requested}"
        if previous and previous.get("name") != requested:
            why += f" (phase 1 used {previous.get('name')})"
        return RecipeChoice(load_recipe(requested), why)
    if phase == 2:
        return RecipeChoice(load_recipe("finetune"),
                            "auto: phase 1's checkpoint names no recipe (made before recipes): finetune")
    if pretrained_backbone:
        return RecipeChoice(load_recipe("finetune"),
                            "auto: --weights loaded a pretrained backbone, so phase 1 keeps it frozen")
    return RecipeChoice(load_recipe("scratch"),
                        "auto: no pretrained backbone was loaded (random weights have nothing to keep), "
                        "so every layer trains from the start")


def warn_synthetic_backbone(trained_on: str, data: str | os.PathLike[str], weights: str | None) -> None:
    """``auto`` keeps a loaded backbone frozen. One learnt on the built-in synthetic notes does not
    carry over to other data frozen (measured on the VND photographs: README "Learning", transfer),
    while every layer training from it does: say so when that is the starting point."""
    from smartcash.data.synthetic import is_builtin_synthetic

    if trained_on and is_builtin_synthetic(trained_on) and not is_builtin_synthetic(data):
        logger.warning("--weights %s learnt on SmartCash's built-in synthetic notes (%s): auto keeps that backbone "
                       "frozen (recipe finetune), which learnt far less on photographs than training every layer "
                       "from the same weights (README \"Learning\", transfer); pass --recipe scratch for that",
                       weights, trained_on)


def resumed_recipe(saved: dict[str, Any]) -> RecipeChoice:
    """``--resume``: the recipe and reason the interrupted run saved in ``last.pt``."""
    return RecipeChoice(recipe_from_dict(saved, "last.pt"), str(saved.get("reason", "resumed")))
