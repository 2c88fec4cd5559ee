"""Fast readers for COCO JSON files (numpy and the standard library): a results file, or the
annotations of a ground-truth file, straight into float64 columns, several times faster than
``json.load`` followed by a loop over dicts.

The fast path takes a JSON array of flat objects that all have the same keys in the same order,
with numbers or fixed-length lists of numbers as values, laid out alike: what ``json.dump`` (or
any JSON writer) writes for COCO results, and for COCO annotations once their segmentations
(never read by a bbox evaluation) are blanked. It checks the whole text: with every number
replaced by one "#", it must be the first object's text repeated, so each number sits alone in
its slot. Every number parses to the same float64 as ``json`` (correctly rounded). Anything else
(strings or booleans as values, exponents, nested values, other key orders or spacing, broken
text) makes it return None, and the caller falls back to ``json.load``.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass

import numpy as np

NUMBER_CHARACTERS = b"0123456789.-"
WHITESPACE = b" \t\n\r"
_MARK_NUMBERS = bytes.maketrans(NUMBER_CHARACTERS, b"#" * len(NUMBER_CHARACTERS))
_FLAG_MARKS = bytes(int(c in b",.-") for c in range(256))  # -> 0/1 bytes, read as bool
_NOT_NUMBER_OR_COMMA = bytes(c for c in range(256) if c not in NUMBER_CHARACTERS + WHITESPACE + b",")
_POWERS_OF_TEN = np.array([float(10**i) for i in range(23)])  # exact: 10**22 < 2**53 * 2**22
_SAFE_INTEGER = 2**53  # integers below it are exact in float64
_KEY = re.compile(rb'"[A-Za-z_][A-Za-z0-9_]*"')
# A segmentation (a list of polygons, or an RLE dict without braces inside): blank it in one pass.
# Anything else is left alone, and then the annotations are not uniform: json reads the file.
_SEGMENTATION = re.compile(rb'"segmentation"\s*:\s*(?:\[\s*(?:\[[^\]]*\]\s*(?:,\s*\[[^\]]*\]\s*)*)?\]|\{[^{}]*\})')
_ANNOTATIONS = re.compile(rb'"annotations"\s*:\s*\[')
_LAST_OBJECT = re.compile(rb"\}\s*\]")
_PLACEHOLDER = -1.2345678901234567e-300  # stands in for the annotations array in the rest of the file


@dataclass(frozen=True)
class Records:
    """Columns of a uniform array of objects. columns: {key: (n,) or (n, width) float64}."""

    columns: dict[str, np.ndarray]
    count: int


def _from_text(text: bytes, dtype: type, count: int) -> np.ndarray | None:
    """Comma-separated numbers (whitespace allowed around commas) -> (count,) array, or None."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns (DeprecationWarning) on text it cannot read
        try:
            values = np.fromstring(text, dtype=dtype, sep=",")
        except (ValueError, DeprecationWarning):
            return None
    return values if len(values) == count else None


