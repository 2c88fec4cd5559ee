"""Catalogue of broken inputs: for each, the checker's exact line(s) and exit 1, and training survives.

Per-sample cases add ONE bad (or odd but valid) file to a copy of a clean tiny set. For each case:
the problem lines ``python -m smartcash.data.check`` prints, exactly; the training dataset built
from it (label cache, loader) skips exactly the bad image, logs one summary warning, and decodes
every sample it kept. Then one real training run (1 epoch, 64 px) on a set holding every bad
sample at once exits 0 with ONE summary warning that counts them all. Dataset-yaml cases: the
checker's line, and the train CLI's documented exit code with an error naming the file.
"""

from __future__ import annotations

import io
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from smartcash.data import check
from smartcash.data.dataset import YoloDataset
from smartcash.data.dataset_config import load_dataset_config
from smartcash.train import main as train_main

from .conftest import copy_dataset, train_argv

GOOD_LINE = "0 0.5 0.5 0.25 0.25"
SHAPE_HINT = "(a box needs 5: class cx cy w h; a polygon needs class and 3+ x y pairs)"
CLASS_HINT = "is not an integer in 0..16 (the dataset yaml lists 17 names)"
OUTSIDE_HINT = "(more than 0.01 outside; labels must be normalised)"


@dataclass(frozen=True)
class Sample:
    """Adds one file (or image + label) under a dataset root; returns the expected problem lines.

    ``skipped``: the image is left out of training (False: only reported, or valid).
    """

    name: str
    make: Callable[[Path, str], list[str]]
    skipped: bool = True
    kind: str = ""  # the checker's "problems by reason" key; "" when valid


def _dirs(root: Path) -> tuple[Path, Path]:
    return root / "images" / "train", root / "labels" / "train"


def _jpeg_bytes(size: tuple[int, int] = (48, 40)) -> bytes:
    pixels = np.random.default_rng(sum(size)).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _image(root: Path, stem: str, data: bytes | None = None, suffix: str = ".jpg") -> Path:
    images, _ = _dirs(root)
    path = images / f"{stem}{suffix}"
    path.write_bytes(_jpeg_bytes() if data is None else data)
    return path.resolve()


def _label(root: Path, stem: str, text: str | bytes) -> Path:
    _, labels = _dirs(root)
    path = labels / f"{stem}.txt"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path.resolve()


def _bad_image(data: Callable[[], bytes], reason: Callable[[Path], str], suffix: str = ".jpg"):
    def make(root: Path, stem: str) -> list[str]:
        image = _image(root, stem, data(), suffix)
        _label(root, stem, GOOD_LINE + "\n")
        return [f"{image}: {reason(image)}"]
    return make


def _bad_line(line: str, reason: str, line_number: int = 2):
    """A good image whose label has a good first line, then ``line``."""
    def make(root: Path, stem: str) -> list[str]:
        _image(root, stem)
        label = _label(root, stem, f"{GOOD_LINE}\n{line}\n")
        return [f"{label}:{line_number}: {reason}"]
    return make


def _valid_label(text: str | bytes):
    def make(root: Path, stem: str) -> list[str]:
        _image(root, stem)
        _label(root, stem, text)
        return []
    return make


def _valid_image(data: Callable[[], bytes], suffix: str = ".jpg"):
    def make(root: Path, stem: str) -> list[str]:
        _image(root, stem, data(), suffix)
        _label(root, stem, GOOD_LINE + "\n")
        return []
    return make


def _binary_label(root: Path, stem: str) -> list[str]:
    _image(root, stem)
    label = _label(root, stem, b"\xff\xfe\x00garbage")
    return [f"{label}: unreadable label file ('utf-8' codec can't decode byte 0xff in position 0:"
            " invalid start byte)"]


def _other_format(format_name: str) -> Callable[[], bytes]:
    def data() -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(np.full((24, 24, 3), 90, dtype=np.uint8)).save(buffer, format=format_name)
        return buffer.getvalue()
    return data


