"""``python -m smartcash.train --phase {1,2}``: two-phase training (also under ``torchrun``), and
``train(**flags)`` for Python (``from smartcash import train``; this module is callable as it).

Exit codes (``smartcash.cli``): 0 done, 1 training stopped on an error (non-finite loss, bad
checkpoint or weights, data, a failed write such as a full disk), 2 bad configuration or a run
folder in use by another run, 130 interrupted with Ctrl-C, 143 stopped by SIGTERM (both: ``last.pt``
and ``results.csv`` saved; continue with --resume).
Under ``torchrun --nproc_per_node N`` (WORLD_SIZE > 1) the process group is initialised from the
environment: nccl on CUDA, gloo on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from smartcash.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, EXIT_USAGE, print_error
from smartcash.config import (DEFAULT_CONFIG, RESUME_OVERRIDES, ConfigError, TrainConfig, build_parser,
                              config_from_arguments, read_yaml)

if TYPE_CHECKING:
    from smartcash.model.training.trainer import TrainResult

logger = logging.getLogger("smartcash.train")


def resume_config(cli: TrainConfig, explicit: set[str]) -> TrainConfig:
    """The interrupted run's config (from its ``last.pt``), with the few flags a resume may change."""
    from smartcash.model.training.checkpoint import CheckpointError, load_checkpoint

    path = cli.run_dir / "weights" / "last.pt"
    hint = "nothing to resume: start without --resume"
    state = load_checkpoint(path, what="checkpoint to resume", hint=hint)
    saved = state.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: holds no training config; it cannot be resumed")
    if int(saved.get("phase", cli.phase)) != cli.phase:
        raise CheckpointError(f"{path}: is a phase {saved['phase']} checkpoint in a phase{cli.phase} folder; "
                              f"resume with --phase {saved['phase']}")
    changed = {key: getattr(cli, key) for key in RESUME_OVERRIDES if key in explicit}
    ignored = sorted(explicit - set(RESUME_OVERRIDES) - {"resume", "phase", "name", "project", "config"})
    if ignored:
        logger.warning("--resume continues %s with its saved settings; ignoring %s", path, ", ".join(ignored))
    done = int(state.get("epoch", -1)) + 1  # epochs completed
    if "epochs" in changed and changed["epochs"] <= done:
        logger.warning("--resume --epochs %d: %s has already trained %d epochs; nothing is left to train "
                       "(--epochs is the total: pass more than %d to train on)", changed["epochs"], path, done, done)
    # The run continues in the folder the user named, even when it was copied or moved there:
    # the saved project/name would point back at the run it was copied from.
    here = {"project": cli.project, "name": cli.name, "phase": cli.phase}
    if (saved.get("project"), saved.get("name")) != (cli.project, cli.name):
        logger.info("--resume: %s was saved as %s/train/%s; continuing it where it is now", path,
                    saved.get("project"), saved.get("name"))
    # Keys added to the config after this checkpoint was written (e.g. tensorboard, mlflow): defaults.
    added = {key: value for key, value in read_yaml(DEFAULT_CONFIG).items() if key not in saved}
    if added:
        logger.info("--resume: %s predates the key(s) %s; using their defaults", path, ", ".join(sorted(added)))
    return TrainConfig.from_dict({**added, **saved, **changed, **here, "resume": True}, source=f"{path} (config)")


