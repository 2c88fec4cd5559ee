"""The epoch loop: ``Trainer.train()`` reads top to bottom; one optimisation step is ``optimization_step``.

Hooks, in the order they run: ``before_train`` (data, model, phase switch, resume), per epoch
``before_epoch`` (seeding) -> ``train_one_epoch`` -> ``after_epoch`` (validate the EMA weights,
checkpoint, record, early stopping), then ``after_train`` (plots, registry). Each hook hands
``RunReports`` (pictures, TensorBoard, MLflow) the plain data it shows; that work runs on a
background thread, never in the way of a batch.

Determinism (why a resumed CPU run ends bit-identical to an uninterrupted one): every RNG that
training touches is re-seeded from (seed, epoch, rank) at the start of each epoch, the LR schedule
is a pure function of (iteration, epoch), gradients never accumulate across an epoch boundary, and
checkpoints are written at epoch boundaries.

DDP: every rank trains on its DistributedSampler shard; rank 0 alone validates on the full val
loader, writes every file and broadcasts the early-stopping decision (simplest correct choice:
metrics see every val image exactly once, no gather of variable-size predictions).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from torch import nn

from smartcash.config import TrainConfig, save_config
from smartcash.data.layout import label_layout
from smartcash.data.loader import start_epoch
from smartcash.model.loss import YoloLoss
from smartcash.model.summary import count_gflops, model_summary
from smartcash.model.training import run_lock
from smartcash.model.training.checkpoint import (checkpoint_bytes, checkpoint_state, find_start_point, resume_from,
                                                 save_checkpoint)
from smartcash.model.training.optim import ModelEMA, group_lrs
from smartcash.model.training.core.validation_executor import (ValidationExecutor, ValidationResult,
                                                                ValidationSettings)
from smartcash.model.training.phases import enter_phase
from smartcash.model.training.precision import training_precision
from smartcash.model.training.recipe import PhaseRecipe, choose_recipe, resumed_recipe, warn_synthetic_backbone
from smartcash.model.training.records import ResultsWriter
from smartcash.model.training.reports import RunReports
from smartcash.model.training.run_data import build_data, build_precise_bn
from smartcash.model.training.run_folder import prepare_run_dir
from smartcash.model.training.run_outputs import register_run, validate_checkpoint, write_final_plots
from smartcash.model.training.step import (HOST_READ_INTERVAL, NonFiniteWatch, host_read_interval, optimization_step,
                                           unwrap)
from smartcash.model.training.stop_request import deferred_interrupts
from smartcash.model.training.starting_model import build_detector, estimate_random_backbone_statistics
from smartcash.model.training.trackers import FAILED, FINISHED, KILLED, RunInfo, build_trackers
from smartcash.taxonomy import load_loss_config

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from smartcash.data.dataset import Batch

logger = logging.getLogger(__name__)
#: Appended to the loss gains' source when a resumed run keeps the interrupted run's gains.
KEPT_ON_RESUME = ", kept from the interrupted run on --resume"
Item = TypeVar("Item")


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    best_weights: Path
    last_weights: Path
    best_epoch: int
    best_value: float
    epochs_completed: int
    stopped_early: bool
    metrics: dict[str, float] = field(default_factory=dict)  # the best epoch's results.csv row


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """One seed per (run seed, epoch, rank): resuming at epoch e replays epoch e exactly."""
    return (seed * 1_000_003 + epoch * 1_009 + rank) % 2**31


class ValidationHeartbeat:
    """The validation executor's progress callback: a log line at most every ``every_s`` seconds, so
    a long validation shows it is alive in a log file, where no progress bar is drawn."""

    def __init__(self, epoch: int, every_s: float = 60.0) -> None:
        self.epoch, self.every_s = epoch, every_s
        self.last = time.monotonic()

    def __call__(self, done: int, total: int, loss: float) -> None:
        now = time.monotonic()
        if now - self.last >= self.every_s and done != total:
            self.last = now
            logger.info("epoch %d: validated %d/%s batches, loss %.4f", self.epoch, done, total or "?", loss)


def _fitness_value(metric: str, row: dict[str, float]) -> float:
    if metric not in row:
        raise KeyError(f"early_stop_metric {metric!r} is not a results column ({', '.join(row)})")
    return float(row[metric])


class Trainer:
    """One training phase of one run. ``Trainer(config).train() -> TrainResult``.

    Args:
        config: the validated config (``config.data`` resolved to a data.yaml).
        distributed: rank / world size under torchrun.
    """

    def __init__(self, config: TrainConfig, distributed: Distributed | None = None) -> None:
        self.config = config
        self.dist = distributed or Distributed()
        self.run_dir = config.run_dir
        self.weights_dir = self.run_dir / "weights"
        device = torch.device(config.device)
        if device.type == "cuda" and self.dist.world_size > 1:
            device = torch.device("cuda", self.dist.local_rank)
        self.device = device
        self.precision = training_precision(config.amp, device)  # precision.py: AMP where it is native
        self.amp, self.amp_dtype = self.precision.amp, self.precision.dtype or torch.float32
        # NHWC lets half-precision convolutions run without layout transposes (tensor cores on
        # CUDA), and it is oneDNN's fast layout on a CPU in float32 too (yolov5n, 320 px, 1 thread:
        # phase 1 steps +20 %, phase 2 +35 %).
        self.channels_last = self.amp or device.type == "cpu"
        if config.threads:
            torch.set_num_threads(config.threads)  # leave cores to the loader workers (config.py)
        self.start_epoch = 0
        self.epoch = -1  # last completed epoch
        self._next_epoch: tuple[int, Iterator[Batch]] | None = None  # (epoch, its batches, workers at work)
        self.best_row: dict[str, float] = {}
        self.last_row: dict[str, float] = {}
        self.best_result: ValidationResult | None = None
        self.folder_lock: IO[str] | None = None  # rank 0: the run folder's lock file (run_lock.py)
        self.train_loader: DataLoader  # before_train, from here on
        self.val_loader: DataLoader | None
        self.reports = RunReports.off()  # rank 0: pictures and trackers (before_train)
        self.watch: NonFiniteWatch | None = None  # the current epoch's (train_one_epoch)

    # ------------------------------------------------------------------ the loop
    def train(self) -> TrainResult:
        try:
            self.before_train()
            stopped_early = False
            try:
                for epoch in range(self.start_epoch, self.config.epochs):
                    self.before_epoch(epoch)
                    started = time.perf_counter()
                    train_losses = self.train_one_epoch(epoch)
                    stopped_early = self.after_epoch(epoch, train_losses, time.perf_counter() - started)
                    if stopped_early:
                        break
            except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (train.py turns it into a KeyboardInterrupt)
                if self.dist.is_main:
                    if self._weights_finite():
                        self._save_checkpoints(improved=False, interrupted=True)
                        logger.warning("interrupted: saved %s; continue with --resume", self.weights_dir / "last.pt")
                    else:  # a non-finite loss not yet read (accelerator): keep the last good last.pt
                        logger.warning("interrupted after a non-finite loss: %s kept as it was",
                                       self.weights_dir / "last.pt")
                    self.records.flush()
                    self.reports.run_ended(KILLED)
                raise
            except BaseException:
                if self.dist.is_main:
                    try:
                        self.records.flush()  # the epochs that did finish are on disk; no checkpoint written
                    except OSError as flush_error:  # e.g. the same full disk: report the first error
                        logger.error("results not flushed: %s", flush_error)
                raise
            return self.after_train(stopped_early)
        finally:
            self.reports.close(FAILED)  # ends the trackers' run as failed unless it ended above; bounded wait
            run_lock.release(self.folder_lock)  # taken by before_train, before its first write

    # ------------------------------------------------------------------ hooks
    def before_train(self) -> None:
        """Data, model at its starting point, the phase switch, resume, DDP, run folder."""
        config, dist = self.config, self.dist
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its kernels
        if dist.is_main:  # fail fast when another run trains in this folder (locked for real below)
            run_lock.ensure_free(self.run_dir)
        start = find_start_point(config)  # first: a missing checkpoint fails fast
        data = build_data(config, dist.world_size, dist.is_main)
        self.taxonomy, self.train_loader, self.val_loader = data.taxonomy, data.train_loader, data.val_loader
        seed_everything(config.seed)  # identical initial weights on every rank and every run
        starting = build_detector(config, self.taxonomy, start, self.train_loader.dataset, self.device)
        model = starting.model
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # same Parameter objects, NHWC storage
        previous = start.state.get("recipe") if start.state is not None else None
        if start.resume and previous:  # exactly the recipe the interrupted run used
            self.recipe = resumed_recipe(previous)
        else:
            self.recipe = choose_recipe(config.recipe, config.phase, starting.pretrained_backbone, previous)
        phase_recipe = self.recipe.recipe.phase(config.phase)
        if config.recipe == "auto" and phase_recipe.freeze_backbone:
            warn_synthetic_backbone(starting.backbone_trained_on, self.train_loader.dataset.config.path, config.weights)
        logger.info("recipe %s (%s): %s", self.recipe.recipe.name, self.recipe.reason,
                    ", ".join(f"{key} {value}" for key, value in phase_recipe.to_dict().items()))
        if (start.state is None and phase_recipe.freeze_backbone and not starting.pretrained_backbone):
            estimate_random_backbone_statistics(model, self.train_loader.dataset, config, self.device)
        if dist.is_main:
            summary = model_summary(model)  # GFLOPs at 640, as YOLOv5 reports them
            at_imgsz = "" if config.imgsz == 640 else f", {count_gflops(model, config.imgsz):.1f} at {config.imgsz}"
            logger.info("%s%s", summary, at_imgsz)
            logger.info("precision: %s forward%s (%s)", self.precision.name,
                        ", channels_last" if self.channels_last else "", self.precision.reason)
        saved_loss = start.state.get("loss_used") if start.resume and start.state else None
        self.loss_fn = self._loss(model, phase_recipe, saved_loss)
        self.validator = ValidationExecutor(self.taxonomy, settings=ValidationSettings.from_values(config.to_dict()),
                                            show_progress=dist.is_main)
        self.phase_setup = enter_phase(config.phase, model, config, phase_recipe, len(self.train_loader),
                                       dist.world_size, self.validator)
        self.close_mosaic = phase_recipe.close_mosaic if config.close_mosaic is None else config.close_mosaic
        self.optimizer = self.phase_setup.optimizer
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.needs_grad_scaler)
        self.ema = ModelEMA(model, config.ema_decay, config.ema_tau)
        self.precise_bn = (build_precise_bn(config, self.train_loader.dataset)
                           if dist.is_main else None)
        if start.resume:
            resumed = resume_from(start.state, optimizer=self.optimizer, scaler=self.scaler, ema=self.ema,
                                  phase_setup=self.phase_setup)
            self.epoch, self.start_epoch, self.last_row = resumed.epoch, resumed.epoch + 1, resumed.last_row
            logger.info("resuming %s from epoch %d", start.path, self.start_epoch)
        self.model = model
        if dist.world_size > 1:
            # Frozen (requires_grad False) parameters are not registered by DDP, so phase 1
            # needs no find_unused_parameters.
            self.model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if dist.is_main:
            self.folder_lock = run_lock.acquire(self.run_dir)  # this run owns the folder from here to the end
            prepare_run_dir(config)
            resolved = {"recipe_used": self.recipe.to_dict(), "loss_used": self.loss_used}
            save_config(config, self.run_dir / "args.yaml", resolved)
            self.records = ResultsWriter(self.run_dir / "results.csv", config.records_flush_every,
                                         resume_before_epoch=self.start_epoch if start.resume else None,
                                         saved_rows=start.state.get("results") if start.resume else None)
            self.reports = RunReports(self.run_dir, self.taxonomy, build_trackers(config), pictures=config.plots)
            if self.reports.trackers:
                logger.info("trackers: %s", ", ".join(self.reports.trackers.names))
            params = {**config.to_dict(), **resolved}  # what args.yaml holds
            self.reports.run_started(RunInfo(self.run_dir, f"{config.name}/phase{config.phase}", params,
                                             start.resume, self.start_epoch), self.train_loader.dataset.labels)

    def before_epoch(self, epoch: int) -> None:
        """Re-seed every RNG from (seed, epoch, rank). The loader gets the epoch in train_one_epoch."""
        seed_everything(epoch_seed(self.config.seed, epoch, self.dist.rank))
        first_closing = max(self.config.epochs - self.close_mosaic, 0)
        if not self._mosaic(epoch) and epoch in (first_closing, self.start_epoch) and self.dist.is_main:
            logger.info("epoch %d: mosaic off for the last %d epochs", epoch, self.config.epochs - epoch)

    def _loss(self, model: nn.Module, phase_recipe: PhaseRecipe, saved: dict[str, Any] | None = None) -> YoloLoss:
        """The recipe's loss gains for the training labels' layout, then the run's --loss-gains;
        ``saved``: a resumed run's ``loss_used``, whose gains it keeps (its labels may have changed)."""
        layout = label_layout(self.train_loader.dataset.labels)
        if saved and saved.get("gains"):
            gains = {part: float(gain) for part, gain in saved["gains"].items()}
            source = str(saved.get("source", "recipe"))
            source += "" if source.endswith(KEPT_ON_RESUME) else KEPT_ON_RESUME
        else:
            gains = phase_recipe.loss_gains_for(layout.separate)
            source = ("recipe's loss_gains_separate" if layout.separate and phase_recipe.loss_gains_separate
                      else "recipe's loss_gains")
            if self.config.loss_gains:
                gains, source = {**gains, **self.config.loss_gains}, f"{source} + --loss-gains"
        scaled = dataclasses.replace(phase_recipe, loss_gains=gains, loss_gains_separate=None)
        loss = YoloLoss(model, load_loss_config(), scaled.effective_loss_gains(self.config.imgsz,
                                                                               self.taxonomy.num_classes))
        # What args.yaml records: the weights, the gains and where they came from, the layout behind them.
        self.loss_used = {"weights": {"box": loss.box_weight, "obj": loss.obj_weight, "cls": loss.cls_weight},
                          "gains": gains, "source": source,
                          "label_layout": {"boxes": layout.boxes, "nested": layout.nested}}
        logger.info("loss weights: box %.4g, obj %.4g, cls %.4g (loss.json x gains %s: %s%s); labels: %s",
                    loss.box_weight, loss.obj_weight, loss.cls_weight, gains, source,
                    "" if scaled.loss_scaling == "none"
                    else f", scaled as {scaled.loss_scaling} for {self.taxonomy.num_classes} classes",
                    layout.describe())
        return loss

    def _mosaic(self, epoch: int) -> bool:
        """The recipe's closing epochs train on whole images, the way the model is evaluated."""
        return epoch < self.config.epochs - self.close_mosaic

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        """Train over the loader; returns the mean weighted box/obj/cls losses of the epoch."""
        self.model.train()  # the Detector keeps a frozen backbone's BatchNorm in eval
        batches = len(self.train_loader)
        sums = torch.zeros(3, device=self.device)
        started, self._next_epoch = self._next_epoch, None  # started at the end of the previous epoch?
        epoch_batches = (started[1] if started is not None and started[0] == epoch
                         else start_epoch(self.train_loader, epoch, self._mosaic(epoch)))
        progress = self._progress(epoch_batches, f"phase {self.config.phase} epoch {epoch}", total=batches)
        schedule = self.phase_setup.schedule
        last_step = epoch * batches - 1  # gradients never accumulate across an epoch boundary
        read_every = host_read_interval(self.device)
        watch = self.watch = NonFiniteWatch(self.device)  # also read on an interrupt (_weights_finite)
        for index, batch in enumerate(progress):
            iteration = epoch * batches + index
            schedule.apply(self.optimizer, iteration, epoch)
            self.reports.learning_rates(iteration, self.optimizer)
            self.reports.train_batch(epoch, index, batch.images, batch.targets, batch.paths)  # host tensors
            batch = batch.to(self.device)
            images = batch.images.contiguous(memory_format=torch.channels_last) if self.channels_last else batch.images
            update = iteration - last_step >= schedule.batches_per_step(iteration) or index == batches - 1
            if update:
                last_step = iteration
            losses = optimization_step(
                self.model, images, batch.targets, self.loss_fn, self.optimizer, self.scaler,
                self.ema, update=update, clip_grad_norm=self.config.clip_grad_norm, amp=self.amp,
                where=(epoch, index), amp_dtype=self.amp_dtype, check_finite=read_every == 1)
            sums += torch.stack([losses.box, losses.obj, losses.cls]).detach().float()
            watch.update(losses, index)
            if index % HOST_READ_INTERVAL == 0 or index == batches - 1:  # the loop's only host read
                loss_per_image = watch.check(epoch, losses, len(batch.images))
                if hasattr(progress, "set_postfix"):
                    progress.set_postfix(loss=f"{loss_per_image:.4f}")
        if epoch + 1 < self.config.epochs and self.train_loader.persistent_workers:
            # Order and augmentation of every sample follow from (seed, epoch, index) (data/sampling.py),
            # so the persistent workers can start the next epoch now, while this one is validated.
            # (Without them a new iterator would spawn workers or draw from the global RNG before the
            # next epoch re-seeds it: a resumed run would not replay that draw.)
            try:
                self._next_epoch = (epoch + 1, start_epoch(self.train_loader, epoch + 1, self._mosaic(epoch + 1)))
            except RuntimeError as error:  # a worker died: this epoch is still validated and saved first;
                logger.debug("next epoch not started early: %s", error)  # the next one raises it again
        means = (sums / max(1, batches)).tolist()
        return {"train/box_loss": means[0], "train/obj_loss": means[1], "train/cls_loss": means[2]}

    def after_epoch(self, epoch: int, train_losses: dict[str, float], seconds: float) -> bool:
        """Validate the EMA weights (rank 0), checkpoint, record; True when early stopping fires.

        Ctrl-C or SIGTERM meanwhile is deferred (``stop_request.py``): it ends validation at its
        next stop check, and is raised when this block ends. A partial validation is not recorded and
        never becomes ``best.pt`` (``train()`` saves ``last.pt`` as for any interrupt); one that
        finished first is recorded and checkpointed as a complete epoch, so nothing of it is lost.
        """
        early_stop = torch.zeros(1, device=self.device)
        if self.dist.is_main:
            with deferred_interrupts() as stop_request:
                if self._validate_and_record(epoch, train_losses, seconds, stop_request):
                    early_stop.fill_(1)
        else:
            self.epoch = epoch
        if self.dist.world_size > 1:
            torch.distributed.broadcast(early_stop, src=0)  # every rank stops on rank 0's decision
        return bool(early_stop.item())

    def _validate_and_record(self, epoch: int, train_losses: dict[str, float], seconds: float,
                             stop_request: threading.Event) -> bool:
        """Rank 0's part of ``after_epoch``; True when early stopping fires."""
        precise = self.precise_bn(self.ema.module, self.device)
        result = self.validate(epoch, stop_request)
        if result.partial:
            fine = result.metrics.fine
            logger.warning("epoch %d: validation stopped after %d images (mAP50 %.4f mAP50-95 %.4f over those; "
                           "not recorded)", epoch, result.metrics.num_images, fine.map50, fine.map50_95)
            return False
        lrs = group_lrs(self.optimizer)
        row = {"epoch": epoch, "phase": self.config.phase, **train_losses, **result.metrics_row(),
               "fitness": float(result.fitness), "lr/backbone": lrs.get("backbone", 0.0),
               "lr/head": lrs.get("head", 0.0), "epoch_time_s": seconds}
        tracker = self.phase_setup.early_stopping
        improved = tracker.update(epoch, _fitness_value(tracker.metric, row))
        if improved:
            self.best_row, self.best_result = row, result
        self.epoch, self.last_row = epoch, row
        # Row first: a crash between the two writes then re-runs this epoch on --resume, and
        # ResultsWriter drops the row again, instead of a last.pt whose epoch has no row.
        self.records.add(row)
        self._save_checkpoints(improved=improved, interrupted=False)
        self.reports.epoch_done(epoch, row, result, improved)
        logger.info("epoch %d/%d: mAP50 %.4f mAP50-95 %.4f %s %.4f (best %.4f @ %d) %.1f s; precise BN "
                    "%d images, %.1f s", epoch, self.config.epochs - 1,
                    row.get("metrics/mAP50", float("nan")), row.get("metrics/mAP50-95", float("nan")),
                    tracker.metric, _fitness_value(tracker.metric, row), tracker.best,
                    tracker.best_epoch, seconds, precise.images, precise.seconds)
        if tracker.should_stop(epoch):
            logger.info("early stopping: no %s improvement for %d epochs (best %.4f at epoch %d)",
                        tracker.metric, tracker.patience, tracker.best, tracker.best_epoch)
            return True
        return False

    def after_train(self, stopped_early: bool) -> TrainResult:
        """Flush records, draw plots, register the run (rank 0)."""
        tracker = self.phase_setup.early_stopping
        result = TrainResult(self.run_dir, self.weights_dir / "best.pt", self.weights_dir / "last.pt",
                             tracker.best_epoch, tracker.best, self.epoch + 1, stopped_early, dict(self.best_row))
        if not self.dist.is_main:
            return result
        if self.start_epoch >= self.config.epochs:  # resumed with no epoch left: last.pt says it is done
            self._save_checkpoints(improved=False, interrupted=False)
        self.records.flush()
        if self.config.plots:
            best = self.best_result
            if best is None and result.best_weights.is_file():  # resumed after the best epoch
                best = validate_checkpoint(result.best_weights, self.ema.module, self.validator,
                                                     self.val_loader, self.device)
            for path in write_final_plots(self.run_dir, best, self.taxonomy):
                logger.info("plot: %s", path)
        if result.best_weights.is_file():
            register_run(self.config, result.best_weights, self.best_row or self.last_row,
                                   self.epoch + 1)
        self.reports.run_ended(FINISHED)
        return result

    # ------------------------------------------------------------------ pieces
    def validate(self, epoch: int, stop_request: threading.Event | None = None) -> ValidationResult:
        """Evaluate the EMA weights on the full val loader (rank 0); a set ``stop_request`` ends the
        loop at its next check, with a ``partial`` result."""
        return self.validator.run(self.ema.module, self.val_loader, self.device,
                                  keep_sample=self.reports.wants_validation_sample,
                                  progress_callback=ValidationHeartbeat(epoch), stop=stop_request)

    def _weights_finite(self) -> bool:
        """No non-finite loss this epoch (one host read): the live weights are worth saving."""
        return self.watch is None or float(self.watch.first_bad) < 0

    def _save_checkpoints(self, improved: bool, interrupted: bool) -> None:
        """``last.pt`` always, ``best.pt`` on improvement: one serialisation, two atomic writes."""
        state = checkpoint_state(
            config=self.config, taxonomy=self.taxonomy, recipe=self.recipe, model=unwrap(self.model), ema=self.ema,
            optimizer=self.optimizer, scaler=self.scaler, phase_setup=self.phase_setup, epoch=self.epoch,
            batches_per_epoch=len(self.train_loader), last_row=self.last_row, results=self.records.rows,
            interrupted=interrupted, loss_used=self.loss_used)
        data = checkpoint_bytes(state)
        save_checkpoint(self.weights_dir / "last.pt", data)
        if improved:
            save_checkpoint(self.weights_dir / "best.pt", data)

    def _progress(self, iterable: Iterable[Item], description: str, total: int | None = None) -> Iterable[Item]:
        if not self.dist.is_main:
            return iterable
        from tqdm import tqdm

        return tqdm(iterable, desc=description, total=total, leave=False, mininterval=2.0, dynamic_ncols=True)
