"""``python -m smartcash.train --phase {1,2}``: two-phase training (also under ``torchrun``).

Exit codes: 0 done, 1 training stopped on an error (non-finite loss, bad checkpoint or weights,
data, a failed write such as a full disk), 2 bad configuration, 130 interrupted with Ctrl-C
(``last.pt`` saved; continue with --resume).
Under ``torchrun --nproc_per_node N`` (WORLD_SIZE > 1) the process group is initialised from the
environment: nccl on CUDA, gloo on CPU.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys

from smartcash.config import RESUME_OVERRIDES, ConfigError, TrainConfig, build_config, build_parser

logger = logging.getLogger("smartcash.train")


def resume_config(cli: TrainConfig, explicit: set[str]) -> TrainConfig:
    """The interrupted run's config (from its ``last.pt``), with the few flags a resume may change."""
    from smartcash.model.training.checkpoint import load_checkpoint

    path = cli.run_dir / "weights" / "last.pt"
    hint = "nothing to resume: start without --resume"
    saved = dict(load_checkpoint(path, what="checkpoint to resume", hint=hint)["config"])
    changed = {key: getattr(cli, key) for key in RESUME_OVERRIDES if key in explicit}
    ignored = sorted(explicit - set(RESUME_OVERRIDES) - {"resume", "phase", "name", "project", "config"})
    if ignored:
        logger.warning("--resume continues %s with its saved settings; ignoring %s", path, ", ".join(ignored))
    return TrainConfig.from_dict({**saved, **changed, "resume": True}, source=f"{path} (config)")


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


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    rank = int(os.environ.get("RANK", "0"))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("YOLO_OFFLINE", "1")  # ultralytics blocks: never touch the network
    from smartcash.model.training.checkpoint import CheckpointError

    try:
        config = build_config(args)
        if config.resume:
            explicit = {key for key, value in vars(build_parser().parse_args(args)).items() if value is not None}
            config = resume_config(config, explicit)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except CheckpointError as error:  # --resume: last.pt missing, unreadable or refused
        print(f"error: {error}", file=sys.stderr)
        return 1

    from smartcash.data.errors import DatasetError
    from smartcash.model.training.trainer import NonFiniteLossError, Trainer
    from smartcash.model.weights import WeightsError

    distributed = _init_distributed(config)
    try:
        config = _resolve_data(config, distributed.is_main, distributed.world_size)
        result = Trainer(config, distributed).train()
    except KeyboardInterrupt:
        print(f"interrupted: {config.run_dir / 'weights' / 'last.pt'} saved; continue with "
              f"`python -m smartcash.train --phase {config.phase} --name {config.name} --resume`",
              file=sys.stderr)
        return 130
    except (NonFiniteLossError, CheckpointError, ConfigError, DatasetError, WeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # e.g. disk full while writing a checkpoint: the error names the file
        print(f"error: {error} (training stopped; files written before it are intact: fix the cause, "
              "then continue with --resume)", file=sys.stderr)
        return 1
    finally:
        if distributed.world_size > 1:
            import torch.distributed

            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
    if distributed.is_main:
        print(f"phase {config.phase} done: {result.epochs_completed} epochs"
              f"{' (early stop)' if result.stopped_early else ''}; best {config.early_stop_metric} "
              f"{result.best_value:.4f} at epoch {result.best_epoch}; weights {result.best_weights}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
