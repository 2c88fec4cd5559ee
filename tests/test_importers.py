"""CSV and COCO importers: round trips back to the source pixels, bad records reported and skipped."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartcash.data import import_coco, import_csv
from smartcash.data.dataset_config import load_dataset_config
from smartcash.data.labels import parse_label_file
from smartcash.data.yolo_writer import pixel_box_to_yolo

SIZES = {"a.jpg": (64, 48), "b.png": (80, 40), "sub/c.png": (30, 90)}  # name: (width, height)


def _images(root: Path) -> Path:
    for name, (width, height) in SIZES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name), np.full((height, width, 3), 100, np.uint8))
    return root


def _pixel_boxes(data_yaml: Path) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    """Per output image name: (class name, xyxy pixels) rebuilt from the YOLO labels."""
    config = load_dataset_config(data_yaml)
    result: dict[str, list[tuple[str, tuple[float, ...]]]] = {}
    for image in config.images("train"):
        height, width = cv2.imread(str(image)).shape[:2]
        boxes = parse_label_file(config.label_path(image), config.num_source_classes).boxes
        result[image.name] = sorted(
            (config.source_names[int(c)], ((cx - w / 2) * width, (cy - h / 2) * height,
                                           (cx + w / 2) * width, (cy + h / 2) * height))
            for c, cx, cy, w, h in boxes.tolist())
    return result


def _close(found: dict, expected: dict) -> None:
    assert found.keys() == expected.keys()
    for name in expected:
        assert [n for n, _ in found[name]] == [n for n, _ in sorted(expected[name])], name
        for (_, got), (_, want) in zip(found[name], sorted(expected[name])):
            np.testing.assert_allclose(got, want, atol=1.0, err_msg=name)


CSV_ROWS = [
    "filename,width,height,class,xmin,ymin,xmax,ymax",
    "a.jpg,64,48,l2_002,10,5,30,20",
    "a.jpg,64,48,002,0,0,64,48",
    "b.png,80,40,l3_thread,70.5,1,79.5,39",
    "sub/c.png,30,90,002,3,10,27,80",
]
EXPECTED_CSV = {
    "a.jpg": [("l2_002", (10, 5, 30, 20)), ("002", (0, 0, 64, 48))],
    "b.png": [("l3_thread", (70.5, 1, 79.5, 39))],
    "sub__c.png": [("002", (3, 10, 27, 80))],
}


def test_csv_round_trip(tmp_path: Path) -> None:
    images = _images(tmp_path / "images")
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text("\n".join(CSV_ROWS) + "\n")
    summary = import_csv.import_csv(csv_path, images, tmp_path / "out")
    assert summary.problems == () and (summary.images, summary.boxes) == (3, 4)
    assert summary.names == ("002", "l2_002", "l3_thread")  # SmartCash names: taxonomy order
    _close(_pixel_boxes(summary.data_yaml), EXPECTED_CSV)
    assert all((images / name).is_file() for name in SIZES)  # copied, not moved


def test_csv_bad_rows_reported_with_line_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = _images(tmp_path / "images")
    rows = [CSV_ROWS[0], "a.jpg,64,48,cat,10,5,30,20"] + [
        "missing.jpg,64,48,cat,1,1,5,5",  # line 3
        "a.jpg,64,48,cat,1,one,5,5",  # line 4
        "a.jpg,64,48,cat,10,10,70,20",  # line 5: beyond the 64 px width
        "a.jpg,64,48,cat,30,10,30,20",  # line 6: xmax == xmin
        "b.png,80,40,dog,1,1,5,5",  # line 7: good
        "b.png,80,40,dog,1,1,5,5",  # line 8: duplicate
        "b.png,81,40,dog,2,2,6,6",  # line 9: size disagrees with line 7
    ]
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert import_csv.main(["--csv", str(csv_path), "--images", str(images), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    expected = {3: "not found", 4: "non-numeric ymin", 5: "outside", 6: "xmax 30 <= xmin 30",
                8: "duplicate of line 7",                9: "differs from line 7"}
    for line, reason in expected.items():
        prefix = f"{csv_path}:{line}: "
        assert prefix in printed and reason in printed.split(prefix)[1].splitlines()[0]
    assert "2 images, 2 boxes, 2 classes, 6 records skipped" in printed
    assert load_dataset_config(out / "data.yaml").source_names == ("cat", "dog")  # foreign names: sorted


def test_csv_given_names_and_bad_header(tmp_path: Path) -> None:
    images = _images(tmp_path / "images")
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text("\n".join(CSV_ROWS) + "\n")
    summary = import_csv.import_csv(csv_path, images, tmp_path / "out", names=["002", "l2_002"],
                                    mode="hardlink")
    assert summary.names == ("002", "l2_002") and summary.skipped == 1
    assert "class 'l3_thread' not in --names" in str(summary.problems[0])
    copied = tmp_path / "out" / "images" / "train" / "a.jpg"
    assert copied.stat().st_ino == (images / "a.jpg").stat().st_ino
    csv_path.write_text("file,w,h\nx,1,2\n")
    arguments = ["--csv", str(csv_path), "--images", str(images), "--out", str(tmp_path / "o2")]
    assert import_csv.main(arguments) == 2


def test_csv_checks_the_aspect_ratio_not_the_scale(tmp_path: Path) -> None:
    images = _images(tmp_path / "images")
    csv_path = tmp_path / "boxes.csv"
    rows = [CSV_ROWS[0], "a.jpg,128,96,cat,20,10,60,40", "sub/c.png,90,30,cat,1,1,5,5"]
    csv_path.write_text("\n".join(rows) + "\n")
    summary = import_csv.import_csv(csv_path, images, tmp_path / "out")
    assert [p.line for p in summary.problems] == [3]
    assert "image is 30x90 but annotated as 90x30" in summary.problems[0].reason
    # a.jpg is a half-size copy of what was annotated: the normalised box still fits it.
    _close(_pixel_boxes(summary.data_yaml), {"a.jpg": [("cat", (10, 5, 30, 20))]})


def _coco(images: Path) -> dict:
    return {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 64, "height": 48},
                   {"id": 8, "file_name": "sub/c.png", "width": 30, "height": 90},
                   {"id": 9, "file_name": "b.png", "width": 80, "height": 40},  # no annotation: background
                   {"id": 10, "file_name": "gone.png", "width": 10, "height": 10}],
        "categories": [{"id": 5, "name": "l2_100"}, {"id": 2, "name": "100"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 2, "bbox": [0, 0, 64, 48], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 5, "bbox": [40.2, 3.5, 20.1, 10], "iscrowd": 0},
            {"id": 3, "image_id": 8, "category_id": 2, "bbox": [1, 2, 28, 86.6]},  # 0.4 px over: clipped
            {"id": 4, "image_id": 8, "category_id": 5, "bbox": [0, 0, 10, 10], "iscrowd": 1},
            {"id": 5, "image_id": 8, "category_id": 99, "bbox": [0, 0, 10, 10]},
            {"id": 6, "image_id": 7, "category_id": 2, "bbox": [50, 0, 30, 10]},
            {"id": 7, "image_id": 7, "category_id": 2, "bbox": [5, 5, 0, 10]},
            {"id": 8, "image_id": 10, "category_id": 2, "bbox": [1, 1, 2, 2]},
        ],
    }


def test_coco_round_trip_and_bad_annotations(tmp_path: Path) -> None:
    images = _images(tmp_path / "images")
    json_path = tmp_path / "coco.json"
    json_path.write_text(json.dumps(_coco(images), indent=1))
    summary = import_coco.import_coco(json_path, images, tmp_path / "out")
    assert summary.names == ("100", "l2_100")  # category-id order (2, 5), not file order
    assert (summary.images, summary.boxes) == (3, 3)
    _close(_pixel_boxes(summary.data_yaml), {
        "a.jpg": [("100", (0, 0, 64, 48)), ("l2_100", (40.2, 3.5, 60.3, 13.5))],
        "sub__c.png": [("100", (1, 2, 29, 88.6))],
        "b.png": [],
    })
    reasons = [str(p) for p in summary.problems]
    assert any("images[3] (id 10)" in r and "not found" in r for r in reasons)
    assert any("annotations[4] (id 5): unknown category_id 99" in r for r in reasons)
    assert any("annotations[5] (id 6)" in r and "outside" in r for r in reasons)
    assert any("annotations[6] (id 7)" in r and "xmax 5 <= xmin 5" in r for r in reasons)
    assert any("annotations[7] (id 8): its image was skipped" in r for r in reasons)
    assert summary.skipped == 5  # 4 bad + 1 crowd
    assert (tmp_path / "out" / "labels" / "train" / "b.txt").read_text() == ""


def test_coco_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = _images(tmp_path / "images")
    json_path = tmp_path / "coco.json"
    json_path.write_text('{"images": [],\n "categories": [}')
    arguments = ["--json", str(json_path), "--images", str(images), "--out", str(tmp_path / "o")]
    assert import_coco.main(arguments) == 2
    assert f"{json_path}:2: invalid JSON" in capsys.readouterr().err
    json_path.write_text(json.dumps(_coco(images)))
    assert import_coco.main(arguments) == 0
    assert "3 images, 3 boxes, 2 classes, 5 records skipped" in capsys.readouterr().out


@given(x1=st.floats(0, 600), y1=st.floats(0, 400), w=st.floats(0.01, 640), h=st.floats(0.01, 480))
def test_pixel_box_round_trip(x1: float, y1: float, w: float, h: float) -> None:
    x2, y2 = min(x1 + w, 640.0), min(y1 + h, 480.0)
    box, reason = pixel_box_to_yolo(x1, y1, x2, y2, 640, 480)
    if x2 <= x1 or y2 <= y1:
        assert box is None and reason
        return
    assert box is not None
    cx, cy, bw, bh = box
    back = [(cx - bw / 2) * 640, (cy - bh / 2) * 480, (cx + bw / 2) * 640, (cy + bh / 2) * 480]
    np.testing.assert_allclose(back, [x1, y1, x2, y2], atol=1e-6)


@pytest.mark.parametrize("split", ["../../victim", "", "..", "a/b"])
def test_split_must_be_a_plain_folder_name_so_nothing_lands_outside_out(tmp_path: Path, split: str,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """--split ../../victim replaced the victim folder's files (exit 0)."""
    images = _images(tmp_path / "images")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "a.txt").write_text("my label")
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text("\n".join(CSV_ROWS) + "\n")
    json_path = tmp_path / "coco.json"
    json_path.write_text(json.dumps(_coco(images)))
    for main, source in ((import_csv.main, ["--csv", str(csv_path)]), (import_coco.main, ["--json", str(json_path)])):
        out = tmp_path / "out" / "deep"
        assert main([*source, "--images", str(images), "--out", str(out), "--split", split]) == 2
        assert f"--split {split!r}: must be a plain folder name" in capsys.readouterr().err
        assert not out.exists()
    assert (victim / "a.txt").read_text() == "my label" and sorted(p.name for p in victim.iterdir()) == ["a.txt"]