def _parse_numbers(region: bytes, count: int) -> np.ndarray | None:
    """The `count` numbers of a region whose shape was checked (one number per slot, slots
    separated by commas), in text order, as json would parse them.

    Integers parse about twice as fast as floats, so a token "251.06" is read as 25106 and divided
    by 10**2: with both operands exact (|mantissa| < 2**53, at most 22 decimals) IEEE division
    rounds once, to the same float64 as strtod. Other tokens use numpy's float parser.
    """
    compact = region.translate(None, _NOT_NUMBER_OR_COMMA)  # " 1, 251.06, 0.5"
    end = len(compact)
    while end and compact[end - 1] in WHITESPACE:  # (rstrip would copy the whole text)
        end -= 1
    buffer = np.frombuffer(compact, dtype=np.uint8, count=end)
    # Commas, dots and minus signs, in order (one translate: no full-size temporaries).
    marks = np.flatnonzero(np.frombuffer(compact.translate(_FLAG_MARKS), dtype=bool, count=end))
    kind = buffer[marks]
    minus = marks[kind == ord("-")]
    marks = marks[kind != ord("-")] if len(minus) else marks  # commas and dots
    is_dot = buffer[marks] == ord(".")
    dot_index = np.flatnonzero(is_dot)  # a dot's next mark ends its token: a comma, or the end
    if len(marks) - len(dot_index) != count - 1:  # commas
        return None
    if not _json_number_syntax(buffer, marks[dot_index], minus):
        return None
    after = dot_index + 1
    following = marks[np.minimum(after, len(marks) - 1)]
    following[after == len(marks)] = end
    simple = (
        not (buffer[marks - 1] <= ord(" ")).any()  # no "1.5 ," (the decimals would count the space)
        and not is_dot[np.minimum(after, len(marks) - 1)][after < len(marks)].any()  # one dot per token
    )
    decimals = following - marks[dot_index] - 1
    if simple and (not len(decimals) or decimals.max() <= 22):
        mantissa = _from_text(compact.translate(None, b"."), np.int64, count)
        if mantissa is None:
            return None
        if (np.abs(mantissa.clip(-_SAFE_INTEGER, _SAFE_INTEGER)) < _SAFE_INTEGER).all():
            values = mantissa.astype(np.float64)
            token = dot_index - np.arange(len(dot_index))  # commas before the dot
            values[token] /= _POWERS_OF_TEN[decimals]
            return values
    return _from_text(compact, np.float64, count)


def _json_number_syntax(buffer: np.ndarray, dots: np.ndarray, minus: np.ndarray) -> bool:
    """Reject what strtod reads but JSON forbids: a dot without a digit on each side (".5", "5."),
    a "-" inside a token or not followed by a digit ("1-2", "-.5"), a leading zero followed by a
    digit ("01"). buffer: numbers separated by commas, whitespace around them (none inside a
    token: the shape check saw to that); dots, minus: their positions, ascending."""
    size = len(buffer)
    if (len(dots) and (dots[0] == 0 or dots[-1] >= size - 1)) or (len(minus) and minus[-1] >= size - 1):
        return False  # a "." at either end, or a "-" at the end, lacks a digit beside it

    def digit(positions: np.ndarray) -> np.ndarray:
        return (buffer[positions] - ord("0")) < 10  # uint8 arithmetic wraps below "0"

    if not (digit(dots - 1) & digit(dots + 1)).all() or not digit(minus + 1).all():
        return False
    inner = minus[minus > 0]
    if (digit(inner - 1) | (buffer[inner - 1] == ord("."))).any():
        return False  # "1-2", "1.-2"
    zeros = np.flatnonzero(buffer[:-1] == ord("0"))  # a zero followed by a digit must follow a digit or "."
    zeros = zeros[digit(zeros + 1)]
    before = buffer[np.maximum(zeros - 1, 0)]
    return not ((zeros == 0) | ~(((before - ord("0")) < 10) | (before == ord(".")))).any()


def _shape(text: bytes) -> np.ndarray:
    """The text with each run of number characters replaced by one "#" (whitespace kept), uint8."""
    marked = np.frombuffer(text.translate(_MARK_NUMBERS), dtype=np.uint8)
    number = marked == ord("#")
    repeat = np.empty_like(number)  # a "#" right after a "#"
    repeat[0] = False
    np.logical_and(number[1:], number[:-1], out=repeat[1:])
    return marked[np.logical_not(repeat, out=repeat)]


def _repeats(shape: np.ndarray, offset: int, unit: bytes, times: int, block: int = 4096) -> bool:
    """shape[offset:] starts with `unit` * times; compared a block at a time (no big copies)."""
    expected = unit * min(block, times)
    for done in range(0, times, block):
        size = min(block, times - done) * len(unit)
        if shape[offset : offset + size].tobytes() != expected[:size]:
            return False
        offset += size
    return True


