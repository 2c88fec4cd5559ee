"""evaluate_coco's edge: bad input raises ValueError naming the entry; the fast JSON readers give
exactly what ``json`` gives (property tests), and fall back to ``json`` on what they do not take;
the import pulls in numpy and the standard library only."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartcash.model.training.core.coco_evaluation import evaluate_coco
from smartcash.model.training.core.coco_json import read_ground_truth, read_records

DATASET = {
    "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": 'b "quoted" \\ [x] {y}.jpg'}],
    "categories": [{"id": 1, "name": "note"}, {"id": 5, "name": "coin"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 30], "area": 600, "iscrowd": 0,
         "segmentation": [[10, 10, 30, 10, 30, 40]]},
        {"id": 2, "image_id": 2, "category_id": 5, "bbox": [0, 0, 50, 50], "area": 2000.5, "iscrowd": 1,
         "segmentation": {"counts": "a0b1c2", "size": [100, 100]}},
        {"id": 3, "image_id": 2, "category_id": 5, "bbox": [5, 5, 10, 10], "area": 100, "iscrowd": 0,
         "segmentation": [[5, 5, 15, 5, 15, 15], [1, 2, 3, 4, 5, 6]]},
    ],
}
RESULTS = [
    {"image_id": 1, "category_id": 1, "bbox": [11, 10, 20, 30], "score": 0.9},
    {"image_id": 2, "category_id": 5, "bbox": [6, 5, 10, 10], "score": 0.8},
]


def with_change(source, index: int, key: str, value):
    changed = copy.deepcopy(source)
    if value is ...:
        del changed[index][key]
    else:
        changed[index][key] = value
    return changed


@pytest.mark.parametrize(("detections", "message"), [
    (with_change(RESULTS, 1, "image_id", 7), r"detections\[1\]: image_id 7 is not an image of the ground truth"),
    (with_change(RESULTS, 0, "category_id", 3), r"detections\[0\]: category_id 3 is not a category of the ground truth"),
    (with_change(RESULTS, 1, "score", ...), r"detections\[1\]: missing key 'score'"),
    (with_change(RESULTS, 0, "bbox", [1, 2, float("nan"), 4]), r"detections\[0\]: bbox must be finite"),
    (with_change(RESULTS, 1, "bbox", [1, 2, -3, 4]), r"detections\[1\]: bbox \[1.0, 2.0, -3.0, 4.0\] has a negative width"),
    (with_change(RESULTS, 1, "bbox", [1, 2, 3]), r"detections\[1\]: bbox must be a list of 4 numbers"),
    (with_change(RESULTS, 0, "score", float("inf")), r"detections\[0\]: score must be finite"),
    (with_change(RESULTS, 0, "score", "0.5"), r"detections\[0\]: score must be a number, got '0.5'"),
    (with_change(RESULTS, 1, "image_id", 1.5), r"detections\[1\]: image_id must be an integer"),
    (with_change(RESULTS, 0, "image_id", "1"), r"detections\[0\]: image_id must be a number"),
    (RESULTS[:1] + ["not a dict"], r"detections\[1\]: expected a dict, got str"),
    (np.zeros((2, 6)), r"detections: expected a numeric array \(N, 7\)"),
    (np.array([[1, 0, 0, 5, 5, 0.5, 4]]), r"detections\[0\]: category_id 4 is not a category"),
    ({"image_id": 1}, r"detections: expected a list of COCO result dicts"),
])
def test_bad_detections_name_the_entry(detections, message) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_coco(DATASET, detections)


def annotations_changed(index: int, key: str, value) -> dict:
    dataset = copy.deepcopy(DATASET)
    dataset["annotations"] = with_change(dataset["annotations"], index, key, value)
    return dataset


@pytest.mark.parametrize(("dataset", "message"), [
    (annotations_changed(2, "area", ...), r"annotations\[2\]: missing key 'area'"),
    (annotations_changed(1, "area", -4), r"annotations\[1\]: area -4.0 is negative"),
    (annotations_changed(0, "image_id", 9), r"annotations\[0\]: image_id 9 is not in the dataset's images"),
    (annotations_changed(0, "category_id", 2), r"annotations\[0\]: category_id 2 is not in the dataset's categories"),
    (annotations_changed(2, "id", 1), r"annotations\[2\]: id 1 is used by another annotation too"),
    (annotations_changed(0, "bbox", [0, 0, 5, -1]), r"annotations\[0\]: bbox .* negative width or height"),
    (annotations_changed(0, "iscrowd", 0.5), r"annotations\[0\]: iscrowd must be an integer"),
    ({k: v for k, v in DATASET.items() if k != "images"}, r"ground_truth: missing key 'images'"),
    ({k: v for k, v in DATASET.items() if k != "annotations"}, r"ground_truth: missing key 'annotations'"),
    ({**DATASET, "categories": [{"name": "x"}]}, r"ground_truth categories\[0\]: missing key 'id'"),
    ([DATASET], r"ground_truth: expected a COCO dataset dict or a JSON path"),
])
def test_bad_ground_truth_names_the_entry(dataset, message) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_coco(dataset, RESULTS)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"iou_type": "segm"}, r"iou_type: only 'bbox'"),
    ({"max_detections": (10, 100)}, r"max_detections: expected at least 3 distinct positive integers"),
    ({"max_detections": (1, 1, 100)}, r"max_detections"),
    ({"category_ids": [1, 3]}, r"category_ids: \[3\] not in the ground truth"),
    ({"image_ids": [4]}, r"image_ids: \[4\] not in the ground truth"),
    ({"area_ranges": {"all": (10, 5)}}, r"area_ranges\['all'\]: expected \(low, high\)"),
])
def test_bad_arguments(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_coco(DATASET, RESULTS, **kwargs)


def test_bad_entry_in_a_json_file_names_the_file_and_entry(tmp_path) -> None:
    truth, found = tmp_path / "truth.json", tmp_path / "found.json"
    truth.write_text(json.dumps(DATASET))
    found.write_text(json.dumps(with_change(RESULTS, 1, "bbox", [0, 0, -1, 2])))
    with pytest.raises(ValueError, match=r"found.json\[1\]: bbox .* negative width"):
        evaluate_coco(truth, found)
    found.write_text("[{]")
    with pytest.raises(ValueError, match=r"found.json: not valid JSON"):
        evaluate_coco(truth, found)


def test_ground_truth_file_with_rle_crowds_and_escaped_strings_reads_like_json(tmp_path) -> None:
    text = json.dumps(DATASET, indent=1).encode()
    dataset, records = read_ground_truth(text)
    assert records.count == 3 and "annotations" not in dataset
    assert records.columns["bbox"].tolist() == [a["bbox"] for a in DATASET["annotations"]]
    assert records.columns["area"].tolist() == [a["area"] for a in DATASET["annotations"]]
    assert dataset["images"] == DATASET["images"]
    truth = tmp_path / "truth.json"
    truth.write_bytes(text)
    assert np.array_equal(evaluate_coco(truth, RESULTS).precision, evaluate_coco(DATASET, RESULTS).precision)


@pytest.mark.parametrize("text", [
    b'[{"image_id": 1, "score": 0.5}, {"score": 0.5, "image_id": 1}]',  # key order differs
    b'[{"image_id": 1, "score": 1e-05}]',  # exponent
    b'[{"image_id": 1, "score": 0.5, "label": "x"}]',  # a string value
    b'[{"image_id": 1, "score": true}]',  # a boolean
    b'[{"image_id": 1, "box": [1, 2]}, {"image_id": 1, "box": [1, 2, 3]}]',  # list lengths differ
    b'[{"image_id": 1, "score": 0.5}, {"image_id": 1, "score": 0.5 0.6}]',  # not JSON
    b'[{"image_id": 1, "score": 0.5}, {"image_id": 1, "score": }]',  # not JSON: numpy would read 0
    b'[{"image_id": 1, "score": 0.5}, {"image_id": , "score": 0.5}]',  # not JSON: an empty slot
    b'[{"image_id": 1, "score": 0.5}, {"image_id": 1 , "score": , }]',
    b'[{"image_id": 1, "score": 0.5}, {"image_id":, "score": 0.5}]',
    b'[{"image_id": 1, "score": 0.5 }, {"image_id": 1 , "score": }]',
    b'[{"image_id": 1, "image_id": 2}]',  # repeated key
])
def test_records_reader_declines_what_it_does_not_take(text: bytes) -> None:
    assert read_records(text) is None


def test_records_reader_takes_results_as_json_dump_writes_them() -> None:
    for indent in (None, 2):
        records = read_records(json.dumps(RESULTS * 3, indent=indent).encode())
        assert records is not None and records.count == 6
        assert records.columns["bbox"].tolist() == [r["bbox"] for r in RESULTS * 3]


def test_fallback_gives_the_same_numbers(tmp_path) -> None:
    found = tmp_path / "found.json"
    shuffled = [{"score": r["score"], **r} for r in RESULTS[:1]] + RESULTS[1:]  # key orders differ
    found.write_text(json.dumps(shuffled))
    assert read_records(found.read_bytes()) is None
    assert np.array_equal(evaluate_coco(DATASET, found).stats, evaluate_coco(DATASET, RESULTS).stats)


NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.floats(min_value=-1e4, max_value=1e4, allow_nan=False).map(lambda v: round(v, 3)),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(min_value=0, max_value=1, width=32),
)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(NUMBERS, st.lists(NUMBERS, min_size=4, max_size=4), NUMBERS), min_size=1, max_size=30),
       indent=st.sampled_from([None, 0, 2]), separators=st.sampled_from([None, (",", ":"), (", ", ": ")]))
def test_records_reader_parses_numbers_exactly_as_json(rows, indent, separators) -> None:
    objects = [{"image_id": a, "bbox": b, "score": c} for a, b, c in rows]
    text = json.dumps(objects, indent=indent, separators=separators).encode()
    records = read_records(text)
    if records is None:  # declined (exponents): allowed, the caller uses json
        assert b"e" in text.replace(b"image_id", b"").replace(b"score", b"") or b"E" in text
        return
    expected = json.loads(text)
    assert records.count == len(expected)
    for key in ("image_id", "score"):
        assert records.columns[key].tolist() == [float(o[key]) for o in expected]
    assert records.columns["bbox"].tolist() == [[float(v) for v in o["bbox"]] for o in expected]


@settings(max_examples=300, deadline=None)
@given(data=st.data(), rows=st.lists(st.tuples(NUMBERS, st.lists(NUMBERS, min_size=4, max_size=4)), min_size=1, max_size=6))
def test_records_reader_never_accepts_what_json_would_read_differently(data, rows) -> None:
    """Random edits of valid text (delete, duplicate or insert a character): the reader declines,
    or gives exactly json's numbers."""
    text = bytearray(json.dumps([{"score": a, "bbox": b} for a, b in rows]).encode())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text) - 1))
        edit = data.draw(st.sampled_from(["delete", "duplicate", "insert"]))
        if edit == "delete":
            del text[at]
        elif edit == "duplicate":
            text.insert(at, text[at])
        else:
            text.insert(at, data.draw(st.sampled_from(list(b" ,.-0123456789[]{}:e\n"))))
    records = read_records(bytes(text))
    if records is None:
        return
    expected = json.loads(bytes(text))  # accepted text must be JSON ...
    assert records.count == len(expected)
    for item in expected:  # ... with the same keys and numbers
        assert list(item) == list(records.columns)
    for key, column in records.columns.items():
        values = [[float(v) for v in o[key]] if isinstance(o[key], list) else float(o[key]) for o in expected]
        assert column.tolist() == values


def test_import_pulls_in_numpy_and_the_standard_library_only() -> None:
    code = ("import sys; before = set(sys.modules); import numpy; numpy_modules = set(sys.modules); "
            "import smartcash.coco_eval; "
            "new = {m.split('.')[0] for m in set(sys.modules) - numpy_modules}; "
            "print(','.join(sorted(m for m in new if m not in sys.stdlib_module_names)))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "smartcash"
