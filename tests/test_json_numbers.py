"""json_numbers: runs of number characters parse to exactly json's float64, and anything that is
not a JSON number (without exponent) is declined; read_records built on it declines what json
would read differently, and evaluate_coco then reports json's own error (file, line, column)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartcash.model.training.core.coco_evaluation import evaluate_coco
from smartcash.model.training.core.coco_json import read_records
from smartcash.model.training.core.json_numbers import number_mask, read_numbers


def parse(text: str) -> np.ndarray | None:
    return read_numbers(text.encode()).values


def test_read_numbers_splits_text_into_skeleton_and_numbers() -> None:
    numbers = read_numbers(b'[{"a": -1.5, "b": [2, 30]}]')
    assert b"".join(numbers.skeleton) == b'[{"a": , "b": [, ]}]'
    assert numbers.slots.tolist() == [7, 15, 17] and numbers.values.tolist() == [-1.5, 2, 30]
    mask = number_mask(np.frombuffer(b"-./09:a", dtype=np.uint8))
    assert mask.tolist() == [True, True, False, True, True, False, False]
    for text, skeleton, slots in ((b"", b"", []), (b"7", b"", [0]), (b" 1 ", b"  ", [1]), (b"ab", b"ab", [])):
        numbers = read_numbers(text)  # shorter than one word
        assert b"".join(numbers.skeleton) == skeleton and numbers.slots.tolist() == slots
        assert len(numbers.values) == len(slots)


@pytest.mark.parametrize("block", [1, 5, 8, 64])
def test_read_numbers_cuts_blocks_between_runs(monkeypatch, block: int) -> None:
    import smartcash.model.training.core.json_numbers as json_numbers

    values = [1234567 + i for i in range(50)] + [0.5, -123456789.25, 7] * 10
    text = ", ".join(map(str, values)).encode()
    monkeypatch.setattr(json_numbers, "_TEXT_BLOCK", block)  # blocks end inside numbers
    numbers = read_numbers(text)
    assert b"".join(numbers.skeleton) == b", " * (len(values) - 1)
    assert numbers.slots.tolist() == [2 * i for i in range(len(values))] and numbers.values.tolist() == values


@pytest.mark.parametrize("token", [
    "0", "-0", "-0.0", "7", "10", "-12", "0.5", "-0.5", "12345678", "-1234567", "1234.567", "0.000001",
    "99999999", "123456789", "-123456789.25", "0.30000000000000004", "9007199254740993", "1234567890123456789012",
    "0.1000000000000000055511151231257827", "-0.00000000000000000000000123",
])
def test_numbers_parse_as_json(token: str) -> None:
    values = parse(f"[{token}]")
    assert values is not None and values.tolist() == [float(json.loads(token))]
    assert np.signbit(values[0]) == np.signbit(float(json.loads(token)))  # "-0" is the integer 0, "-0.0" is -0.0


@pytest.mark.parametrize("token", [
    "01", "-01", "00", "-00.5", "1.", "-1.", ".5", "-.5", "1.2.3", "1..2", "-", "--1", "1-2", "1.-2", "0-",
    "012345678", "1234567.89.5", "-012345678.5", "1.23456789.", "123456789-",
])
def test_what_json_rejects_is_declined(token: str) -> None:
    with pytest.raises(ValueError):
        json.loads(f"[{token}]")
    assert parse(f"[{token}]") is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda v: round(v, 2)),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
), min_size=1, max_size=40))
def test_any_json_number_list_parses_exactly(values) -> None:
    text = json.dumps([json.loads(v) if isinstance(v, str) else v for v in values])
    parsed = parse(text)
    expected = [float(v) for v in json.loads(text)]
    if any(c in text for c in "eE"):  # exponents: not one run, the layout check declines them
        return
    assert parsed is not None and parsed.tolist() == expected


@pytest.mark.parametrize("text", [
    b'[{"image_id": 1, "score": 1e-05}, {"image_id": 2, "score": 0.5}]',  # exponent
    b'[{"image_id": 1, "score": 1E+2}]',
    b'[{"image_id": 1, "score": NaN}]',  # json reads NaN / Infinity as floats
    b'[{"image_id": 1, "score": -Infinity}]',
    b'[{"image_id": 1, "extra": {"score": 0.5}}]',  # nested object
    b'[{"image_id": 1, "bbox": [[1, 2], [3, 4]]}]',  # nested list
    b'[{"image_id": 1, "score": 0.5}, {"image_id": 1, "score": 0.5, "extra": {"a": 1}}]',
    b'[{"x1": 1, "y1": 2}]',  # a number character in a key
    b'[{"image_id": 1, "sc\\u006fre": 0.5}]',  # an escaped key
    b'[{"image_id": 1, "score": 0.5}, {"image_id": 1, "sc1re": , }]',
    b'[{"image_id": 1, "score": 0.5}, {"image_1d": , "score": 0.5}]',  # a number moved into a key
])
def test_records_reader_declines_exponents_nesting_and_odd_keys(text: bytes) -> None:
    assert read_records(text) is None


def test_records_reader_takes_unicode_keys_and_long_numbers() -> None:
    objects = [{"image_id": i, "scöre": 0.1 + i / 3, "bbox": [i, -0.0, 1e3 / 7, 2**53 + 1]} for i in range(5)]
    records = read_records(json.dumps(objects, ensure_ascii=False).encode())  # UTF-8 key
    assert records is not None and list(records.columns) == ["image_id", "scöre", "bbox"]
    assert records.columns["scöre"].tolist() == [o["scöre"] for o in objects]
    assert records.columns["bbox"].tolist() == [[float(v) for v in o["bbox"]] for o in objects]
    assert read_records(json.dumps(objects).encode()) is None  # "sc\u00f6re": digits in a key, json reads it


LINE = '{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}'


@pytest.mark.parametrize("broken", [
    LINE.replace("0.5", "01"),  # a leading zero: numpy would read 1
    LINE.replace("4]", ".4]"),  # no digit before the dot
    LINE.replace("0.5}", "0.5"),  # a brace missing
    LINE.replace("1, 2", "1 2"),
])
def test_malformed_detections_file_names_file_line_and_column(tmp_path, broken: str) -> None:
    text = f"[{LINE},\n {broken},\n {LINE}]"
    with pytest.raises(json.JSONDecodeError) as error:
        json.loads(text)
    truth, found = tmp_path / "truth.json", tmp_path / "found.json"
    truth.write_text(json.dumps({"images": [{"id": 1}], "categories": [{"id": 1}],
                                 "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4],
                                                  "area": 12, "iscrowd": 0}]}))
    found.write_text(text)
    position = f"line {error.value.lineno} column {error.value.colno} (char {error.value.pos})"
    with pytest.raises(ValueError, match=rf"found\.json: not valid JSON \(.*{re.escape(position)}\)"):
        evaluate_coco(truth, found)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), head=st.binary(max_size=5), unit=st.binary(min_size=1, max_size=7),
       times=st.integers(0, 6), tail=st.binary(max_size=5))
def test_repeats_compares_pieces_with_the_pattern(data, head: bytes, unit: bytes, times: int, tail: bytes) -> None:
    from smartcash.model.training.core.coco_json import _repeats

    text = bytearray(head + unit * times + tail)
    if data.draw(st.booleans()) and text:  # change one byte, or not
        at = data.draw(st.integers(0, len(text) - 1))
        text[at] = (text[at] + data.draw(st.integers(1, 255))) % 256
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    pieces = [bytes(text[a:b]) for a, b in zip([0, *cuts], [*cuts, len(text)])]
    assert _repeats(pieces, head, unit, times, tail) == (bytes(text) == head + unit * times + tail)
