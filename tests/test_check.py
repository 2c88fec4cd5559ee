"""Dataset checks and the checker CLI: every bad-input kind gives its reason; nothing crashes."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from smartcash.data import check, checks, images, labels
from smartcash.data.checks import check_dataset
from smartcash.data.dataset_config import load_dataset_config
from smartcash.data.images import probe_image, read_image


def _jpeg(path, size=(40, 30), exif_orientation=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    pixels[:, : size[0] // 4] = (255, 0, 0)  # red band on the left: shows the rotation
    image = Image.fromarray(pixels)
    if exif_orientation is None:
        image.save(path, quality=95)
    else:
        exif = image.getexif()
        exif[0x0112] = exif_orientation
        image.save(path, quality=95, exif=exif.tobytes())
    return path


@pytest.fixture
def bad_dataset(tmp_path):
    """A split with one file of every bad kind, plus good ones."""
    root = tmp_path / "ds"
    train_images, train_labels = root / "train" / "images", root / "train" / "labels"
    train_labels.mkdir(parents=True)
    good = _jpeg(train_images / "good.jpg")
    (train_labels / "good.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n")  # duplicate: kept
    _jpeg(train_images / "background.jpg")  # no label: a background
    (train_images / "empty.jpg").write_bytes(b"")
    data = good.read_bytes()
    (train_images / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (train_images / "garbage.png").write_bytes(b"not an image at all")
    bad_lines = {"columns": "0 0.5 0.5 0.2", "text": "0 0.5 x 0.2 0.2", "nan": "0 nan 0.5 0.2 0.2",
                 "class": "9 0.5 0.5 0.2 0.2", "outside": "0 0.5 1.5 0.2 0.2", "zero": "0 0.5 0.5 0.0 0.2"}
    for name, line in bad_lines.items():
        _jpeg(train_images / f"{name}.jpg")
        (train_labels / f"{name}.txt").write_text(f"1 0.5 0.5 0.1 0.1\n{line}\n")
    (train_labels / "orphan.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "train/images", "val": "valid/images",
                                                    "names": ["a", "b"]}))
    return root / "data.yaml"


def test_every_bad_kind_is_reported_and_good_samples_kept(bad_dataset):
    report = check_dataset(bad_dataset, splits=("train",))
    (split,) = report.splits
    kinds = {(p.path.rsplit("/", 1)[-1], p.kind) for p in split.problems}
    assert kinds == {
        ("empty.jpg", images.EMPTY_IMAGE), ("truncated.jpg", images.TRUNCATED_IMAGE),
        ("garbage.png", images.UNREADABLE_IMAGE), ("columns.txt", labels.WRONG_COLUMNS),
        ("text.txt", labels.NON_NUMERIC), ("nan.txt", labels.NON_FINITE), ("class.txt", labels.BAD_CLASS),
        ("outside.txt", labels.OUTSIDE), ("zero.txt", labels.ZERO_AREA), ("good.txt", labels.DUPLICATE),
        ("orphan.txt", checks.LABEL_WITHOUT_IMAGE)}
    line_problems = [p for p in split.problems if p.path.endswith(".txt") and p.line]
    assert all(p.line == 2 for p in line_problems if not p.path.endswith("good.txt"))
    assert sorted(s.image.rsplit("/", 1)[-1] for s in split.samples) == ["background.jpg", "good.jpg"]
    assert split.num_images == 11 and split.num_labels == 7 and split.num_backgrounds == 1
    assert split.boxes_per_class(2).tolist() == [1, 0]
    assert not report.ok


def test_cli_lists_bounded_problems_and_exit_codes(bad_dataset, capsys):
    assert check.main(["--data", str(bad_dataset), "--split", "train", "--max-report", "3"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[3] == "... and 8 more"
    assert any(line.startswith("train: 11 images, 7 label files, 1 backgrounds, 1 boxes") for line in out)
    assert any("problems by reason:" in line and "duplicate row: 1" in line for line in out)
    # The missing val split: a note by default, a problem when asked for.
    assert check.main(["--data", str(bad_dataset), "--split", "val"]) == 1
    assert "val split not found" in capsys.readouterr().out


def test_cli_clean_dataset_exits_zero(tmp_path, capsys):
    _jpeg(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"train": "images", "val": "images",
                                                     "test": "/content/x/test/images", "names": ["a"]}))
    assert check.main(["--data", str(tmp_path / "d.yaml")]) == 0
    out = capsys.readouterr().out
    assert "clean: no problems found" in out and "note: test: not found on disk" in out


def test_a_yaml_without_train_or_val_is_a_problem_and_a_missing_yaml_a_usage_error(tmp_path, capsys):
    """Training reads both: an importer's output (train only) was called clean."""
    _jpeg(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"train": "images", "names": ["a"]}))
    assert check.main(["--data", str(tmp_path / "d.yaml")]) == 1
    out = capsys.readouterr().out
    assert "no `val:` entry: training needs train and val (smartcash.data.split makes them)" in out
    assert "no `train:` entry" not in out
    assert check.main(["--data", str(tmp_path / "missing.yaml")]) == 2
    assert f"--data {tmp_path / 'missing.yaml'}: no such file" in capsys.readouterr().err


