"""The splitter: deterministic, stratified by denomination when it can be, never moves files."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from smartcash.data import split as splitter
from smartcash.data.dataset_config import load_dataset_config
from smartcash.data.labels import parse_label_file
from smartcash.data.yolo_writer import format_label_lines
from smartcash.taxonomy import Taxonomy, load_taxonomy

RATIOS = (0.8, 0.1, 0.1)


def _make_dataset(root: Path, per_denomination: int, backgrounds: int = 3) -> tuple[Path, Path]:
    """Tiny images; each labelled with one note (whole + nominal) of a denomination, or none."""
    taxonomy = load_taxonomy()
    images, labels = root / "images", root / "labels"
    (images / "nested").mkdir(parents=True)
    labels.mkdir(parents=True)
    (labels / "nested").mkdir()
    pixel = np.zeros((4, 4, 3), np.uint8)
    nominal_of_main = {taxonomy.fine_to_main[i]: i for i in taxonomy.ids_in_layer(2)}
    for whole in taxonomy.ids_in_layer(1):
        main = taxonomy.fine_to_main[whole]
        for k in range(per_denomination):
            name = f"{'nested/' if k % 3 == 0 else ''}note{whole}_{k}"
            cv2.imwrite(str(images / f"{name}.png"), pixel)
            # A large whole-note box and a smaller nominal box: the whole note decides the stratum.
            boxes = np.array([[whole, 0.5, 0.5, 0.6, 0.4], [nominal_of_main[main], 0.6, 0.4, 0.1, 0.05],
                              [taxonomy.ids_in_layer(3)[0], 0.5, 0.5, 0.02, 0.4]])
            (labels / f"{name}.txt").write_text(format_label_lines(boxes))
    for k in range(backgrounds):
        cv2.imwrite(str(images / f"background_{k}.png"), pixel)
    return images, labels


def _denominations_per_split(out: Path) -> dict[str, set[int]]:
    taxonomy = load_taxonomy()
    found: dict[str, set[int]] = {}
    for split in ("train", "val", "test"):
        found[split] = set()
        for label in (out / "labels" / split).glob("*.txt"):
            boxes = parse_label_file(label, taxonomy.num_classes).boxes
            found[split] |= {taxonomy.fine_to_main[int(c)] for c in boxes[:, 0]
                             if taxonomy.layers[int(c)] == 1}
    return found


def test_stratified_every_denomination_in_every_split(tmp_path: Path) -> None:
    images, labels = _make_dataset(tmp_path / "source", per_denomination=10)
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "source").rglob("*"))
    result = splitter.split_dataset(images, labels, tmp_path / "out", RATIOS, seed=0)
    assert result.plan.stratified
    # 10 per denomination -> 8/1/1; 3 backgrounds: 2.4/0.3/0.3 -> 3/0/0 (largest remainder).
    assert result.plan.counts() == {"train": 8 * 7 + 3, "val": 7, "test": 7}
    per_split = _denominations_per_split(tmp_path / "out")
    assert all(found == set(range(7)) for found in per_split.values()), per_split
    # Never moves: the sources are all still there.
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "source").rglob("*")) == before
    config = load_dataset_config(result.data_yaml)
    assert len(config.images("train")) + len(config.images("val")) + len(config.images("test")) == 73
    assert result.data_yaml.read_text().count("images/") == 3


def test_too_few_images_falls_back_to_random(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    images, labels = _make_dataset(tmp_path / "source", per_denomination=4)
    with caplog.at_level(logging.INFO, logger="smartcash.data.split"):
        result = splitter.split_dataset(images, labels, tmp_path / "out", RATIOS, seed=0)
    assert not result.plan.stratified
    assert "fewer than 10 images" in caplog.text and "random split" in caplog.text
    assert sum(result.plan.counts().values()) == 7 * 4 + 3


def test_same_seed_same_assignment_other_seed_differs(tmp_path: Path) -> None:
    images, labels = _make_dataset(tmp_path / "source", per_denomination=10)
    first = splitter.split_dataset(images, labels, tmp_path / "a", RATIOS, seed=3)
    again = splitter.split_dataset(images, labels, tmp_path / "b", RATIOS, seed=3, mode="hardlink")
    other = splitter.split_dataset(images, labels, tmp_path / "c", RATIOS, seed=4, mode="symlink")
    assert first.plan.assignment == again.plan.assignment
    assert first.plan.assignment != other.plan.assignment
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.png"))
    assert files_a == files_b
    # Hard links share the source's inode; symlinks point at it; the source stays in place.
    linked = tmp_path / "b" / "images" / dict(again.plan.assignment)["note0_1.png"] / "note0_1.png"
    assert linked.stat().st_ino == (images / "note0_1.png").stat().st_ino
    symlinked = tmp_path / "c" / "images" / dict(other.plan.assignment)["note0_1.png"] / "note0_1.png"
    assert symlinked.is_symlink() and symlinked.resolve() == (images / "note0_1.png").resolve()


def test_cli_with_foreign_names_and_refuses_non_empty_out(tmp_path: Path) -> None:
    images, labels = _make_dataset(tmp_path / "source", per_denomination=2, backgrounds=1)
    names = [f"thing{i}" for i in range(load_taxonomy().num_classes)]
    out = tmp_path / "out"
    args = ["--images", str(images), "--labels", str(labels), "--out", str(out), "--ratios", "0.5", "0.5",
            "--seed", "1", "--names", *names]
    assert splitter.main(args) == 0
    assert load_dataset_config(out / "data.yaml").source_names == tuple(names)
    assert (out / "images" / "train" / "nested__note0_0.png").exists() or \
        (out / "images" / "val" / "nested__note0_0.png").exists()
    assert splitter.main(args) == 2  # out is no longer empty: nothing is overwritten
    assert splitter.main(args[:-len(names) - 1] + ["--names", "only_one"]) == 2  # ids beyond the names


def test_names_and_class_map_from_a_dataset_yaml(tmp_path: Path) -> None:
    images, labels = _make_dataset(tmp_path / "source", per_denomination=10, backgrounds=0)
    taxonomy = load_taxonomy()
    thread = taxonomy.ids_in_layer(3)[0]
    names = list(taxonomy.names)
    names[thread] = "my_thread"
    data = tmp_path / "source" / "data.yaml"
    data.write_text(yaml.safe_dump({"train": "images", "names": names,
                                    "class_map": {"my_thread": taxonomy.names[thread]}}))
    result = splitter.split_dataset(images, labels, tmp_path / "out", (0.9, 0.1), seed=0, data=data)
    assert result.plan.stratified and result.plan.counts() == {"train": 63, "val": 7}
    config = load_dataset_config(result.data_yaml)
    assert config.source_names == tuple(names) and config.class_index == tuple(range(taxonomy.num_classes))


def test_strata_rules() -> None:
    taxonomy = load_taxonomy()
    identity = tuple(range(taxonomy.num_classes))
    nominal = taxonomy.ids_in_layer(2)[3]
    feature = taxonomy.ids_in_layer(3)[0]
    boxes = np.array([[feature, 0.5, 0.5, 0.9, 0.9], [nominal, 0.5, 0.5, 0.2, 0.1]], np.float32)
    expected = f"denomination:{taxonomy.main_names[taxonomy.fine_to_main[nominal]]}"
    assert splitter.image_stratum(boxes, identity, taxonomy) == expected  # features never decide
    assert splitter.image_stratum(boxes[:1], identity, taxonomy) == splitter.FEATURES_ONLY
    assert splitter.image_stratum(boxes[:0], identity, taxonomy) == splitter.BACKGROUND
    foreign = Taxonomy.identity([f"c{i}" for i in range(taxonomy.num_classes)])
    assert splitter.image_stratum(boxes, identity, foreign) == f"class:c{feature}"  # own ids: largest box


def test_plan_split_ratios_validated() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        splitter.plan_split({"a": "x"}, (0.8, 0.3), seed=0)
    with pytest.raises(ValueError, match="2 .* or 3"):
        splitter.plan_split({"a": "x"}, (1.0,), seed=0)


@given(count=st.integers(0, 500),
       ratios=st.sampled_from([(0.8, 0.1, 0.1), (0.7, 0.3), (0.6, 0.2, 0.2), (0.5, 0.5)]))
def test_allocation_adds_up_and_is_fair(count: int, ratios: tuple[float, ...]) -> None:
    sizes = splitter._allocate(count, ratios)
    assert sum(sizes) == count
    assert all(abs(size - count * r) < 1 for size, r in zip(sizes, ratios))
    if count >= np.ceil(1 / min(ratios) - 1e-9):
        assert min(sizes) >= 1


def test_a_class_map_value_written_unquoted_survives_the_split(tmp_path: Path) -> None:
    images, labels = _make_dataset(tmp_path / "source", per_denomination=10, backgrounds=0)
    taxonomy = load_taxonomy()
    ten = taxonomy.names.index("10000_whole")
    names = list(taxonomy.names)
    names[ten] = "my_ten"
    data = tmp_path / "source" / "data.yaml"
    # `010` unquoted: the SmartCash alias of 10000_whole, which YAML alone reads as the octal int 8
    data.write_text(yaml.safe_dump({"train": "images", "names": names}) + "class_map: {my_ten: 010}\n")
    result = splitter.split_dataset(images, labels, tmp_path / "out", (0.9, 0.1), seed=0, data=data)
    config = load_dataset_config(result.data_yaml)
    assert dict(config.class_map) == {"my_ten": "010"}
    assert config.class_index == tuple(range(taxonomy.num_classes))


@pytest.mark.parametrize(("flags", "message"), [
    (["--ratios", "nan", "0.5", "0.5"], "--ratios: [nan, 0.5, 0.5] must be positive and sum to 1"),
    (["--seed", "-1"], "--seed -1: must be an integer from 0 to 2**63 - 1"),
])
def test_nan_ratios_and_negative_seeds_are_refused(tmp_path: Path, flags: list[str], message: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Both ended in a numpy traceback."""
    images, labels = _make_dataset(tmp_path / "source", per_denomination=1, backgrounds=0)
    out = tmp_path / "out"
    assert splitter.main(["--images", str(images), "--labels", str(labels), "--out", str(out), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_names_given_twice_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = _make_dataset(tmp_path / "source", per_denomination=1, backgrounds=0)
    out = tmp_path / "out"
    assert splitter.main(["--images", str(images), "--labels", str(labels), "--out", str(out),
                          "--names", *(["x"] * 17)]) == 2
    assert "--names: 'x' is ids 0 and 1: each class needs its own name" in capsys.readouterr().err
    assert not out.exists()


def test_two_images_that_share_a_label_file_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """x.jpg and x.png both read x.txt: split copied the label to both (renaming one x_1), so the
    checker could no longer see the problem."""
    images, labels = _make_dataset(tmp_path / "source", per_denomination=1, backgrounds=0)
    first = sorted(images.rglob("*.png"))[0]
    cv2.imwrite(str(first.with_suffix(".jpg")), np.zeros((4, 4, 3), np.uint8))
    out = tmp_path / "out"
    assert splitter.main(["--images", str(images), "--labels", str(labels), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    key = first.relative_to(images).with_suffix("").as_posix()
    assert f"{key}.txt: label of several images ({first.stem}.jpg, {first.stem}.png all take its boxes" in error
    assert "(nothing was written)" in error
    assert not out.exists()


def test_macos_metadata_and_unread_formats_are_left_out_with_a_warning(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """split copied ``._x.png`` into the new dataset as an image (the checker then refused it) and
    dropped a .heic without a word."""
    images, labels = _make_dataset(tmp_path / "source", per_denomination=3)
    (images / "._note0_1.png").write_bytes(b"\x00\x05\x16\x07" + bytes(40))
    (images / "photo.heic").write_bytes(bytes(40))
    result = splitter.split_dataset(images, labels, tmp_path / "out", RATIOS, seed=0)
    assert sum(result.plan.counts().values()) == 7 * 3 + 3
    assert not list((tmp_path / "out").rglob("._*"))
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "left out 1 macOS metadata file (._note0_1.png" in messages
    assert "left out 1 image in formats SmartCash does not read (.heic: 1" in messages


def test_predict_source_folder_leaves_out_metadata_and_unread_formats(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    from smartcash.prediction_source import find_images

    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "._a.jpg").write_bytes(bytes(40))
    (tmp_path / "b.avif").write_bytes(bytes(40))
    assert find_images(tmp_path) == [tmp_path / "a.jpg"]
    assert "(.avif: 1; e.g." in " | ".join(r.getMessage() for r in caplog.records)