def read_records(text: bytes, start: int = 0, end: int | None = None) -> Records | None:
    """text[start:end], a JSON array of uniform flat objects -> Records; None if it is not one."""
    region = text[start:end].strip()  # no copy when there is nothing to cut
    if region[:1] != b"[" or region[-1:] != b"]":
        return None
    opening = region.find(b"{")
    if opening < 0:
        return Records({}, 0) if not region[1:-1].strip() else None
    closing = region.find(b"}", opening)
    first = region[opening : closing + 1]
    try:
        layout = json.loads(first)
    except ValueError:
        return None
    if not isinstance(layout, dict) or not layout:
        return None
    widths = []  # 0: a number; w: a list of w numbers
    for value in layout.values():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            widths.append(0)
        elif isinstance(value, list) and value and all(
            isinstance(item, (int, float)) and not isinstance(item, bool) for item in value
        ):
            widths.append(len(value))
        else:
            return None
    per_object = sum(max(width, 1) for width in widths)
    template = _shape(first).tobytes()
    if len(_KEY.findall(template)) != len(layout) or template.count(b'"') != 2 * len(layout):
        return None  # a duplicate key, or a key that is not a plain name
    if _KEY.sub(b"", template).translate(None, b"{}[]:,#" + WHITESPACE) or template.count(b"#") != per_object:
        return None  # something besides keys, structure and plain numbers: an exponent ("1e+16")
    # The whole array: "[" + first object + (separator + object) * (count - 1) + "]", alike.
    head, following = region[:opening], region.find(b"{", closing + 1)
    separator = region[closing + 1 : following] if following >= 0 else b""
    shape = _shape(region)
    tail = region[region.rfind(b"}") + 1 :]
    body = len(shape) - len(head) - len(tail) + len(separator)
    count, remainder = divmod(body, len(template) + len(separator)) if body > 0 else (0, 1)
    if remainder or count < 1 or (count > 1 and separator.strip() != b","):
        return None
    if head.strip() != b"[" or tail.strip() != b"]" or shape[: len(head)].tobytes() != head:
        return None
    if shape[len(shape) - len(template) - len(tail) :].tobytes() != template + tail:
        return None
    if not _repeats(shape, len(head), template + separator, count - 1):
        return None
    values = _parse_numbers(region, count * per_object)
    if values is None:
        return None
    table = values.reshape(count, per_object)
    columns, column = {}, 0
    for key, width in zip(layout, widths):
        columns[key] = table[:, column] if width == 0 else table[:, column : column + width]
        column += max(width, 1)
    return Records(columns, count)


def read_ground_truth(text: bytes) -> tuple[dict, Records] | None:
    """A COCO dataset file -> (the dataset without "annotations", the annotations as Records).

    Segmentations are blanked first; the rest of the file (images, categories, info) goes through
    ``json``. None when the annotations are not uniform (the caller then loads the whole file).
    """
    stripped = _SEGMENTATION.sub(b'"segmentation": 0', text)
    found = _ANNOTATIONS.search(stripped)
    if found is None:
        return None
    start = found.end() - 1  # the "["
    after = start + 1
    while after < len(stripped) and stripped[after] in WHITESPACE:
        after += 1
    if stripped[after : after + 1] == b"]":  # an empty array
        end = after + 1
    else:
        last = _LAST_OBJECT.search(stripped, start)
        if last is None:
            return None
        end = last.end()
    records = read_records(stripped, start, end)
    if records is None:
        return None
    try:
        dataset = json.loads(stripped[:start] + repr(_PLACEHOLDER).encode() + stripped[end:])
    except ValueError:
        return None
    # The placeholder must be the top-level "annotations" (not a nested key, not a repeated one).
    if not isinstance(dataset, dict) or dataset.get("annotations") != _PLACEHOLDER:
        return None
    del dataset["annotations"]
    return dataset, records