def test_unknown_class_name_in_yaml_is_a_problem(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"train": "images", "names": ["001", "hologram"]}))
    report = check_dataset(tmp_path / "d.yaml")
    assert [p.kind for p in report.problems] == [checks.CONFIG_PROBLEM]
    assert "['hologram']" in report.problems[0].reason
    assert check.main(["--data", str(tmp_path / "d.yaml")]) == 1


def test_exif_rotated_jpeg_is_rotated(tmp_path):
    path = _jpeg(tmp_path / "rotated.jpg", size=(40, 30), exif_orientation=6)  # 90 deg clockwise
    image = read_image(path)
    assert image.shape == (40, 30, 3) and image.dtype == np.uint8
    probe = probe_image(path)
    assert (probe.height, probe.width) == (40, 30)
    # The red band, left in the stored pixels, is at the top after a clockwise turn.
    assert image[:5, :, 0].mean() > 200 and image[-5:, :, 0].mean() < 50


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_grey_rgba_and_16_bit_pngs_load_as_rgb_uint8(tmp_path, mode):
    if mode == "I;16":
        pixels = np.full((12, 16), 40000, dtype=np.uint16)
        image = Image.fromarray(pixels)
    elif mode == "RGBA":
        image = Image.fromarray(np.full((12, 16, 4), (10, 20, 30, 128), dtype=np.uint8), "RGBA")
    else:
        image = Image.fromarray(np.full((12, 16), 77, dtype=np.uint8), "L")
    image.save(tmp_path / "a.png")
    loaded = read_image(tmp_path / "a.png")
    assert loaded.shape == (12, 16, 3) and loaded.dtype == np.uint8
    expected = {"I;16": (156,) * 3, "RGBA": (10, 20, 30), "L": (77,) * 3}[mode]
    np.testing.assert_allclose(loaded[0, 0], expected, atol=1)
    assert probe_image(tmp_path / "a.png").ok


def test_list_file_subset_reports_no_orphans(tmp_path):
    for name in ("a", "b"):
        _jpeg(tmp_path / "images" / f"{name}.jpg")
        (tmp_path / "labels").mkdir(exist_ok=True)
        (tmp_path / "labels" / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "train.txt").write_text("images/a.jpg\n")
    (tmp_path / "val.txt").write_text("images/b.jpg\n")
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"train": "train.txt", "val": "val.txt", "names": ["a"]}))
    report = check_dataset(tmp_path / "d.yaml")
    assert report.ok and [len(s.samples) for s in report.splits] == [1, 1]