def _truncated_png() -> bytes:
    data = _other_format("PNG")()
    return data[: len(data) // 2]


def _orphan(root: Path, stem: str) -> list[str]:
    label = _label(root, stem, GOOD_LINE + "\n")
    return [f"{label}: label without image (no image with this stem in the split; add the image or"
            " delete the label)"]


def _duplicate(root: Path, stem: str) -> list[str]:
    _image(root, stem)
    label = _label(root, stem, f"{GOOD_LINE}\n1 0.3 0.3 0.1 0.1\n{GOOD_LINE}\n")
    return [f"{label}:3: duplicate row (same as line 1), dropped"]


def _labelimg_classes_file(root: Path, stem: str) -> list[str]:
    _, labels = _dirs(root)
    (labels / "classes.txt").write_text("1000_whole\n2000_whole\n")  # labelImg writes one: not an orphan
    return []


def _unreadable_permissions(root: Path, stem: str) -> list[str]:
    image = _image(root, stem)
    _label(root, stem, GOOD_LINE + "\n")
    image.chmod(0)
    return [f"{image}: unreadable image ([Errno 13] Permission denied: '{image}')"]


SAMPLES = [
    # ---- images
    Sample("zero_byte_jpg", _bad_image(lambda: b"", lambda p: "0-byte image (an empty file)"),
           kind="0-byte image"),
    Sample("truncated_jpg", _bad_image(lambda: _jpeg_bytes()[: len(_jpeg_bytes()) // 2], lambda p: (
        "truncated image (JPEG has no end-of-image marker; re-export or delete it)")), kind="truncated image"),
    Sample("random_bytes_jpg", _bad_image(lambda: np.random.default_rng(1).bytes(512), lambda p: (
        f"unreadable image (cannot identify image file '{p}')")), kind="unreadable image"),
    Sample("html_page_jpg", _bad_image(lambda: b"<html><body>403 Forbidden</body></html>\n", lambda p: (
        f"unreadable image (cannot identify image file '{p}')")), kind="unreadable image"),
    # PIL reads TGA, OpenCV (which training decodes with) does not.
    Sample("tga_named_jpg", _bad_image(_other_format("TGA"), lambda p: (
        "unreadable image (TGA data, which OpenCV cannot decode; convert it to JPEG or PNG)")),
           kind="unreadable image"),
    Sample("truncated_png", _bad_image(_truncated_png, lambda p: "truncated image (Truncated File Read)",
                                       suffix=".png"), kind="truncated image"),
    Sample("tiny_5px_jpg", _bad_image(lambda: _jpeg_bytes((5, 5)), lambda p: "image smaller than 10 px (5x5)"),
           kind="image smaller than 10 px"),
    Sample("unreadable_permissions", _unreadable_permissions, kind="unreadable image"),
    # ---- label lines
    Sample("four_columns", _bad_line("0 0.5 0.5 0.2", f"wrong column count: 4 values {SHAPE_HINT}"),
           kind="wrong column count"),
    Sample("six_columns_with_confidence", _bad_line(
        "0 0.5 0.5 0.2 0.2 0.93", f"wrong column count: 6 values {SHAPE_HINT}"), kind="wrong column count"),
    Sample("comma_separated", _bad_line("0,0.5,0.5,0.2,0.2", f"wrong column count: 1 values {SHAPE_HINT}"),
           kind="wrong column count"),
    Sample("polygon_odd_coordinates", _bad_line(
        "0 0.1 0.1 0.9 0.1 0.9 0.9 0.1", f"wrong column count: 8 values {SHAPE_HINT}"),
           kind="wrong column count"),
    Sample("non_numeric", _bad_line("0 0.5 abc 0.2 0.2", "non-numeric value 'abc'"), kind="non-numeric value"),
    Sample("nan_coordinate", _bad_line("0 nan 0.5 0.2 0.2", "NaN/inf value in '0 nan 0.5 0.2 0.2'"),
           kind="NaN/inf value"),
    Sample("inf_size", _bad_line("0 0.5 0.5 inf 0.2", "NaN/inf value in '0 0.5 0.5 inf 0.2'"),
           kind="NaN/inf value"),
    Sample("class_out_of_range", _bad_line("17 0.5 0.5 0.2 0.2", f"class id 17 {CLASS_HINT}"),
           kind="class id out of range"),
    Sample("negative_class", _bad_line("-1 0.5 0.5 0.2 0.2", f"class id -1 {CLASS_HINT}"),
           kind="class id out of range"),
    Sample("fractional_class", _bad_line("2.5 0.5 0.5 0.2 0.2", f"class id 2.5 {CLASS_HINT}"),
           kind="class id out of range"),
    Sample("outside_unit_square", _bad_line(
        "0 0.5 1.5 0.2 0.2", f"coordinates outside [0,1]: box x 0.4..0.6, y 1.4..1.6 {OUTSIDE_HINT}"),
           kind="coordinates outside [0,1]"),
    Sample("pixel_coordinates", _bad_line(
        "0 320 240 64 48", f"coordinates outside [0,1]: box x 288..352, y 216..264 {OUTSIDE_HINT}"),
           kind="coordinates outside [0,1]"),
    Sample("zero_area", _bad_line("0 0.5 0.5 0 0.2", "zero-area box: w=0 h=0.2"), kind="zero-area box"),
    Sample("negative_size", _bad_line("0 0.5 0.5 -0.1 0.2", "zero-area box: negative size w=-0.1 h=0.2"),
           kind="zero-area box"),
    Sample("box_clipped_to_nothing", _bad_line("0 1.008 0.5 0.004 0.2", "zero-area box: w=0 h=0.2"),
           kind="zero-area box"),
    Sample("binary_label", _binary_label, kind="unreadable label file"),
    Sample("duplicate_rows", _duplicate, skipped=False, kind="duplicate row"),
    Sample("label_without_image", _orphan, skipped=False, kind="label without image"),
    # ---- odd but valid: no problem line, and training keeps the image
    Sample("whitespace_only_label_is_background", _valid_label(" \n\t\n  \n"), skipped=False),
    Sample("crlf_line_endings", _valid_label(f"{GOOD_LINE}\r\n1 0.3 0.3 0.1 0.1\r\n"), skipped=False),
    Sample("utf8_bom_label", _valid_label(f"\ufeff{GOOD_LINE}\n".encode()), skipped=False),
    Sample("polygon_becomes_box", _valid_label("3 0.2 0.2 0.8 0.25 0.7 0.9 0.25 0.8\n"), skipped=False),
    Sample("within_tolerance_is_clipped", _valid_label("0 0.5 0.5 1.018 0.5\n"), skipped=False),
    Sample("png_bytes_named_jpg", _valid_image(_other_format("PNG")), skipped=False),
    Sample("uppercase_JPG_suffix", _valid_image(_jpeg_bytes, ".JPG"), skipped=False),
    Sample("labelimg_classes_txt", _labelimg_classes_file, skipped=False),
]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _active(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if not (s.name == "unreadable_permissions" and IS_ROOT)]


def _checker_problem_lines(data: Path, capsys, *flags: str) -> tuple[int, list[str], list[str]]:
    """(exit code, the problem lines, the whole output) of the checker CLI."""
    code = check.main(["--data", str(data), *flags])
    out = capsys.readouterr().out.splitlines()
    return code, out[: out.index(f"dataset: {data}")], out


def _warnings(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.WARNING]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda sample: sample.name)
def test_checker_reason_and_training_dataset(sample: Sample, tmp_path, good_data, capsys, caplog) -> None:
    if sample.name == "unreadable_permissions" and IS_ROOT:
        pytest.skip("root reads a file with mode 000")
    data = copy_dataset(good_data, tmp_path / "ds")
    expected = sample.make(data.parent, sample.name)

    code, problems, out = _checker_problem_lines(data, capsys)
    assert problems == expected
    assert code == (1 if expected else 0)
    if sample.kind:
        assert f"  problems by reason: {sample.kind}: 1" in out
    else:
        assert out[-1] == "clean: no problems found"

    # Training's view of the same split: the label cache, the dataset, every kept sample decoded.
    caplog.set_level(logging.INFO)
    config = load_dataset_config(data)
    total = len(config.images("train"))
    dataset = YoloDataset(config, "train", 64, augment=True)
    items = [dataset[index] for index in range(len(dataset))]
    assert all(item.image.shape == (3, 64, 64) and bool(item.targets.isfinite().all()) for item in items)
    bad_images = [path for path in config.images("train") if path.stem == sample.name]
    summary = [record.getMessage() for record in _warnings(caplog)]
    if sample.skipped:
        assert len(dataset) == total - 1 and str(bad_images[0]) not in dataset.paths
        assert len(summary) == 1
        assert f"train: skipped 1 of {total} images with problems ({sample.kind}: 1);" in summary[0]
    else:
        assert len(dataset) == total and summary == []