class Terminated(KeyboardInterrupt):
    """SIGTERM received: handled as an interrupt (exit 143 instead of 130)."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler, ``kill``, torchrun) stops training the way Ctrl-C does: ``last.pt`` and
    ``results.csv`` are written and the loader workers shut down. A second SIGTERM kills at once.
    The previous handler is restored afterwards (tests call ``main`` in-process)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return
    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if os.getpid() != owner:  # a forked loader worker: die the default way
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _init_distributed(config: TrainConfig):
    from smartcash.model.training.trainer import Distributed

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    import torch.distributed

    backend = "nccl" if config.device.startswith("cuda") else "gloo"
    torch.distributed.init_process_group(backend=backend, init_method="env://")
    return Distributed(rank=torch.distributed.get_rank(), local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                       world_size=world_size)


def _resolve_data(config: TrainConfig, is_main: bool, world_size: int) -> TrainConfig:
    """No --data: the built-in synthetic dataset (generated once by rank 0, then shared)."""
    if config.data is not None:
        return config
    from smartcash.data.synthetic import ensure_synthetic_dataset

    if world_size > 1:
        import torch.distributed

        if is_main:
            ensure_synthetic_dataset()
        torch.distributed.barrier()
    return dataclasses.replace(config, data=str(ensure_synthetic_dataset()))


def training_config(arguments: dict[str, Any]) -> TrainConfig:
    """The run's config from parsed flags (None = not given); with ``resume``, the interrupted
    run's saved config with the few flags a resume may change.

    Raises:
        ConfigError: a bad flag or config value; CheckpointError: ``last.pt`` missing or unreadable.
    """
    from smartcash.model.training.run_folder import refuse_to_bury_an_unfinished_run

    config = config_from_arguments(arguments)
    if config.resume:
        explicit = {key for key, value in arguments.items() if value is not None}
        config = resume_config(config, explicit)
    refuse_to_bury_an_unfinished_run(config)
    return config


def run_training(config: TrainConfig) -> TrainResult:
    """Train one phase: the work of ``python -m smartcash.train`` after its flags are read.

    Under torchrun (WORLD_SIZE > 1) the process group is set up and torn down here. SIGTERM
    stops training as Ctrl-C does (a ``Terminated``, a KeyboardInterrupt, after saving).

    Raises:
        the training's own errors (``NonFiniteLossError``, ``DatasetError``, ``CheckpointError``,
        ``RunFolderBusyError``, ``OSError`` ...), KeyboardInterrupt.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")  # ultralytics blocks: never touch the network
    from smartcash.model.training.trainer import Trainer

    distributed = _init_distributed(config)
    try:
        with sigterm_as_interrupt():
            config = _resolve_data(config, distributed.is_main, distributed.world_size)
            return Trainer(config, distributed).train()
    finally:
        if distributed.world_size > 1:
            import torch.distributed

            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()


def train(**flags: Any) -> TrainResult:
    """Train one phase from Python: ``train(phase=1, data="data.yaml", epochs=30)``.

    Keywords are the flags of ``python -m smartcash.train`` without their dashes (``close_mosaic``
    for ``--close-mosaic``; True/False for ``resume``, ``tensorboard``, ``mlflow``), with the same
    defaults (``configs/default.yaml``, then a ``config=`` YAML).

    Returns:
        TrainResult: run folder, ``best.pt`` / ``last.pt``, best epoch and value, the best epoch's
        ``results.csv`` row (``metrics``).

    Raises:
        TypeError: an unknown keyword. ConfigError / UsageError (ValueError): a bad value. The
        training's errors as ``run_training``; KeyboardInterrupt after saving ``last.pt``.
    """
    from smartcash.cli import parse_keywords

    return run_training(training_config(vars(parse_keywords(build_parser(), flags, "train"))))


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    rank = int(os.environ.get("RANK", "0"))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("YOLO_OFFLINE", "1")  # ultralytics blocks: never touch the network
    from smartcash.model.training.checkpoint import CheckpointError

    try:
        config = training_config(vars(build_parser().parse_args(args)))
    except ConfigError as error:
        print_error(error)
        return EXIT_USAGE
    except CheckpointError as error:  # --resume: last.pt missing, unreadable or refused
        print_error(error)
        return EXIT_FAILED

    from smartcash.data.errors import DatasetError
    from smartcash.model.training.registry import RegistryError
    from smartcash.model.training.run_lock import RunFolderBusyError
    from smartcash.model.training.step import NonFiniteLossError
    from smartcash.model.weights import WeightsError

    try:
        result = run_training(config)
    except KeyboardInterrupt as interrupt:
        last = config.run_dir / "weights" / "last.pt"
        how = "terminated (SIGTERM)" if isinstance(interrupt, Terminated) else "interrupted"
        saved = f"{last} saved; continue with" if last.is_file() else "nothing saved yet; start again with"
        command = config.command(config.phase, *(("--resume",) if last.is_file() else ()))
        print(f"{how}: {saved} `{command}`", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(interrupt, Terminated) else EXIT_INTERRUPTED
    except RunFolderBusyError as error:  # another run of this name and phase is training
        print_error(error)
        return EXIT_USAGE
    except (NonFiniteLossError, CheckpointError, ConfigError, DatasetError, RegistryError, WeightsError) as error:
        print_error(error)
        return EXIT_FAILED
    except OSError as error:  # e.g. disk full while writing a checkpoint: the error names the file
        print_error(f"{error} (training stopped; files written before it are intact: fix the cause, "
                    "then continue with --resume)")
        return EXIT_FAILED
    if rank == 0:
        print(f"phase {config.phase} done: {result.epochs_completed} epochs"
              f"{' (early stop)' if result.stopped_early else ''}; best {config.early_stop_metric} "
              f"{result.best_value:.4f} at epoch {result.best_epoch}; weights {result.best_weights}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
else:
    from smartcash.cli import callable_module

    callable_module(__name__, train)