def test_an_import_that_keeps_no_image_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every row skipped (class ids where names were expected, or the wrong --images): was exit 0 and
    an empty dataset that the checker called clean."""
    images = _images(tmp_path / "images")
    csv_path = tmp_path / "ids.csv"
    csv_path.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\na.jpg,64,48,0,1,1,30,30\n")
    out = tmp_path / "out"
    assert import_csv.main(["--csv", str(csv_path), "--images", str(images), "--out", str(out),
                            "--names", "cat", "dog"]) == 2
    assert f"{csv_path}: no usable row, 1 skipped (first: {csv_path}:2:" in capsys.readouterr().err
    json_path = tmp_path / "coco.json"
    json_path.write_text(json.dumps(_coco(images)))
    elsewhere = tmp_path / "elsewhere"  # the wrong --images: every image "not found"
    elsewhere.mkdir()
    assert import_coco.main(["--json", str(json_path), "--images", str(elsewhere), "--out", str(out)]) == 2
    assert f"{json_path}: no usable image, 11 problems (first: " in capsys.readouterr().err
    assert not out.exists()


def test_coco_image_id_given_twice_is_refused(tmp_path: Path) -> None:
    """Merged exports both start at id 1: one image was dropped and its boxes moved onto the other."""
    images = _images(tmp_path / "images")
    data = _coco(images)
    data["images"][1]["id"] = 7  # sub/c.png takes a.jpg's id
    json_path = tmp_path / "coco.json"
    json_path.write_text(json.dumps(data))
    with pytest.raises(import_coco.DatasetError, match=r"images\[1\]: image id 7 is also images\[0\]'s"):
        import_coco.import_coco(json_path, images, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_coco_iscrowd_as_text_and_sizes_that_are_not_finite(tmp_path: Path) -> None:
    images = _images(tmp_path / "images")
    data = _coco(images)
    for annotation in data["annotations"]:
        annotation["iscrowd"] = str(annotation.get("iscrowd", 0))  # "0" is not a crowd; "1" is
    data["images"][2]["width"] = float("inf")  # b.png: json writes Infinity, which Python reads back
    data["images"].append({"id": [1], "file_name": "x.png", "width": 1, "height": 1})  # an id that is no int
    json_path = tmp_path / "coco.json"
    json_path.write_text(json.dumps(data))
    summary = import_coco.import_coco(json_path, images, tmp_path / "out")
    assert (summary.images, summary.boxes) == (2, 3)  # b.png left out, the boxes as with numbers
    reasons = [str(p) for p in summary.problems]
    assert any("images[2] (id 9): size infx40" in r for r in reasons)
    assert any("images[4]: needs id, file_name, width, height" in r for r in reasons)


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_text_that_is_not_utf8_is_a_clear_error(tmp_path: Path, encoding: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    images = _images(tmp_path / "images")
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\na.jpg,64,48,café,1,1,30,30\n",
                        encoding=encoding)
    assert import_csv.main(["--csv", str(csv_path), "--images", str(images), "--out", str(tmp_path / "o")]) == 2
    assert f"{csv_path}: not UTF-8 text (byte " in capsys.readouterr().err
    json_path = tmp_path / "coco.json"
    json_path.write_text(json.dumps(_coco(images), ensure_ascii=False).replace("l2_100", "café"), encoding=encoding)
    assert import_coco.main(["--json", str(json_path), "--images", str(images), "--out", str(tmp_path / "o")]) == 2
    assert f"{json_path}: not UTF-8 text (byte " in capsys.readouterr().err


def test_class_names_given_twice_are_refused(tmp_path: Path) -> None:
    """names [cat, cat, dog] were written and called clean: two classes no detection tells apart."""
    images = _images(tmp_path / "images")
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text("\n".join(CSV_ROWS) + "\n")
    with pytest.raises(import_csv.DatasetError, match="--names: 'cat' is ids 0 and 1: each class needs its own name"):
        import_csv.import_csv(csv_path, images, tmp_path / "o", names=["cat", "cat", "dog"])
    data = _coco(images)
    data["categories"].append({"id": 9, "name": "100"})
    json_path = tmp_path / "coco.json"
    json_path.write_text(json.dumps(data))
    with pytest.raises(import_coco.DatasetError, match="categories: ids 2 and 9 are both named '100'"):
        import_coco.import_coco(json_path, images, tmp_path / "o")
    data["categories"][-1]["name"] = "L2_100"  # case differs from id 5's "l2_100": still one name
    json_path.write_text(json.dumps(data))
    with pytest.raises(import_coco.DatasetError, match="categories: ids 5 and 9 are both named 'L2_100'"):
        import_coco.import_coco(json_path, images, tmp_path / "o")
    (tmp_path / "d.yaml").write_text("train: images\nnames: [cat, dog, cat]\n")
    with pytest.raises(import_coco.DatasetError, match="names: 'cat' is ids 0 and 2: each class needs its own name"):
        load_dataset_config(tmp_path / "d.yaml")
    assert not (tmp_path / "o").exists()


def test_csv_rows_that_spell_one_image_differently_make_one_image(tmp_path: Path) -> None:
    """`a.jpg`, `./a.jpg` and `export/a.jpg` (found by its base name) were three copies, each with
    one of the image's boxes (the others unlabelled objects in it)."""
    images = _images(tmp_path / "images")
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n"
                        "a.jpg,64,48,cat,1,1,30,30\n./a.jpg,64,48,dog,5,5,60,40\nexport/a.jpg,64,48,cat,2,2,25,25\n"
                        "./a.jpg,64,48,cat,1,1,30,30\n")
    summary = import_csv.import_csv(csv_path, images, tmp_path / "out")
    assert (summary.images, summary.boxes) == (1, 3)
    assert [str(p) for p in summary.problems] == [f"{csv_path}:5: duplicate of line 2"]
    _close(_pixel_boxes(summary.data_yaml), {"a.jpg": [("cat", (1, 1, 30, 30)), ("dog", (5, 5, 60, 40)),
                                                       ("cat", (2, 2, 25, 25))]})


