"""Image files -> 8-bit RGB arrays (EXIF orientation applied) and a cheap header/integrity probe."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import cv2
import numpy as np

from smartcash.data.errors import DatasetError

# Problem kinds, counted by the checker.
EMPTY_IMAGE = "0-byte image"
UNREADABLE_IMAGE = "unreadable image"
TRUNCATED_IMAGE = "truncated image"
TINY_IMAGE = "image smaller than 10 px"

_ROTATED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height
_EXIF_ORIENTATION = 0x0112
# cv2 applies EXIF orientation unless IMREAD_IGNORE_ORIENTATION, and IMREAD_COLOR turns grey,
# RGBA (alpha dropped) and 16-bit (>> 8) images into 8-bit 3-channel ones.
_READ_FLAGS = getattr(cv2, "IMREAD_COLOR_RGB", None)


@dataclass(frozen=True)
class ImageProbe:
    """Size of an image as read (after EXIF rotation), or why it cannot be used."""

    path: str
    width: int
    height: int
    problem: str = ""  # empty when the image is usable
    kind: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}


def read_image(path: str | os.PathLike[str], reduce: int = 1) -> np.ndarray:
    """Decode an image as (H, W, 3) uint8 RGB with its EXIF orientation applied.

    Args:
        path: the image file.
        reduce: 1, or 2/4/8 to decode at that fraction of the size (JPEG decodes it directly,
            several times faster: for training when the input is much smaller than the photo).

    Raises:
        DatasetError: the file cannot be decoded.
    """
    if reduce in _REDUCED_FLAGS:  # BGR only
        image = cv2.imread(os.fspath(path), _REDUCED_FLAGS[reduce])
        image = None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif _READ_FLAGS is not None:
        image = cv2.imread(os.fspath(path), _READ_FLAGS)
    else:  # OpenCV 4: BGR
        image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
        image = None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image is None:
        raise DatasetError(f"{path}: {UNREADABLE_IMAGE} (OpenCV cannot decode it; run "
                           "`python -m smartcash.data.check --data <yaml>` to list bad files)")
    return image


def _has_end_marker(handle, marker: bytes) -> bool:
    """True when ``marker`` ends the file, ignoring zero padding some writers append."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(max(0, size - 1024))
    return handle.read().rstrip(b"\x00").endswith(marker)


def _pil_open(path: str):
    """PIL's own ``Image.open``, also once ultralytics has replaced it.

    Importing ultralytics swaps ``PIL.Image.open`` for a wrapper that, on a file PIL cannot
    identify, tries to pip-install a HEIF plugin (network at run time) and raises ImportError
    offline. A garbage file must simply be reported as unreadable.
    """
    from PIL import Image

    opener = Image.open
    if getattr(opener, "__module__", Image.__name__) != Image.__name__:
        opener = getattr(sys.modules.get(opener.__module__), "_image_open", opener)
    return opener(path)


def probe_image(path: str | os.PathLike[str]) -> ImageProbe:
    """Check that an image is complete and return its oriented size without decoding pixels.

    JPEG: header + end-of-image marker; PNG: chunk CRCs up to IEND (PIL ``verify``); other formats:
    a full decode, and a check that OpenCV (the decoder training uses) reads the format at all.
    Releases the GIL in the decoders, so a thread pool scans quickly.
    """
    from PIL import UnidentifiedImageError  # lazy: only the checker needs PIL

    where = os.fspath(path)
    try:
        if os.path.getsize(where) == 0:
            return ImageProbe(where, 0, 0, f"{EMPTY_IMAGE} (an empty file)", EMPTY_IMAGE)
        with _pil_open(where) as image:
            if image.format == "PNG":
                image.verify()  # must come first: chunk CRCs through IEND
        with _pil_open(where) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            if image.format == "JPEG":
                if not _has_end_marker(image.fp, b"\xff\xd9"):
                    return ImageProbe(where, width, height, f"{TRUNCATED_IMAGE} (JPEG has no end-of-image"
                                      " marker; re-export or delete it)", TRUNCATED_IMAGE)
            elif image.format != "PNG":
                image.load()
                if not cv2.haveImageReader(where):  # training decodes with OpenCV, not PIL
                    return ImageProbe(where, width, height, f"{UNREADABLE_IMAGE} ({image.format} data, which"
                                      " OpenCV cannot decode; convert it to JPEG or PNG)", UNREADABLE_IMAGE)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        text = str(error)
        kind = TRUNCATED_IMAGE if "truncated" in text.lower() else UNREADABLE_IMAGE
        return ImageProbe(where, 0, 0, f"{kind} ({text or type(error).__name__})", kind)
    if orientation in _ROTATED_ORIENTATIONS:
        width, height = height, width
    if min(width, height) < 10:
        return ImageProbe(where, width, height, f"{TINY_IMAGE} ({width}x{height})", TINY_IMAGE)
    return ImageProbe(where, width, height)