def _dataset_with_background_val(root, val_labels=""):
    """train: one labelled image; val: two images whose label files (if any) hold ``val_labels``."""
    _jpeg(root / "train" / "images" / "t.jpg")
    (root / "train" / "labels").mkdir(parents=True)
    (root / "train" / "labels" / "t.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    for name in ("v1", "v2"):
        _jpeg(root / "valid" / "images" / f"{name}.jpg")
    if val_labels:
        (root / "valid" / "labels").mkdir(parents=True)
        (root / "valid" / "labels" / "v1.txt").write_text(val_labels)
    (root / "d.yaml").write_text(yaml.safe_dump({"train": "train/images", "val": "valid/images",
                                                 "names": ["a"]}))
    return root / "d.yaml"


def test_val_split_without_boxes_is_a_warning_not_clean(tmp_path, capsys):
    data = _dataset_with_background_val(tmp_path)
    report = check_dataset(data)
    assert report.ok  # a warning: validating on backgrounds may be deliberate
    (warning,) = report.warnings
    assert warning.startswith("val split has 2 usable images and no labelled boxes (0 label files found;")
    assert "mAP, best.pt and early stopping cannot be measured" in warning
    assert str((tmp_path / "valid" / "labels").resolve()) in warning
    assert check.main(["--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"warning: {warning}" in out and "clean" not in out
    assert out.rstrip().endswith("no problems found, 1 warning")


def test_val_split_with_a_box_has_no_warning(tmp_path, capsys):
    report = check_dataset(_dataset_with_background_val(tmp_path, val_labels="0 0.5 0.5 0.2 0.2\n"))
    assert report.ok and report.warnings == ()
    assert check.main(["--data", str(tmp_path / "d.yaml")]) == 0
    assert "clean: no problems found" in capsys.readouterr().out


def test_no_boxes_reason_says_what_each_split_loses(tmp_path):
    config = load_dataset_config(_dataset_with_background_val(tmp_path))
    val = checks.scan_split(config, "val")
    assert "mAP, best.pt and early stopping cannot be measured" in checks.no_boxes_reason(config, val)
    assert checks.no_boxes_reason(config, checks.scan_split(config, "train")) == ""


def test_a_label_two_images_read_is_reported_and_counted_once(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    _jpeg(root / "images" / "note.jpg")
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(root / "images" / "note.png")
    _jpeg(root / "images" / "other.jpg")
    for stem in ("note", "other"):
        (root / "labels" / f"{stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "images", "val": "images", "names": ["a"]}))
    (split,) = check_dataset(root / "data.yaml", splits=("train",)).splits
    (problem,) = split.problems
    assert problem.kind == checks.SHARED_LABEL and problem.path.endswith("labels/note.txt")
    assert "note.jpg, note.png all take its boxes" in problem.reason
    # Right for one image at most, and which is unknown: neither trains (training warned of nothing
    # while the checker failed the dataset), the other image does.
    assert split.num_labels == 2 and [Path(s.image).name for s in split.samples] == ["other.jpg"]
    assert split.num_skipped == 2


def test_predict_output_inside_val_is_left_out_and_warned(tmp_path, capsys):
    """Drawn copies from `predict --save-dir valid/images/pred` would be unlabelled backgrounds: not counted."""
    data = _dataset_with_background_val(tmp_path, val_labels="0 0.5 0.5 0.2 0.2\n")
    drawn = tmp_path / "valid" / "images" / "pred"
    for name in ("v1", "v2"):
        _jpeg(drawn / f"{name}.jpg")
    (drawn / "predictions.json").write_text("{}\n")
    report = check_dataset(data)
    (val,) = [split for split in report.splits if split.split == "val"]
    assert val.num_images == 2 and val.num_backgrounds == 1
    assert report.ok and len(report.warnings) == 1 and str(drawn) in report.warnings[0]
    assert check.main(["--data", str(data)]) == 0
    assert "clean" not in capsys.readouterr().out


def test_macos_metadata_files_are_left_out_with_one_warning(tmp_path, caplog):
    """A folder copied from a Mac carries ``._x.jpg`` / ``._x.txt`` beside each file: not images, not labels."""
    for name in ("a", "b"):
        _jpeg(tmp_path / "images" / f"{name}.jpg")
        (tmp_path / "labels").mkdir(exist_ok=True)
        (tmp_path / "labels" / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
        (tmp_path / "images" / f"._{name}.jpg").write_bytes(b"\x00\x05\x16\x07" + bytes(80))
        (tmp_path / "labels" / f"._{name}.txt").write_bytes(b"\x00\x05\x16\x07" + bytes(80))
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"train": "images", "val": "images", "names": ["a"]}))
    report = check_dataset(tmp_path / "d.yaml", splits=("train",))
    assert report.ok and [Path(s.image).name for s in report.splits[0].samples] == ["a.jpg", "b.jpg"]
    load_dataset_config(tmp_path / "d.yaml").images("train")  # listed again, as a training run does: no repeat
    assert [r.getMessage() for r in caplog.records if "macOS metadata" in r.getMessage()] == [
        f"{tmp_path / 'images'}: left out 2 macOS metadata files (._a.jpg ...: not images); delete them with "
        f"`find -L {tmp_path / 'images'} -name '._*' -delete`"]


def test_an_image_in_a_format_not_read_is_named_with_its_label(tmp_path, caplog):
    """A .gif or .heic beside the .jpg files was dropped without a word; its label then read as an orphan
    with "add the image": now the warning names the format and the checker names the image."""
    _jpeg(tmp_path / "images" / "a.jpg")
    (tmp_path / "images" / "b.gif").write_bytes(b"GIF89a" + bytes(20))
    (tmp_path / "labels").mkdir()
    for name in ("a", "b"):
        (tmp_path / "labels" / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"train": "images", "val": "images", "names": ["a"]}))
    report = check_dataset(tmp_path / "d.yaml", splits=("train",))
    (problem,) = report.splits[0].problems
    assert problem.path == str(tmp_path / "labels" / "b.txt") and problem.kind == checks.LABEL_WITHOUT_IMAGE
    assert f"its image {tmp_path / 'images' / 'b.gif'} is a .gif file" in problem.reason
    assert any("left out 1 image in formats SmartCash does not read (.gif: 1" in r.getMessage()
               for r in caplog.records)


def test_jfif_is_a_jpeg(tmp_path):
    """Windows saves JPEGs from browsers as .jfif: read like any .jpg."""
    _jpeg(tmp_path / "images" / "a.jpg").rename(tmp_path / "images" / "a.jfif")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"train": "images", "val": "images", "names": ["a"]}))
    report = check_dataset(tmp_path / "d.yaml", splits=("train",))
    assert report.ok and len(report.splits[0].samples) == 1
    assert read_image(tmp_path / "images" / "a.jfif").shape == (30, 40, 3)


