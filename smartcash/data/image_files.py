"""Which files under a folder are images: the suffixes SmartCash reads, the ones it leaves out with a
warning, and the folders it never reads images from (``smartcash.predict`` outputs)."""

from __future__ import annotations

import logging
import os
import shlex
from collections import Counter
from pathlib import Path

logger = logging.getLogger(__name__)
_warned: set[str] = set()  # a split's files are listed several times a run: each warning is given once

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".mpo",
                            ".dng"})
#: Image formats found in exports and photo folders that SmartCash does not decode: left out with a
#: warning (and named by the checker), never silently.
UNREAD_IMAGE_SUFFIXES = frozenset({".gif", ".heic", ".heif", ".avif", ".jp2", ".svg"})
#: macOS copies to non-Apple disks and zips carry a ``._name`` metadata file beside each file: never an image.
APPLE_METADATA_PREFIX = "._"
#: What ``smartcash.predict`` writes into its save folder: a folder holding it is a predict output
#: (drawn copies of images), whose images are never dataset images nor predict sources.
PREDICT_RESULTS_FILE = "predictions.json"


def predict_output_folders(folder: Path) -> list[Path]:
    """The folders under ``folder`` (itself included) that hold ``smartcash.predict``'s results file, sorted."""
    return sorted(path.parent for path in folder.rglob(PREDICT_RESULTS_FILE) if path.is_file())


def is_inside(path: Path, folders: set[Path]) -> bool:
    """True when ``path`` is one of ``folders`` or lies under one of them (paths compared as given)."""
    return path in folders or any(parent in folders for parent in path.parents)


def files_under(folder: Path) -> list[Path]:
    """Every file under ``folder``, entering linked subfolders (as YOLOv5's recursive glob does;
    ``Path.rglob`` does not before Python 3.13), each real folder once (a link loop ends there)."""
    found: list[Path] = []
    visited: set[str] = set()
    for directory, subfolders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(directory)
        if real in visited:
            subfolders[:] = []
            continue
        visited.add(real)
        subfolders.sort()
        found.extend(Path(directory) / name for name in files)
    return found


def is_image_file(path: Path) -> bool:
    """True for a file SmartCash reads as an image: an image suffix, not macOS metadata (``._x.jpg``)."""
    return (path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(APPLE_METADATA_PREFIX)
            and path.is_file())


def warn_left_out(folder: Path, files: list[Path]) -> None:
    """One warning for the files under ``folder`` (or named by the list file ``folder``) that look like
    images but are not read: macOS metadata files and formats SmartCash does not decode."""
    files = sorted(files)
    metadata = [p for p in files if p.name.startswith(APPLE_METADATA_PREFIX)]
    if metadata:
        fix = (f"delete them with `find -L {shlex.quote(str(folder))} -name '._*' -delete`" if folder.is_dir()
               else "take them out of the list")
        _warn_once(f"{folder}: left out {_count(len(metadata), 'macOS metadata file')} ({metadata[0].name} ...: "
                   f"not images); {fix}")
    unread = [p for p in files if not p.name.startswith(APPLE_METADATA_PREFIX)]
    if unread:
        _warn_once(f"{folder}: left out {_count(len(unread), 'image')} in formats SmartCash does not read "
                   f"({left_out_kinds(unread)}; "
                   f"e.g. {unread[0]}); convert them to .jpg or .png")


def left_out_kinds(files: list[Path]) -> str:
    """``._*: 2, .heic: 3``: left-out files counted by kind (macOS metadata, else the suffix)."""
    kinds = Counter(APPLE_METADATA_PREFIX + "*" if p.name.startswith(APPLE_METADATA_PREFIX) else p.suffix.lower()
                    for p in files)
    return ", ".join(f"{kind}: {n}" for kind, n in sorted(kinds.items()))


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" + ("" if number == 1 else "s")


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def is_unread_image(path: Path) -> bool:
    """A file that looks like an image but is not read (see ``warn_left_out``)."""
    suffix = path.suffix.lower()
    metadata = suffix in IMAGE_SUFFIXES and path.name.startswith(APPLE_METADATA_PREFIX)
    return (suffix in UNREAD_IMAGE_SUFFIXES or metadata) and path.is_file()


def images_in_tree(folder: Path) -> list[Path]:
    """The image files under ``folder`` (``rglob``: linked subfolders are not entered), sorted; what is
    left out gets a warning."""
    files = sorted(folder.rglob("*"))
    warn_left_out(folder, [p for p in files if is_unread_image(p)])
    return [p for p in files if is_image_file(p)]


def without_unread(listed: list[Path], source: Path) -> list[Path]:
    """``listed`` (a list file's entries) less the files that are not read, with a warning."""
    left_out = {p for p in listed if is_unread_image(p)}
    warn_left_out(source, list(left_out))
    return [p for p in listed if p not in left_out] if left_out else listed


def dataset_images_under(folder: Path) -> list[Path]:
    """The images under ``folder`` (linked subfolders too), less a ``smartcash.predict`` output inside
    it (its drawn copies would count as unlabelled backgrounds); what is left out gets a warning."""
    images, outputs, left_out = [], set(), []
    for path in files_under(folder):  # one walk: the images and predict's output folders
        if is_image_file(path):
            images.append(path)
        elif path.name == PREDICT_RESULTS_FILE and path.is_file():
            outputs.add(path.parent)
        elif is_unread_image(path):
            left_out.append(path)
    warn_left_out(folder, left_out)
    for output in sorted(outputs):
        _warn_once(f"{output}: left out of the dataset, a smartcash.predict output (it holds {PREDICT_RESULTS_FILE}); "
                   "move it out of the dataset")
    return [p for p in images if not is_inside(p.parent, outputs)] if outputs else images
