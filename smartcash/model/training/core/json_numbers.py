"""JSON numbers in a text -> float64, vectorised with numpy: the values ``json.loads`` gives
(correctly rounded), or None when a token is not a JSON number.

A token is a maximal run of the characters ``-.0-9`` (``read_numbers`` finds them). Each token
is loaded right-aligned into uint64 words, zero bytes before it, and checked against JSON's
grammar ``-?(0|[1-9][0-9]*)(\\.[0-9]+)?`` with bitwise operations on whole arrays of words (one
0/1 flag per byte). A token of at most 8 characters (what a writer that rounds its numbers
writes) becomes an integer mantissa (simdjson's 8-digits-at-once multiply), divided by
10**decimals: one IEEE rounding of exact operands, the float64 ``strtod`` gives. Longer tokens go
through numpy's float parser (also correctly rounded). Exponents ("1e-05") are not number
characters: the caller's layout check sees the "e" and declines the text.

Work goes in blocks (``_TEXT_BLOCK`` bytes, ``_TOKEN_BLOCK`` tokens) so that the temporaries of
dozens of array operations stay in the CPU cache: about 3x faster than whole-array operations.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

WORD = 8  # bytes in a uint64
_U64 = np.dtype("<u8")  # explicit little endian: byte 0 is the token's leftmost column
_TEXT_BLOCK = 1 << 18  # bytes at a time when scanning
_TOKEN_BLOCK = 1 << 16  # numbers at a time when parsing: 512 KiB a uint64 array
_NUMBER_BYTES = b"-.0123456789"
_NUMBER_CODES = frozenset(_NUMBER_BYTES)
_ZERO_TOKEN = np.uint64(ord("0") << 56)  # "0", right-aligned: stands in for a run parsed apart
_MINUS = ord("-")

_LOW_BITS = np.uint64(0x0101010101010101)  # bit 0 of every byte: where the 0/1 flags live
_LOW_NIBBLES = np.uint64(0x0F0F0F0F0F0F0F0F)
_ZEROS = np.uint64(0x3030303030303030)  # "0" in every byte
_BELOW_HIGH_BIT = np.uint64(0x7F7F7F7F7F7F7F7F)
_BYTE, _TOP_BYTE = np.uint64(8), np.uint64(56)
# _KEEP[k]: the last k bytes of a word (a right-aligned token of k characters).
_KEEP = np.array([0] + [(2**64 - 1) << (8 * (WORD - k)) & (2**64 - 1) for k in range(1, WORD + 1)], dtype=np.uint64)
_POWERS_OF_TEN = 10.0 ** np.arange(WORD)  # exact


def number_mask(chars: np.ndarray) -> np.ndarray:
    """(L,) uint8 text -> (L,) bool: the characters ``-.0123456789``."""
    return ((chars - np.uint8(_MINUS)) <= np.uint8(ord("9") - _MINUS)) & (chars != np.uint8(ord("/")))


def number_runs(is_number: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximal runs of True in a (L,) bool mask: (starts, ends), each (N,) int64, end exclusive."""
    edges = np.flatnonzero(is_number[1:] != is_number[:-1]) + 1
    if len(is_number) and is_number[0]:
        edges = np.concatenate([[0], edges])
    if len(is_number) and is_number[-1]:
        edges = np.concatenate([edges, [len(is_number)]])
    return edges[0::2], edges[1::2]


