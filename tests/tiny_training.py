"""The tiny training run the trainer, recipe and tracker tests share: 8 train / 4 val synthetic
images at 64 px on the CPU, in-process through ``smartcash.train.main``."""

from __future__ import annotations

from pathlib import Path

from smartcash.data.synthetic import ensure_synthetic_dataset
from smartcash.train import main


def tiny_dataset(root: Path) -> str:
    """The tiny synthetic set's data.yaml under ``root``."""
    return str(ensure_synthetic_dataset(root=root, num_train=8, num_val=4, imgsz=64))


def train_tiny(tmp_path: Path, data_yaml: str, *flags: str, batch: int = 4, plots: bool = False,
               precise_bn_images: int | None = None) -> int:
    """``python -m smartcash.train`` on the tiny set with a short warm-up; runs go to tmp_path/runs."""
    settings = f"plots: {str(plots).lower()}\nwarmup_epochs: 0.5\n"
    if precise_bn_images is not None:
        settings += f"precise_bn_images: {precise_bn_images}\n"
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(settings)
    return main(["--data", data_yaml, "--imgsz", "64", "--batch", str(batch), "--workers", "0", "--device", "cpu",
                 "--project", str(tmp_path / "runs"), "--config", str(tiny), *flags])
