"""The one exception type of the data layer: a dataset file that cannot be used as it is."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset yaml, image or label file is unusable.

    The message follows ``path[:line]: reason (how to fix it)`` so it can be printed as is.
    """


def not_utf8(error: UnicodeDecodeError) -> str:
    """The reason for a text file that is not UTF-8 (a Latin-1 or UTF-16 export): where, and the fix."""
    return f"not UTF-8 text (byte {error.start} is 0x{error.object[error.start]:02x}); save the file as UTF-8"