def test_left_out_files_of_a_list_file_and_of_a_linked_folder(tmp_path, caplog):
    """A list file naming ``._a.jpg`` gave an unreadable image and a label of binary junk; an unread image in
    a linked subfolder left its label reading "add the image"; a folder with a space broke the find hint."""
    root = tmp_path / "my data"
    _jpeg(root / "images" / "a.jpg")
    (root / "images" / "._a.jpg").write_bytes(bytes(40))
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "labels" / "._a.txt").write_bytes(bytes(40))
    (root / "train.txt").write_text("images/a.jpg\nimages/._a.jpg\n")
    store = tmp_path / "store"
    store.mkdir()
    (store / "b.heic").write_bytes(bytes(40))
    _jpeg(store / "c.jpg")
    (root / "images" / "linked").symlink_to(store, target_is_directory=True)
    (root / "labels" / "linked").mkdir()
    (root / "labels" / "linked" / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "d.yaml").write_text(yaml.safe_dump({"train": "train.txt", "val": "images", "names": ["a"]}))
    train, val = check_dataset(root / "d.yaml").splits
    assert not train.problems and [Path(s.image).name for s in train.samples] == ["a.jpg"]
    (problem,) = val.problems
    assert f"its image {root / 'images' / 'linked' / 'b.heic'} is a .heic file" in problem.reason
    messages = [r.getMessage() for r in caplog.records]
    assert f"{root / 'train.txt'}: left out 1 macOS metadata file (._a.jpg ...: not images); take them out of the list" in messages
    assert any(f"delete them with `find -L '{root / 'images'}' -name '._*' -delete`" in m for m in messages)


def test_a_split_of_unread_formats_only_says_why_it_has_no_images(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "photos").mkdir(exist_ok=True)
        (tmp_path / "photos" / f"{name}.heic").write_bytes(bytes(40))
    (tmp_path / "photos" / "._a.heic").write_bytes(bytes(40))
    (tmp_path / "photos" / "._c.jpg").write_bytes(bytes(40))
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"train": "photos", "val": "photos", "names": ["a"]}))
    report = check_dataset(tmp_path / "d.yaml", splits=("train",))
    (problem,) = report.problems
    assert problem.reason == ("train split has no images (in photos); left out, as SmartCash does not read them: 4 files "
                              "(._*: 2, .heic: 2); convert them to .jpg or .png")
