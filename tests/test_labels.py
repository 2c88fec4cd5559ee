"""YOLO label parser: every bad-line kind gives its reason; property tests for round trip and garbage."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from smartcash.data import labels
from smartcash.data.labels import parse_label_file, parse_label_text


def test_boxes_polygons_and_background(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("0 0.5 0.5 0.2 0.4\n\n2 0.1 0.2 0.3 0.2 0.2 0.6 0.1 0.5\n", encoding="utf-8")
    parsed = parse_label_file(path, num_classes=3)
    assert parsed.problems == ()
    np.testing.assert_allclose(parsed.boxes, [[0, 0.5, 0.5, 0.2, 0.4], [2, 0.2, 0.4, 0.2, 0.4]], atol=1e-6)
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    parsed = parse_label_file(empty, num_classes=3)
    assert parsed.boxes.shape == (0, 5) and parsed.boxes.dtype == np.float32 and parsed.problems == ()


def test_each_bad_line_kind_has_its_reason(tmp_path):
    lines = [
        "0 0.5 0.5 0.2",            # 1 wrong column count
        "0 0.5 0.5 0.2 0.2 0.1",    # 2 wrong column count (6)
        "0 0.5 abc 0.2 0.2",        # 3 non-numeric
        "0 0.5 nan 0.2 0.2",        # 4 NaN
        "1 inf 0.5 0.2 0.2",        # 5 inf
        "7 0.5 0.5 0.2 0.2",        # 6 class out of range
        "1.5 0.5 0.5 0.2 0.2",      # 7 class not an integer
        "-1 0.5 0.5 0.2 0.2",       # 8 negative class
        "0 1.4 0.5 0.2 0.2",        # 9 outside [0,1]
        "0 0.5 0.5 0 0.2",          # 10 zero area
        "0 0.5 0.5 0.2 0.2",        # 11 good
        "0 0.5 0.5 0.2 0.2",        # 12 duplicate of 11
        "1 0.999 0.5 0.01 0.2",     # 13 slightly outside: clipped, no problem
    ]
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    parsed = parse_label_file(path, num_classes=3)
    kinds = {p.line: p.kind for p in parsed.problems}
    assert kinds == {1: labels.WRONG_COLUMNS, 2: labels.WRONG_COLUMNS, 3: labels.NON_NUMERIC,
                     4: labels.NON_FINITE, 5: labels.NON_FINITE, 6: labels.BAD_CLASS,
                     7: labels.BAD_CLASS, 8: labels.BAD_CLASS, 9: labels.OUTSIDE,
                     10: labels.ZERO_AREA, 12: labels.DUPLICATE}
    assert all(p.path == str(path) for p in parsed.problems)
    assert str(parsed.problems[5]).startswith(f"{path}:6: class id 7")
    assert "same as line 11" in parsed.problems[-1].reason
    assert parsed.boxes.shape == (2, 5)
    np.testing.assert_allclose(parsed.boxes[1], [1, 0.997, 0.5, 0.006, 0.2], atol=1e-6)  # x 0.994..1.004 clipped to 1


def test_unreadable_file_is_a_problem(tmp_path):
    path = tmp_path / "binary.txt"
    path.write_bytes(b"\xff\xfe\x00garbage")
    parsed = parse_label_file(path, num_classes=3)
    assert parsed.problems[0].kind == labels.UNREADABLE_LABEL and parsed.boxes.shape == (0, 5)
    assert parse_label_file(tmp_path / "missing.txt", 3).problems[0].line == 0


unit = st.floats(min_value=0.05, max_value=0.95)
size = st.floats(min_value=0.01, max_value=0.1)
valid_box = st.tuples(st.integers(0, 16), unit, unit, size, size)


@settings(max_examples=150, deadline=None)
@given(st.lists(valid_box, max_size=20,
                unique_by=lambda box: tuple(np.float32(v) for v in box)))
def test_round_trip_of_valid_boxes(boxes):
    text = "\n".join(f"{c} {cx!r} {cy!r} {w!r} {h!r}" for c, cx, cy, w, h in boxes)
    parsed = parse_label_text(text, num_classes=17)
    assert parsed.problems == ()
    expected = np.asarray(boxes, dtype=np.float32).reshape(-1, 5)
    np.testing.assert_allclose(parsed.boxes, expected, rtol=0, atol=1e-6)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789.-+eEnaif x\t\n,")), max_size=200))
def test_garbage_never_crashes(text):
    parsed = parse_label_text(text, num_classes=5)
    assert parsed.boxes.dtype == np.float32 and parsed.boxes.shape[1] == 5
    lines_with_content = sum(1 for line in text.splitlines() if line.split())
    assert len(parsed.boxes) + len(parsed.problems) == lines_with_content
    if len(parsed.boxes):
        assert np.isfinite(parsed.boxes).all()
        assert (parsed.boxes[:, 1:] >= 0).all() and (parsed.boxes[:, 1:] <= 1).all()
        assert (parsed.boxes[:, 3:] > 0).all()
