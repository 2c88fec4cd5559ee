"""The loader workers start each epoch while the previous one is validated (``loader.start_epoch``)."""

from __future__ import annotations

import torch

from smartcash.data.dataset_config import load_dataset_config
from smartcash.data.loader import build_dataloader, start_epoch
from smartcash.model.training import trainer as trainer_module
from tiny_training import tiny_dataset, train_tiny


def test_next_epoch_starts_before_validation_and_never_after_the_last(tmp_path, monkeypatch) -> None:
    events: list[tuple[str, int]] = []
    real_start, real_validate = trainer_module.start_epoch, trainer_module.Trainer.validate

    def spy_start(loader, epoch, mosaic=True):
        events.append(("start", epoch))
        return real_start(loader, epoch, mosaic)

    def spy_validate(self, epoch, *args, **kwargs):
        events.append(("validate", epoch))
        return real_validate(self, epoch, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "start_epoch", spy_start)
    monkeypatch.setattr(trainer_module.Trainer, "validate", spy_validate)
    data = tiny_dataset(tmp_path / "data")
    assert train_tiny(tmp_path, data, "--epochs", "3", "--name", "p", "--workers", "2") == 0  # persistent
    assert events == [("start", 0), ("start", 1), ("validate", 0), ("start", 2), ("validate", 1), ("validate", 2)]
    events.clear()  # without worker processes nothing is started early (a new iterator draws from the RNG)
    assert train_tiny(tmp_path, data, "--epochs", "2", "--name", "q", "--workers", "0") == 0
    assert events == [("start", 0), ("validate", 0), ("start", 1), ("validate", 1)]


def test_started_epoch_is_the_epoch_asked_for_with_persistent_workers(tmp_path) -> None:
    """Started early or late, an epoch's batches are the same: (seed, epoch, index) decide them."""
    config = load_dataset_config(tiny_dataset(tmp_path / "data"))

    def loader():
        return build_dataloader(config, "train", 64, 4, workers=2, augment=True, shuffle=True, seed=0,
                                persistent_workers=True)

    early = loader()
    list(start_epoch(early, 0))
    started = start_epoch(early, 1, mosaic=False)  # made before anything else happens
    ahead = [batch.images.clone() for batch in started]
    late = loader()
    list(start_epoch(late, 0))
    list(start_epoch(late, 5))  # another epoch in between
    again = [batch.images.clone() for batch in start_epoch(late, 1, mosaic=False)]
    assert len(ahead) == len(again) == 2
    assert all(torch.equal(a, b) for a, b in zip(ahead, again))
    assert not torch.equal(ahead[0], [batch.images for batch in start_epoch(late, 0)][0])
