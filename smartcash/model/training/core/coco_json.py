"""Fast readers for COCO JSON files (numpy and the standard library): a results file, or the
annotations of a ground-truth file, straight into float64 columns, several times faster than
``json.load`` followed by a loop over dicts.

The fast path takes a JSON array of flat objects that all have the same keys in the same order,
with numbers or fixed-length lists of numbers as values, laid out alike: what ``json.dump`` (or
any JSON writer) writes for COCO results, and for COCO annotations once their segmentations
(never read by a bbox evaluation) are blanked. It checks the whole text: without its number
characters it must be the first object's text repeated, with each run of number characters where
the first object has a number, and each run a JSON number (``json_numbers``), read to the same
float64 as ``json``. Anything else (strings or booleans as values, exponents, nested values,
other key orders or spacing, broken text) makes it return None, and the caller falls back to
``json.load`` (whose errors name the file, line and column).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

from smartcash.model.training.core.json_numbers import read_numbers

WHITESPACE = b" \t\n\r"
_STRING = re.compile(rb'"[^"\\]*"')  # a key (values are numbers): no escapes, else json reads the file
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


@dataclass(frozen=True)
class _Layout:
    """The first object of the array: keys, value widths (0: a number, w: a list of w numbers),
    its text without number characters (``skeleton``) and where each number sits in it (``slots``)."""

    keys: tuple[str, ...]
    widths: tuple[int, ...]
    skeleton: bytes
    slots: np.ndarray


def _layout(first: bytes) -> _Layout | None:
    """The layout of the first object, or None unless it is a flat object of numbers and lists of
    numbers, each number one run of number characters (no exponent, NaN or Infinity)."""
    try:
        parsed = json.loads(first)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or not parsed:
        return None
    widths = []
    for value in parsed.values():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            widths.append(0)
        elif isinstance(value, list) and value and all(
            isinstance(item, (int, float)) and not isinstance(item, bool) for item in value
        ):
            widths.append(len(value))
        else:
            return None
    # Only keys, structure and number characters: "1e-05" or NaN would pass json as numbers.
    if _STRING.sub(b"", first).translate(None, b"{}[]:,-.0123456789" + WHITESPACE):
        return None
    numbers = read_numbers(first)
    if len(numbers.slots) != sum(max(width, 1) for width in widths):
        return None  # a repeated key (json keeps one), or a number character in a key
    return _Layout(tuple(parsed), tuple(widths), b"".join(numbers.skeleton), numbers.slots)


def _repeats(pieces: list[bytes], head: bytes, unit: bytes, times: int, tail: bytes) -> bool:
    """b"".join(pieces) == head + unit * times + tail, without building either side."""
    if sum(map(len, pieces)) != len(head) + len(unit) * times + len(tail):
        return False
    body_end = len(head) + len(unit) * times  # where the tail starts
    longest = max(map(len, pieces), default=0)
    pattern = unit * (longest // max(len(unit), 1) + 2)  # any piece of the body is a slice of it
    offset = 0
    for piece in pieces:  # bytes.startswith compares in place (a memoryview compares item by item)
        end = offset + len(piece)
        if offset < len(head) and not piece.startswith(head[offset : min(end, len(head))]):
            return False
        start, stop = max(offset, len(head)), min(end, body_end)  # the part inside unit * times
        if start < stop:
            phase = (start - len(head)) % len(unit)
            if not piece.startswith(pattern[phase : phase + stop - start], start - offset):
                return False
        if end > body_end and not piece.startswith(tail[max(offset - body_end, 0) : end - body_end],
                                                   max(body_end - offset, 0)):
            return False
        offset = end
    return True


def read_records(text: bytes, start: int = 0, end: int | None = None) -> Records | None:
    """text[start:end], a JSON array of uniform flat objects -> Records; None if it is not one.

    Uniform: with its number characters taken out, the text is the first object's repeated with
    one separator, and every number sits where the first object has one.
    """
    region = text[start:end].strip()  # no copy when there is nothing to cut
    if region[:1] != b"[" or region[-1:] != b"]":
        return None
    opening = region.find(b"{")
    if opening < 0:
        return Records({}, 0) if not region[1:-1].strip() else None
    closing = region.find(b"}", opening)
    layout = _layout(region[opening : closing + 1])
    if layout is None:
        return None
    head, tail = region[:opening], region[region.rfind(b"}") + 1 :]
    following = region.find(b"{", closing + 1)
    separator = region[closing + 1 : following] if following >= 0 else b""
    if head.strip() != b"[" or tail.strip() != b"]" or (following >= 0 and separator.strip() != b","):
        return None
    numbers = read_numbers(region)
    unit = len(layout.skeleton) + len(separator)
    count, remainder = divmod(sum(map(len, numbers.skeleton)) - len(head) - len(tail) + len(separator), unit)
    per_object = len(layout.slots)
    if remainder or count < 1 or (count > 1 and following < 0) or len(numbers.slots) != count * per_object:
        return None
    if not _repeats(numbers.skeleton, head, layout.skeleton + separator, count - 1, layout.skeleton + tail):
        return None
    # Each number where the first object has one: slot j of object i at head + i * unit + slots[j].
    offsets = numbers.slots.reshape(count, per_object) - layout.slots  # (count, per_object)
    if not (offsets == (len(head) + unit * np.arange(count))[:, None]).all():
        return None  # a number in a key, and an empty slot elsewhere
    if numbers.values is None:
        return None
    table = numbers.values.reshape(count, per_object)
    columns, column = {}, 0
    for key, width in zip(layout.keys, layout.widths):
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
