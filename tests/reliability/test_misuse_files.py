"""Misuse that used to give silently wrong data, write outside the output folder, lose a file or end
in a traceback (issue 13): importers, the splitter, a symlinked split, label caches, the registry,
and the permissions of the files SmartCash writes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smartcash.atomic import atomic_write_text, current_umask
from smartcash.data import check
from smartcash.data.dataset import YoloDataset
from smartcash.data.dataset_config import load_dataset_config
from smartcash.data.import_coco import main as coco_main
from smartcash.data.import_csv import main as csv_main
from smartcash.data.label_cache import cache_paths
from smartcash.data.split import main as split_main
from smartcash.model.training.checkpoint import save_checkpoint
from smartcash.model.training.registry import ModelRegistry, RegistryEntry
from smartcash.registry import main as registry_main

from .conftest import copy_dataset, one_error_line, tree_digest


def _jpeg(path: Path, size: tuple[int, int] = (64, 48), suffix_format: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(sum(size) + len(path.name)).integers(0, 255, (size[1], size[0], 3), np.uint8)
    Image.fromarray(pixels).save(path, format=suffix_format)
    return path


def _labels(folder: Path) -> dict[str, list[str]]:
    return {p.name: p.read_text().split("\n")[:-1] for p in sorted(folder.glob("*.txt"))}


def _all_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------------- importers

def test_csv_import_with_an_absolute_path_and_a_stem_collision(tmp_path, capsys) -> None:
    images = tmp_path / "pics"
    _jpeg(images / "x.jpg")
    _jpeg(images / "x.png", suffix_format="PNG")
    outside = _jpeg(tmp_path / "elsewhere" / "abs.jpg")
    rows = ["filename,width,height,class,xmin,ymin,xmax,ymax",
            "x.jpg,64,48,100,0,0,32,24", "x.png,64,48,l2_100,32,24,64,48", f"{outside},64,48,100,8,8,16,16"]
    (tmp_path / "boxes.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert csv_main(["--csv", str(tmp_path / "boxes.csv"), "--images", str(images), "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("3 images, 3 boxes")
    flat = "__".join(Path(str(outside)).parts[1:])  # the absolute path, flattened under --out
    assert _all_files(out) == sorted(["data.yaml", f"images/train/{flat}", "images/train/x.jpg",
                                      "images/train/x_1.png", f"labels/train/{Path(flat).stem}.txt",
                                      "labels/train/x.txt", "labels/train/x_1.txt"])
    assert not Path("/" + "__" + flat).exists() and not Path(f"/__{flat}").exists()
    labels = _labels(out / "labels/train")
    assert labels["x.txt"][0].startswith("0 0.25") and labels["x_1.txt"][0].startswith("1 0.75")  # no box lost


def test_coco_import_collision_polygon_only_and_unusable_annotations(tmp_path, capsys) -> None:
    images = tmp_path / "pics"
    _jpeg(images / "a.jpg")
    _jpeg(images / "a.png", suffix_format="PNG")
    _jpeg(images / "bad.jpg")
    _jpeg(images / "empty.jpg")
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
                       {"id": 2, "file_name": "a.png", "width": 64, "height": 48},
                       {"id": 3, "file_name": "bad.jpg", "width": 64, "height": 48},
                       {"id": 4, "file_name": "empty.jpg", "width": 64, "height": 48}],
            "categories": [{"id": 1, "name": "100"}],
            "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "bbox": [0, 0, 32, 24]},
                            {"id": 11, "image_id": 2, "category_id": 1, "bbox": [],  # polygon only
                             "segmentation": [[32, 24, 64, 24, 64, 48, 32, 48]]},
                            {"id": 12, "image_id": 3, "category_id": 1}]}  # no bbox, no polygon
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    out = tmp_path / "out"
    assert coco_main(["--json", str(tmp_path / "coco.json"), "--images", str(images), "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert report.startswith("3 images, 2 boxes")
    assert "image id 3 (bad.jpg): left out, none of its annotations could be used" in report
    assert _all_files(out / "labels") == ["train/a.txt", "train/a_1.txt", "train/empty.txt"]
    labels = _labels(out / "labels/train")
    assert labels["a.txt"] == ["0 0.250000 0.250000 0.500000 0.500000"]
    assert labels["a_1.txt"] == ["0 0.750000 0.750000 0.500000 0.500000"]
    assert labels["empty.txt"] == []  # no annotation at all: a background, as before


def test_importer_out_that_is_a_file_or_read_only(tmp_path, capsys) -> None:
    images = tmp_path / "pics"
    _jpeg(images / "x.jpg")
    (tmp_path / "boxes.csv").write_text("filename,width,height,class,xmin,ymin,xmax,ymax\nx.jpg,64,48,100,0,0,9,9\n")
    (tmp_path / "file").write_text("mine\n")
    argv = ["--csv", str(tmp_path / "boxes.csv"), "--images", str(images), "--out"]
    assert csv_main([*argv, str(tmp_path / "file")]) == 2
    assert "--out is a file" in one_error_line(capsys.readouterr().err)
    assert (tmp_path / "file").read_text() == "mine\n"
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert csv_main([*argv, str(locked / "out")]) == 2
    assert "read-only" in one_error_line(capsys.readouterr().err)


# ------------------------------------------------------------------------- split

def _split_source(root: Path) -> tuple[Path, Path]:
    images, labels = root / "images", root / "labels"
    for index in range(4):
        _jpeg(images / f"n{index}.jpg")
        labels.mkdir(parents=True, exist_ok=True)
        (labels / f"n{index}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    return images, labels


def test_split_with_the_wrong_labels_folder(tmp_path, capsys) -> None:
    images, _ = _split_source(tmp_path)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    assert split_main(["--images", str(images), "--labels", str(wrong), "--out", str(tmp_path / "out"),
                       "--ratios", "0.5", "0.5"]) == 2
    assert f"{wrong}: no label file for any of the 4 images" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_split_of_a_folder_holding_an_earlier_split(tmp_path, capsys) -> None:
    images, labels = _split_source(tmp_path)
    assert split_main(["--images", str(images), "--labels", str(labels), "--out", str(images / "split1"),
                       "--ratios", "0.5", "0.5"]) == 2
    assert "--out is inside --images" in one_error_line(capsys.readouterr().err)
    # An earlier split's output moved (or made by hand) inside the images folder.
    assert split_main(["--images", str(images), "--labels", str(labels), "--out", str(tmp_path / "s1"),
                       "--ratios", "0.5", "0.5"]) == 0
    capsys.readouterr()
    shutil.copytree(tmp_path / "s1", images / "s1")
    assert split_main(["--images", str(images), "--labels", str(labels), "--out", str(tmp_path / "s2"),
                       "--ratios", "0.5", "0.5"]) == 2
    assert f"holds an earlier dataset ({images / 's1'}/data.yaml)" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "s2").exists()


# ------------------------------------------------------------------------- datasets

def test_symlinked_train_images_keep_their_labels(tmp_path, good_data, capsys) -> None:
    data = copy_dataset(good_data, tmp_path / "ds")
    root = data.parent
    pictures = tmp_path / "pictures"
    shutil.move(root / "images/train", pictures)
    (root / "images/train").symlink_to(pictures, target_is_directory=True)
    config = load_dataset_config(data)
    dataset = YoloDataset(config, "train", 64, augment=False)
    assert sum(len(labels) for labels in dataset.labels) == sum(
        len(p.read_text().splitlines()) for p in (root / "labels/train").glob("*.txt"))  # every box, not 0
    assert cache_paths(config, "train")[0].parent == root / "labels"  # the cache beside the labels
    assert not any(p.suffix == ".cache" for p in tmp_path.iterdir())  # nothing beside the link target
    assert check.main(["--data", str(data)]) == 0
    assert "0 backgrounds" in capsys.readouterr().out


@pytest.mark.parametrize("content", ["[]", "null", "\"text\"", "{\"version\": 2, \"samples\": 5}"])
def test_label_cache_holding_odd_json_is_rescanned(content, tmp_path, good_data, caplog) -> None:
    data = copy_dataset(good_data, tmp_path / "ds")
    config = load_dataset_config(data)
    cache = cache_paths(config, "train")[0]
    cache.write_text(content)
    dataset = YoloDataset(config, "train", 64, augment=False)
    assert len(dataset) == 8
    assert json.loads(cache.read_text())["version"]  # rewritten as a real cache


# ------------------------------------------------------------------------- registry

def _entry(run_id: str, value: float) -> RegistryEntry:
    return RegistryEntry(id=run_id, phase=1, data="d.yaml", model="yolov5n", weights=f"{run_id}.pt",
                         metrics={"fitness": value})


def test_truncated_registry_is_kept_aside_and_the_run_registered(tmp_path, caplog) -> None:
    path = tmp_path / "registry.json"
    ModelRegistry(path).add(_entry("old/phase1", 0.1))
    truncated = path.read_text()[:40]
    path.write_text(truncated)
    ModelRegistry(path).add(_entry("new/phase1", 0.2))  # a training run that just finished
    assert [entry.id for entry in ModelRegistry(path).entries()] == ["new/phase1"]
    assert (tmp_path / "registry.json.corrupt1").read_text() == truncated  # the user's file, unchanged
    assert "kept it as" in caplog.text
    path.write_text("{")
    ModelRegistry(path).add(_entry("third/phase1", 0.3))
    assert (tmp_path / "registry.json.corrupt1").read_text() == truncated  # never overwritten
    assert (tmp_path / "registry.json.corrupt2").read_text() == "{"


def test_registry_with_odd_entries(tmp_path, capsys) -> None:
    path = tmp_path / "registry.json"
    ModelRegistry(path).add(_entry("good/phase1", 0.5))
    payload = json.loads(path.read_text())
    payload["runs"].update({"number": 5, "partial": {"id": "partial"}, "typed": {
        "id": "typed", "phase": 1, "data": "d", "model": None, "weights": "w"}})
    path.write_text(json.dumps(payload))
    assert registry_main(["--registry", str(path), "list"]) == 0
    captured = capsys.readouterr()
    assert "good/phase1" in captured.out and "Traceback" not in captured.err
    assert registry_main(["--registry", str(path), "best"]) == 0
    assert capsys.readouterr().out.startswith("good/phase1")
    assert registry_main(["--registry", str(path), "show", "partial"]) == 2
    assert "run 'partial' is not a valid entry (missing phase" in one_error_line(capsys.readouterr().err)
    ModelRegistry(path).add(_entry("next/phase1", 0.1))
    assert "number" in json.loads(path.read_text())["runs"]  # others' entries are kept as they are
    assert registry_main(["--registry", str(tmp_path), "list"]) == 2
    assert "is a folder, not a registry file" in one_error_line(capsys.readouterr().err)


# ------------------------------------------------------------------------- file modes

def test_written_files_get_the_umask_mode_not_0600(tmp_path) -> None:
    expected = 0o666 & ~current_umask()
    atomic_write_text(tmp_path / "results.csv", "epoch\n")
    save_checkpoint(tmp_path / "last.pt", {"model": {}})
    ModelRegistry(tmp_path / "registry.json").add(_entry("a/phase1", 0.1))
    for name in ("results.csv", "last.pt", "registry.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == expected, name
    os.chmod(tmp_path / "results.csv", 0o640)  # a mode the user chose survives a rewrite
    atomic_write_text(tmp_path / "results.csv", "epoch\n0\n")
    assert (tmp_path / "results.csv").stat().st_mode & 0o777 == 0o640


def test_importer_never_changes_its_sources(tmp_path, capsys) -> None:
    images = tmp_path / "pics"
    _jpeg(images / "x.jpg")
    (tmp_path / "boxes.csv").write_text("filename,width,height,class,xmin,ymin,xmax,ymax\nx.jpg,64,48,100,0,0,9,9\n")
    before = tree_digest(tmp_path)
    assert csv_main(["--csv", str(tmp_path / "boxes.csv"), "--images", str(images), "--out",
                     str(tmp_path / "out")]) == 0
    after = {key: value for key, value in tree_digest(tmp_path).items() if not key.startswith("out/")}
    assert after == before