def test_one_training_run_skips_every_bad_sample_with_one_warning(tmp_path, good_data, capsys, caplog) -> None:
    samples = _active(SAMPLES)
    data = copy_dataset(good_data, tmp_path / "ds")
    expected = [line for sample in samples for line in sample.make(data.parent, sample.name)]
    code, problems, _ = _checker_problem_lines(data, capsys, "--max-report", "1000")
    assert code == 1 and sorted(problems) == sorted(expected)

    caplog.set_level(logging.INFO)
    argv = train_argv(data, tmp_path / "runs", "bad", "--epochs", "1")
    assert train_main(argv) == 0
    total = len(load_dataset_config(data).images("train"))
    skipped = [sample for sample in samples if sample.skipped]
    warnings = _warnings(caplog)
    summaries = [record.getMessage() for record in warnings if "images with problems" in record.getMessage()]
    assert len(summaries) == 1, summaries  # one for the train split, none for the (clean) val split
    assert f"train: skipped {len(skipped)} of {total} images with problems (" in summaries[0]
    for kind, count in Counter(sample.kind for sample in samples if sample.kind).items():
        assert f"{kind}: {count}" in summaries[0]  # the checker's reason keys, counted
    per_sample = [record.getMessage() for record in warnings
                  if "images with problems" not in record.getMessage()
                  and any(sample.name in record.getMessage() for sample in samples)]
    assert per_sample == []  # never one line per bad file
    weights = tmp_path / "runs/train/bad/phase1/weights"
    assert (weights / "last.pt").is_file() and (weights / "best.pt").is_file()
    assert "phase 1 done: 1 epochs" in capsys.readouterr().out


