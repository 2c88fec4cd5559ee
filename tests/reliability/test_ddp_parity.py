"""Two-process DDP (torchrun, gloo on CPU) reports the same validation metrics as one process
evaluating the same weights on the same data.

Under DDP the trainer validates on rank 0 alone, over the FULL val loader, with the EMA weights it
then saves. So the metrics a DDP run records for its last epoch must equal, to the bit, a plain
single-process validation of ``last.pt``'s EMA weights (same batch size, one thread each as
torchrun gives its workers): not half the val set, not another rank's weights.
"""

from __future__ import annotations

import socket

import torch

from smartcash.data.dataset_config import load_dataset_config
from smartcash.data.loader import build_dataloader
from smartcash.model.build import build_model
from smartcash.model.training.core.validation_executor import ValidationExecutor
from smartcash.model.training.records import read_results
from smartcash.taxonomy import Taxonomy

from .conftest import load_checkpoint_data, run_module, stray_files, train_argv


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ddp_validation_equals_single_process(tmp_path, good_data) -> None:
    argv = ["--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "smartcash.train",
            "--epochs", "1", *train_argv(good_data, tmp_path / "runs", "ddp"), "--batch", "2"]
    done = run_module("torch.distributed.run", argv, tmp_path, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs/train/ddp/phase1"
    checkpoint = load_checkpoint_data(run / "weights/last.pt")
    recorded = checkpoint["metrics"]  # the row rank 0 wrote for epoch 0
    assert len(read_results(run / "results.csv")) == 1 and recorded["epoch"] == 0
    assert checkpoint["iteration"] == 2  # 8 train images / 2 ranks / batch 2: the data was sharded
    assert stray_files(run / "weights") == []

    taxonomy = Taxonomy.from_dict(checkpoint["taxonomy"])
    model = build_model(checkpoint["model_name"], taxonomy.num_classes, anchors=checkpoint["anchors"])
    model.load_state_dict(checkpoint["ema"])
    dataset = load_dataset_config(good_data)
    loader = build_dataloader(dataset, "val", 64, batch_size=2, workers=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torchrun's default for each worker: same kernels, same bits
    try:
        single = ValidationExecutor(taxonomy, show_progress=False).run(model, loader, "cpu")
    finally:
        torch.set_num_threads(threads)

    assert single.metrics.num_images == len(dataset.images("val")) == 4
    expected = single.metrics_row()
    assert {key: recorded[key] for key in expected} == expected
    assert recorded["fitness"] == float(single.fitness)
    assert expected["val/box_loss"] > 0 and expected["val/obj_loss"] > 0  # not a vacuous comparison
