"""One ultralytics training run from scratch (``yolov5nu.yaml``), for bench_learning to run as a subprocess.

    python -m benchmarks.ultralytics_train --data DATA.yaml --epochs E --imgsz S --batch B --workers W
        --threads T --seed SEED --device cpu --project DIR --name NAME --report REPORT.json

Its own process because ultralytics changes process-wide state (torch threads, deterministic
algorithms, ``OMP_NUM_THREADS``, a settings file). Everything is ultralytics' default
(``optimizer=auto``, its LR schedule, augmentation, ``close_mosaic=10``) except:
- ``pretrained=False, amp=False, plots=False`` (plots would download a font), ``exist_ok=True``;
- torch CPU threads = ``--threads`` (it would set ``min(8, cores - 1)``);
- loader workers = ``--workers`` (on CPU it forces 0; both tools get the same workers here);
- internet connections fail at once (``OSError``) instead of waiting on a timeout.
Writes ``--report``: the version, threads and workers it ran with, and the optimizer it built.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

INTERNET_FAMILIES = (socket.AF_INET, socket.AF_INET6)


def refuse_network() -> None:
    """Make internet connections and DNS lookups fail at once (``OSError``): a benchmark on a machine
    without a route out must not hang on a download. Local (Unix) sockets still work, which the
    loader workers use."""
    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def refused(address: Any) -> OSError:
        print(f"ultralytics_train: refused a network connection to {address!r}", file=sys.stderr)
        return OSError(f"network disabled by benchmarks.ultralytics_train (connection to {address!r})")

    def guarded_connect(self: socket.socket, address: Any) -> None:
        if self.family in INTERNET_FAMILIES:
            raise refused(address)
        return connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        if self.family in INTERNET_FAMILIES:
            raise refused(address)
        return connect_ex(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (None, "localhost", "127.0.0.1", "::1"):
            raise socket.gaierror(f"network disabled by benchmarks.ultralytics_train (lookup of {host!r})")
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = guarded_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = guarded_getaddrinfo  # type: ignore[assignment]


def describe_optimizer(optimizer: Any) -> dict[str, Any]:
    """What ``optimizer=auto`` built: its class and the first parameter group's starting settings."""
    group = optimizer.param_groups[0]
    return {"name": type(optimizer).__name__, "lr0": group.get("initial_lr", group.get("lr")),
            "momentum": group.get("momentum", (group.get("betas") or (None,))[0]),
            "weight_decay_groups": sorted({round(g.get("weight_decay", 0.0), 8) for g in optimizer.param_groups})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data.yaml in ultralytics' format")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--imgsz", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--device", default="cpu", help="ultralytics' spelling: cpu or a CUDA index")
    parser.add_argument("--project", required=True, help="absolute folder; the run is PROJECT/NAME")
    parser.add_argument("--name", required=True)
    parser.add_argument("--report", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    refuse_network()
    import torch  # before ultralytics, whose import would set its own OMP_NUM_THREADS

    torch.set_num_threads(args.threads)
    import ultralytics
    from ultralytics import YOLO
    from ultralytics.utils import torch_utils

    torch_utils.NUM_THREADS = args.threads  # select_device() calls torch.set_num_threads(NUM_THREADS)
    report: dict[str, Any] = {"ultralytics": ultralytics.__version__}

    def on_pretrain_routine_start(trainer: Any) -> None:
        trainer.args.workers = args.workers  # undo its CPU override (workers=0), as for SmartCash
        report["workers"] = trainer.args.workers

    def on_train_start(trainer: Any) -> None:
        report["optimizer"] = describe_optimizer(trainer.optimizer)

    def on_train_epoch_start(trainer: Any) -> None:
        report["threads"] = torch.get_num_threads()

    model = YOLO("yolov5nu.yaml")
    model.add_callback("on_pretrain_routine_start", on_pretrain_routine_start)
    model.add_callback("on_train_start", on_train_start)
    model.add_callback("on_train_epoch_start", on_train_epoch_start)
    model.train(data=args.data, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, workers=args.workers,
                device=args.device, pretrained=False, amp=False, plots=False, seed=args.seed,
                project=args.project, name=args.name, exist_ok=True, verbose=False)
    report["save_dir"] = str(model.trainer.save_dir)
    Path(args.report).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
