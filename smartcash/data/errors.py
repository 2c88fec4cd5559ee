"""The one exception type of the data layer: a dataset file that cannot be used as it is."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset yaml, image or label file is unusable.

    The message follows ``path[:line]: reason (how to fix it)`` so it can be printed as is.
    """