def test_roboflow_dataset_category_is_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Roboflow's COCO exports start with a category named after the dataset (id 0, supercategory
    "none"), the supercategory of every real class, used by no annotation: it became a class with no
    box that the checker then refused."""
    images = _images(tmp_path / "images")
    data = _coco(images)
    data["categories"] = [{"id": 0, "name": "rupiah", "supercategory": "none"}] + [
        {**category, "supercategory": "rupiah"} for category in data["categories"]]
    json_path = tmp_path / "coco.json"
    json_path.write_text(json.dumps(data))
    caplog.set_level("INFO", logger="smartcash")
    summary = import_coco.import_coco(json_path, images, tmp_path / "out")
    assert summary.names == ("100", "l2_100") and (summary.images, summary.boxes) == (3, 3)
    assert "category 0 'rupiah' left out" in caplog.text
    data["annotations"][0]["category_id"] = 0  # used: a real class after all, kept
    json_path.write_text(json.dumps(data))
    assert import_coco.import_coco(json_path, images, tmp_path / "out2").names == ("rupiah", "100", "l2_100")


def test_coco_annotation_given_twice_is_reported_once_kept(tmp_path: Path) -> None:
    images = _images(tmp_path / "images")
    data = _coco(images)
    data["annotations"].append({**data["annotations"][0], "id": 99})
    json_path = tmp_path / "coco.json"
    json_path.write_text(json.dumps(data))
    summary = import_coco.import_coco(json_path, images, tmp_path / "out")
    assert (summary.images, summary.boxes) == (3, 3)  # as without the copy
    assert any("annotations[8] (id 99): duplicate of annotations[0]" in str(p) for p in summary.problems)


def test_two_names_linked_to_one_stored_file_stay_two_images(tmp_path: Path) -> None:
    """git-annex / DVC caches link images with equal content to one stored file: still two images."""
    images = tmp_path / "images"
    store = tmp_path / "store"
    store.mkdir()
    images.mkdir()
    cv2.imwrite(str(store / "blob.jpg"), np.full((48, 64, 3), 100, np.uint8))
    (images / "x.jpg").symlink_to(store / "blob.jpg")
    (images / "y.jpg").symlink_to(store / "blob.jpg")
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n"
                        "x.jpg,64,48,cat,1,1,30,30\ny.jpg,64,48,cat,1,1,30,30\n")
    summary = import_csv.import_csv(csv_path, images, tmp_path / "out")
    assert (summary.images, summary.boxes, summary.problems) == (2, 2, ())


def test_coco_category_id_that_is_no_number_skips_the_annotation(tmp_path: Path) -> None:
    images = _images(tmp_path / "images")
    data = _coco(images)
    data["annotations"][1]["category_id"] = [5]
    json_path = tmp_path / "coco.json"
    json_path.write_text(json.dumps(data))
    summary = import_coco.import_coco(json_path, images, tmp_path / "out")
    assert any("annotations[1] (id 2): needs image_id, category_id" in str(p) for p in summary.problems)


def test_out_that_is_a_broken_link_is_refused_before_anything(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """It was exit 1 with "incomplete: delete it and run again" though nothing had been written."""
    images = _images(tmp_path / "images")
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text("\n".join(CSV_ROWS) + "\n")
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "gone")
    assert import_csv.main(["--csv", str(csv_path), "--images", str(images), "--out", str(out)]) == 2
    assert f"{out}: --out is a link to {tmp_path / 'gone'}, which does not exist" in capsys.readouterr().err
    assert not (tmp_path / "gone").exists()
