"""What ``smartcash.predict --source`` names: the image files to predict (a file, or a folder's
images without earlier predict outputs), each decoded or the reason it cannot be, a batch read
ahead on threads while the model works on the one before; and where each drawn copy goes."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from smartcash.data.image_files import IMAGE_SUFFIXES, images_in_tree, is_inside, predict_output_folders

logger = logging.getLogger(__name__)

#: Suffixes cv2.imwrite writes back as they are; drawn images of other formats become ``name.jpg``.
_WRITABLE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp"})
_VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv"})
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class ArgumentsError(ValueError):
    """A path or value on the command line cannot be used."""


def check_source(source: str | os.PathLike[str]) -> None:
    """Refuse a --source that names no local image or folder: empty, a URL, a video.

    Raises:
        ArgumentsError: with the text as given (``Path`` would read "" as the current folder and
        turn ``https://`` into ``https:/``).
    """
    text = os.fspath(source)
    if not text.strip():
        raise ArgumentsError("--source is empty: give an image file or a folder (. for the current folder)")
    if _URL.match(text):
        raise ArgumentsError(f"--source {text}: URLs are not supported (download the file first)")
    if Path(text).suffix.lower() in _VIDEO_SUFFIXES and not Path(text).is_dir():
        raise ArgumentsError(f"--source {text}: videos are not supported (extract frames first, e.g. "
                             "ffmpeg -i VIDEO frames/%05d.jpg)")


def find_images(source: str | os.PathLike[str], save_dir: Path | None = None) -> list[Path]:
    """The image file itself, or the images under a folder (recursive, sorted).

    Left out: the images under ``save_dir`` and under any folder holding a ``predictions.json``
    (an earlier run's drawings, when the output sits inside the source).

    Raises:
        ArgumentsError: an empty source, a URL, a video, a path that does not exist, or a folder without images.
    """
    check_source(source)
    path = Path(source)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ArgumentsError(f"--source {path}: no such file or folder")
    outputs = {folder.resolve() for folder in predict_output_folders(path)}
    if save_dir is not None:
        outputs.add(save_dir.resolve())
    images, drawn = [], 0
    for candidate in images_in_tree(path):
        if is_inside(candidate.parent.resolve(), outputs):
            drawn += 1
        else:
            images.append(candidate)
    if drawn:
        logger.warning("--source %s: left out %d drawn images of predict runs inside it (%s)", path, drawn,
                       ", ".join(sorted(str(folder) for folder in outputs)))
    if not images:
        raise ArgumentsError(f"--source {path}: no images ({' '.join(sorted(IMAGE_SUFFIXES))}) found in this folder")
    return images


def read_source_image(path: Path) -> np.ndarray | str:
    """(H, W, 3) uint8 RGB, or the reason the file cannot be used."""
    from smartcash.data.errors import DatasetError
    from smartcash.data.images import EMPTY_IMAGE, UNREADABLE_IMAGE, read_image

    try:
        if path.stat().st_size == 0:
            return f"{EMPTY_IMAGE} (an empty file)"
        return read_image(path)
    except DatasetError:  # read_image's only failure: OpenCV returned nothing
        return f"{UNREADABLE_IMAGE} (OpenCV cannot decode it)"
    except OSError as error:
        return f"cannot read the file ({error.strerror or error})"


def drawn_path(image: Path, source: Path, save_dir: Path) -> Path:
    """Where the drawn copy of ``image`` goes: its path relative to the source folder, under save_dir."""
    relative = Path(image.name) if source.is_file() else image.relative_to(source)
    if relative.suffix.lower() not in _WRITABLE_SUFFIXES:
        relative = relative.with_name(relative.name + ".jpg")
    return save_dir / relative


def decoding_batches(paths: Sequence[Path], batch_size: int,
                     pool: ThreadPoolExecutor) -> Iterator[list[tuple[Path, Future]]]:
    """Batches of (path, future image) with the next batch already decoding (cv2 releases the GIL)."""
    pending = None
    # One step past the end: the last, empty, slice only flushes the pending batch.
    for start in range(0, len(paths) + batch_size, batch_size):
        batch = [(path, pool.submit(read_source_image, path)) for path in paths[start:start + batch_size]]
        if pending:
            yield pending
        pending = batch