# ---------------------------------------------------------------------------------- dataset yaml

NAMES = [  # the synthetic set's names: the SmartCash taxonomy
    "1000_whole", "2000_whole", "5000_whole", "10000_whole", "20000_whole", "50000_whole", "100000_whole",
    "1000_nominal_feature", "2000_nominal_feature", "5000_nominal_feature", "10000_nominal_feature",
    "20000_nominal_feature", "50000_nominal_feature", "100000_nominal_feature", "security_thread",
    "watermark", "special_sign"]


@dataclass(frozen=True)
class YamlCase:
    """A broken dataset yaml next to the good images. ``text``: the yaml (None: no file at all);
    ``reason(path, root)``: the checker's reason; the train CLI exits ``train_code`` with an error
    naming ``path`` (and containing ``train_error`` when given)."""

    name: str
    text: str | None
    reason: Callable[[Path, Path], str]
    train_code: int = 1
    train_error: str = ""


def _yaml(**values) -> str:
    return yaml.safe_dump({"train": "images/train", "val": "images/val", "names": NAMES, **values},
                          sort_keys=False)


def _yaml_error(text: str) -> str:
    try:
        yaml.safe_load(text)
    except yaml.YAMLError as error:
        return str(error)
    raise AssertionError("the malformed yaml parsed")