def _flags(word: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bytes of one of 0, "-", ".", "0"-"9" -> 0/1 flags (present, digit, minus, dot): all but 0
    have bit 5, digits (0x30-0x39) alone bit 4, and "-" (0x2D) has bit 0 where "." (0x2E) has not."""
    present = (word >> np.uint64(5)) & _LOW_BITS
    digit = (word >> np.uint64(4)) & _LOW_BITS
    minus = (present ^ digit) & word
    return present, digit, minus, present ^ digit ^ minus


def _misplaced(word: np.ndarray, present: np.ndarray, digit: np.ndarray, minus: np.ndarray, dot: np.ndarray,
               previous: tuple[np.ndarray, np.ndarray, np.ndarray], following_digit: np.ndarray) -> np.ndarray:
    """Nonzero where JSON's grammar fails: a "-" not first or not before a digit, a "." without a
    digit on each side, a leading zero before a digit ("01", "-01"). previous: (present, digit,
    dot) flags of each byte's left neighbour; following_digit: its right neighbour is a digit."""
    previous_present, previous_digit, previous_dot = previous
    zero = (~((word ^ _ZEROS) + _BELOW_HIGH_BIT) >> np.uint64(7)) & _LOW_BITS  # the byte is "0"
    bad = minus & (previous_present | ~following_digit)
    bad |= dot & ~(previous_digit & following_digit)
    bad |= zero & ~(previous_digit | previous_dot) & following_digit
    return bad


def _eight_digits(word: np.ndarray) -> np.ndarray:
    """Up to 8 decimal digits, one per byte (0-9, leftmost digit in byte 0) -> their value (uint64)."""
    word = word * np.uint64(10) + (word >> _BYTE)  # byte 2k: 10 * d[2k] + d[2k + 1]
    pairs_high = (word & np.uint64(0x000000FF000000FF)) * np.uint64(100 + (1000000 << 32))
    pairs_low = ((word >> np.uint64(16)) & np.uint64(0x000000FF000000FF)) * np.uint64(1 + (10000 << 32))
    return (pairs_high + pairs_low) >> np.uint64(32)


def _short_values(word: np.ndarray, out: np.ndarray) -> bool:
    """Tokens of at most 8 characters, right-aligned in one word each, zeros before -> out (N,)
    float64, exactly as strtod; False if one is not a JSON number."""
    present, digit, minus, dot = _flags(word)
    previous = (present << _BYTE, digit << _BYTE, dot << _BYTE)
    if (_misplaced(word, present, digit, minus, dot, previous, digit >> _BYTE) | (dot & (dot - np.uint64(1)))).any():
        return False  # (dot & (dot - 1): a second ".")
    digits = word & _LOW_NIBBLES & (digit * np.uint64(0xFF))  # "-" and "." become 0
    fraction = np.uint64(0) - (dot << _BYTE)  # the bits after the dot's byte (none without a dot)
    # Close the dot's gap: the integer part moves one byte right; without a dot, dot - 1 is all bits.
    integer = (digits & (dot - np.uint64(1))) << (np.minimum(dot, np.uint64(1)) << np.uint64(3))
    mantissa = _eight_digits(integer | (digits & fraction))  # < 10**8
    decimals = (((fraction & _LOW_BITS) * _LOW_BITS) >> _TOP_BYTE).astype(np.intp)  # bytes after the dot
    np.divide(mantissa, _POWERS_OF_TEN[decimals], out=out)  # exact operands: one rounding
    negative = (minus != 0) & ((dot != 0) | (mantissa != 0))  # json reads "-0" as the integer 0
    np.negative(out, out=out, where=negative)
    return True


def _long_values(words: list[np.ndarray]) -> np.ndarray | None:
    """Tokens right-aligned in several words each (leftmost word first), a zero byte before every
    one -> (K,) float64 by numpy's float parser (correctly rounded, as json), or None."""
    flags = [_flags(word) for word in words]
    for k, (word, (present, digit, minus, dot)) in enumerate(zip(words, flags)):
        before = flags[k - 1] if k else None  # the byte left of byte 0 is the previous word's last
        previous = tuple((flag << _BYTE) | (before[i] >> _TOP_BYTE if before else np.uint64(0))
                         for flag, i in ((present, 0), (digit, 1), (dot, 3)))
        following = (digit >> _BYTE) | (flags[k + 1][1] << _TOP_BYTE if k + 1 < len(words) else np.uint64(0))
        if _misplaced(word, present, digit, minus, dot, previous, following).any():
            return None
    dots = sum(((dot * _LOW_BITS) >> _TOP_BYTE) for *_, dot in flags)  # per token
    if (dots > 1).any():
        return None
    text = np.stack(words, axis=1).view(np.uint8)  # (K, bytes): a zero before every token
    text = np.where(text == 0, np.uint8(ord(" ")), text)
    values = np.fromstring(text.tobytes(), dtype=np.float64, sep=" ")
    return values if len(values) == len(words[0]) else None


@dataclass(frozen=True)
class Numbers:
    """A text split into its numbers and the rest.

    skeleton: the text without its number characters, in pieces (joined, a copy of most of the
    text: compare the pieces instead); slots: (N,) int64, the place of each run of number
    characters in the skeleton (the index of the skeleton character after it); values: (N,)
    float64, each run as json reads it, or None when a run is not a JSON number.
    """

    skeleton: list[bytes]
    slots: np.ndarray
    values: np.ndarray | None


def _words_ending_at(words: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The 8 bytes before each end (zeros before the text's start) as uint64. words: the text as
    unaligned loads, words[i] = bytes i .. i + 7."""
    first = ends - WORD
    if first[0] >= 0:  # ends ascend: only a text's first numbers start within 8 bytes of it
        return words[first]
    loaded = words[np.maximum(first, 0)]
    early = first < 0
    loaded[early] = words[0] << (_BYTE * (-first[early]).astype(np.uint64))  # move text[0:end] to the top
    return loaded


def read_numbers(text: bytes) -> Numbers:
    """Split a text into its runs of ``-.0-9`` and the rest; parse the runs as JSON numbers.

    One pass in blocks of ~_TEXT_BLOCK bytes, cut between runs, loads each run's last 8 bytes
    while its block is in cache; then those words are parsed _TOKEN_BLOCK at a time. Runs of more
    than 8 characters are parsed apart, all together.
    """
    if len(text) < WORD:  # room for one word: spaces are no numbers, and stay at the skeleton's end
        numbers = read_numbers(bytes(text) + b" " * WORD)
        skeleton = b"".join(numbers.skeleton)
        return replace(numbers, skeleton=[skeleton[: len(skeleton) - WORD]])
    chars = np.frombuffer(text, dtype=np.uint8)
    words = np.ndarray((len(chars) - WORD + 1,), dtype=_U64, buffer=text, strides=(1,))
    capacity = (len(text) + 1) // 2  # runs are separated: at most one per two characters
    slots = np.empty(capacity, dtype=np.int64)  # pages are touched when written
    last_words = np.empty(capacity, dtype=_U64)  # each run's last 8 bytes, right-aligned, zeros before
    skeleton, long_ends, long_lengths, long_index = [], [], [], []
    skeleton_size, count, low = 0, 0, 0
    while low < len(chars):
        high = min(low + _TEXT_BLOCK, len(chars))
        while high < len(chars) and chars[high] in _NUMBER_CODES:  # a run goes on
            high += 1
        skeleton.append(text[low:high].translate(None, _NUMBER_BYTES))  # faster than a numpy compress
        starts, ends = number_runs(number_mask(chars[low:high]))
        block = slice(count, count + len(starts))
        lengths = ends - starts
        np.subtract(skeleton_size + starts, np.cumsum(lengths) - lengths, out=slots[block])  # number characters before
        if len(starts):
            np.bitwise_and(_words_ending_at(words, ends + low), _KEEP[np.minimum(lengths, WORD)], out=last_words[block])
            if lengths.max() > WORD:  # parsed apart
                long = np.flatnonzero(lengths > WORD)
                long_ends.append(ends[long] + low)
                long_lengths.append(lengths[long])
                long_index.append(long + count)
                last_words[long + count] = _ZERO_TOKEN
        skeleton_size += len(skeleton[-1])
        count += len(starts)
        low = high
    values = np.empty(count)
    for first in range(0, count, _TOKEN_BLOCK):
        block = slice(first, min(first + _TOKEN_BLOCK, count))
        if not _short_values(last_words[block], values[block]):
            return Numbers(skeleton, slots[:count], None)
    if long_ends:
        found = _long_numbers(chars, np.concatenate(long_ends), np.concatenate(long_lengths))
        if found is None:
            return Numbers(skeleton, slots[:count], None)
        values[np.concatenate(long_index)] = found
    return Numbers(skeleton, slots[:count], values)


def _long_numbers(chars: np.ndarray, ends: np.ndarray, lengths: np.ndarray) -> np.ndarray | None:
    """Runs of more than 8 characters, ending at `ends`, as JSON numbers (see ``_long_values``)."""
    width = WORD * (int(lengths.max()) // WORD + 1)  # a zero byte before the longest
    padded = np.zeros(width + len(chars), dtype=np.uint8)
    padded[width:] = chars
    words = np.ndarray((len(padded) - WORD + 1,), dtype=_U64, buffer=padded, strides=(1,))
    # Word k of a run (leftmost first) ends width - 8 k - 8 bytes before the run's end.
    parts = [words[ends + offset] & _KEEP[np.clip(lengths - (width - WORD - offset), 0, WORD)]
             for offset in range(0, width, WORD)]
    return _long_values(parts)
