"""The synthetic Rupiah dataset: deterministic, complete (17 classes), sane boxes, generated once."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from smartcash.data import synthetic
from smartcash.data.errors import DatasetError
from smartcash.data.dataset_config import load_dataset_config
from smartcash.data.labels import parse_label_file
from smartcash.taxonomy import load_taxonomy

SMALL = dict(seed=0, num_train=6, num_val=3, imgsz=192)


def _labels(data_yaml: Path) -> dict[str, np.ndarray]:
    """Boxes (n, 5) of every label file of the dataset, keyed by 'split/name'."""
    config = load_dataset_config(data_yaml)
    boxes = {}
    for split in ("train", "val"):
        for image in config.images(split):
            parsed = parse_label_file(config.label_path(image), config.num_source_classes)
            assert not parsed.problems, parsed.problems
            boxes[f"{split}/{image.name}"] = parsed.boxes
    return boxes


@pytest.fixture(scope="module")
def modest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-image generation, shared by the content checks."""
    return synthetic.ensure_synthetic_dataset(tmp_path_factory.mktemp("cache"), seed=1, num_train=30,
                                              num_val=10, imgsz=256)


def test_same_seed_same_files_and_default_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTCASH_CACHE", str(tmp_path / "env-cache"))
    first = synthetic.ensure_synthetic_dataset(**SMALL)
    # One thread instead of several: the thread count must not change a byte.
    second = synthetic.ensure_synthetic_dataset(tmp_path / "other", workers=1, **SMALL)
    assert first.parent.parent == tmp_path / "env-cache"
    assert first != second
    first_files = sorted(p.relative_to(first.parent) for p in first.parent.rglob("*") if p.is_file())
    second_files = sorted(p.relative_to(second.parent) for p in second.parent.rglob("*") if p.is_file())
    assert first_files == second_files
    assert len([f for f in first_files if f.parts[0] == "images"]) == 9
    for relative in first_files:
        if relative.parts[0] == "labels":
            assert (first.parent / relative).read_bytes() == (second.parent / relative).read_bytes()
        elif relative.parts[0] == "images":
            a = cv2.imread(str(first.parent / relative))
            b = cv2.imread(str(second.parent / relative))
            assert a.shape == (192, 192, 3)
            np.testing.assert_array_equal(a, b)


def test_other_seed_other_data(tmp_path: Path) -> None:
    a = synthetic.ensure_synthetic_dataset(tmp_path, **SMALL)
    b = synthetic.ensure_synthetic_dataset(tmp_path, **{**SMALL, "seed": 5})
    assert _labels(a).keys() == _labels(b).keys()
    assert any(not np.array_equal(x, y) for x, y in zip(_labels(a).values(), _labels(b).values()))


def test_all_classes_and_taxonomy_names(modest: Path) -> None:
    taxonomy = load_taxonomy()
    config = load_dataset_config(modest)
    assert config.source_names == taxonomy.names
    classes = np.concatenate([b[:, 0] for b in _labels(modest).values()]).astype(int)
    assert set(classes.tolist()) == set(range(taxonomy.num_classes))
    assert "synthetic" in (modest.parent / "README.md").read_text().lower()


def test_boxes_inside_image_and_nominal_inside_its_note(modest: Path) -> None:
    taxonomy = load_taxonomy()
    whole_of_main = {taxonomy.fine_to_main[i]: i for i in taxonomy.ids_in_layer(1)}
    nominal_ids = set(taxonomy.ids_in_layer(2))
    checked = 0
    for name, boxes in _labels(modest).items():
        xyxy = np.stack([boxes[:, 1] - boxes[:, 3] / 2, boxes[:, 2] - boxes[:, 4] / 2,
                         boxes[:, 1] + boxes[:, 3] / 2, boxes[:, 2] + boxes[:, 4] / 2], axis=1)
        assert (xyxy >= -1e-6).all() and (xyxy <= 1 + 1e-6).all(), name
        assert (boxes[:, 3:] > 0).all(), name
        for row, box in zip(boxes, xyxy):
            if int(row[0]) not in nominal_ids:
                continue
            whole = whole_of_main[taxonomy.fine_to_main[int(row[0])]]
            notes = xyxy[boxes[:, 0] == whole]
            tolerance = 2e-5  # label files hold 6 decimals
            inside = ((notes[:, :2] <= box[:2] + tolerance)
                      & (notes[:, 2:] >= box[2:] - tolerance)).all(axis=1)
            assert inside.any(), f"{name}: nominal box {row} is inside no {taxonomy.names[whole]} box"
            checked += 1
    assert checked >= 10


def test_some_backgrounds_and_several_notes(modest: Path) -> None:
    taxonomy = load_taxonomy()
    whole_ids = list(taxonomy.ids_in_layer(1))
    notes_per_image = [int(np.isin(b[:, 0], whole_ids).sum()) for b in _labels(modest).values()]
    assert max(notes_per_image) >= 2
    assert min(notes_per_image) == 0


def test_reused_not_regenerated(tmp_path: Path) -> None:
    data_yaml = synthetic.ensure_synthetic_dataset(tmp_path, **SMALL)
    image = sorted((data_yaml.parent / "images" / "train").iterdir())[0]
    stamps = (data_yaml.stat().st_mtime_ns, image.stat().st_mtime_ns)
    assert synthetic.ensure_synthetic_dataset(tmp_path, **SMALL) == data_yaml
    assert (data_yaml.stat().st_mtime_ns, image.stat().st_mtime_ns) == stamps
    assert [p.name for p in tmp_path.iterdir()] == [data_yaml.parent.name]  # no temporary folders left


def test_interrupted_generation_is_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("interrupted")

    with monkeypatch.context() as patch:
        patch.setattr(synthetic, "render_sample", broken)
        with pytest.raises(RuntimeError):
            synthetic.ensure_synthetic_dataset(tmp_path, **SMALL)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind
    # A temporary folder of a killed run is cleaned up once old; a folder without the completion
    # marker (left by something else) is rebuilt, never used.
    name = synthetic.dataset_dir_name(SMALL["seed"], SMALL["num_train"], SMALL["num_val"], SMALL["imgsz"])
    abandoned = tmp_path / f".tmp-{name}-killed"
    (abandoned / "images").mkdir(parents=True)
    os.utime(abandoned, (0, 0))
    directory = tmp_path / name
    (directory / "images").mkdir(parents=True)
    data_yaml = synthetic.ensure_synthetic_dataset(tmp_path, **SMALL)
    assert (directory / synthetic.MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert len(load_dataset_config(data_yaml).images("train")) == SMALL["num_train"]


def test_a_cache_folder_that_is_a_file_is_named(tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file")
    monkeypatch.setenv("SMARTCASH_CACHE", str(blocker))
    with pytest.raises(DatasetError, match=r"not_a_folder: the cache folder \(\$SMARTCASH_CACHE.*is not a folder"):
        synthetic.ensure_synthetic_dataset(num_train=2, num_val=1, imgsz=64)
    assert blocker.read_text() == "a file"