MALFORMED = "train: images/train\nval: [images/val\nnames: [a, b]\n"
UNMAPPED = [*NAMES[:16], "hologram"]
TAXONOMY_NAMES = ", ".join(NAMES)

YAML_CASES = [
    YamlCase("missing_file", None, lambda path, root: "dataset yaml not found (check --data)", 2,
             "file not found"),
    YamlCase("malformed", MALFORMED, lambda path, root: f"invalid yaml ({_yaml_error(MALFORMED)})", 1,
             "invalid yaml"),
    YamlCase("not_a_mapping", "- images/train\n- images/val\n",
             lambda path, root: "expected a mapping with train/val/names keys"),
    YamlCase("names_missing", yaml.safe_dump({"train": "images/train", "val": "images/val"}),
             lambda path, root: "needs `names:` (a list of class names, or a dict id: name)"),
    YamlCase("nc_disagrees", _yaml(nc=16), lambda path, root: "nc: 16 but names lists 17 classes (make them agree)"),
    YamlCase("names_dict_with_gap", _yaml(names={0: "a", 2: "b"}),
             lambda path, root: "names: ids [0, 2] must be exactly 0..1"),
    YamlCase("unknown_class_name_without_class_map", _yaml(names=UNMAPPED), lambda path, root: (
        f"class names ['hologram'] map to no SmartCash class (names and aliases in loss.json:"
        f" {TAXONOMY_NAMES}). Map them in the yaml, e.g.\nclass_map:\n  hologram: <a SmartCash class name>\n"
        "or rename them; a dataset whose names ALL differ trains with its own names.")),
    YamlCase("class_map_key_not_in_names", _yaml(class_map={"hologram": "watermark"}),
             lambda path, root: f"class_map keys ['hologram'] are not in names {NAMES}"),
    YamlCase("train_path_missing", _yaml(train="images/nowhere"), lambda path, root: (
        f"train split not found: images/nowhere (looked relative to {root} and, for absolute paths,"
        f" their trailing folders under {root}; fix the `train:` entry or remove it)")),
    YamlCase("val_path_missing", _yaml(val="/content/drive/MyDrive/set/valid/images"), lambda path, root: (
        f"val split not found: /content/drive/MyDrive/set/valid/images (looked relative to {root} and, for"
        f" absolute paths, their trailing folders under {root}; fix the `val:` entry or remove it)")),
    YamlCase("train_split_empty", _yaml(train="empty_folder"),
             lambda path, root: "train split has no images (in empty_folder)", 1, "no usable images"),
]


@pytest.mark.parametrize("case", YAML_CASES, ids=lambda case: case.name)
def test_yaml_problem_checker_line_and_train_exit_code(case: YamlCase, tmp_path, good_data, capsys) -> None:
    root = copy_dataset(good_data, tmp_path / "ds").parent.resolve()
    (root / "empty_folder").mkdir()
    path = root / f"{case.name}.yaml"
    if case.text is not None:
        path.write_text(case.text)

    if case.text is None:  # no file at all: bad usage for the checker too (README: exit 2)
        assert check.main(["--data", str(path)]) == 2
        assert capsys.readouterr().err == f"error: --data {path}: no such file\n"
    else:
        code, problems, _ = _checker_problem_lines(path, capsys)
        assert code == 1
        assert "\n".join(problems) == f"{path}: {case.reason(path, root)}"

    assert train_main(train_argv(path, tmp_path / "runs", "yaml", "--epochs", "1")) == case.train_code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(path) in err and case.train_error in err
    assert not (tmp_path / "runs/train").exists()  # refused before any run folder was made


def test_catalogue_is_at_least_twenty_kinds() -> None:
    broken = [sample for sample in SAMPLES if sample.kind]
    assert len(broken) + len(YAML_CASES) >= 20 and len({s.name for s in SAMPLES}) == len(SAMPLES)
