"""Decoded-image cache of the training loader (``--cache none|ram|disk``).

Every training sample starts from the same image: the source decoded at a reduced size (JPEG
decodes 1/2, 1/4, 1/8 directly) and resized so its long side is imgsz. ``ram`` keeps those
images in memory, filled once in the main process before the loader forks its workers (they
share it copy-on-write); ``disk`` keeps one ``.npy`` per image beside it (``a.jpg`` ->
``a.jpg.<imgsz>.npy``; the imgsz in the name keeps ultralytics' own ``a.npy`` and other sizes
apart) or, in a read-only folder, under ``$SMARTCASH_CACHE/images``. A cached image is the
array the decode would give, so batches are bit-identical with and without a cache. Under DDP
every rank fills its own ``ram`` copy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smartcash.atomic import atomic_open
from smartcash.data.augment import resize_long_side
from smartcash.data.images import read_image
from smartcash.data.label_cache import cache_root, writable_folder

logger = logging.getLogger(__name__)

CACHE_MODES = ("none", "ram", "disk")
#: Largest share of the available memory a ``ram`` cache may take: the model, the optimiser,
#: the loader workers' augmentation buffers and the page cache need the rest. Shared among
#: torchrun's local processes, which fill their caches at the same time.
RAM_FRACTION = 0.5
#: Bump when the ``.npy`` layout or the decode/resize changes: older files are then rebuilt.
DISK_VERSION = 1
_GB = 1e9


@dataclass(frozen=True)
class CachedImage:
    """One image as every training sample starts from it."""

    image: np.ndarray  # (h, w, 3) uint8 RGB, long side = imgsz
    decoded_shape: tuple[int, int]  # (height, width) of the (reduced) decode it was resized from


def decode_reduction(shape: np.ndarray | tuple[int, int], imgsz: int) -> int:
    """Largest decode reduction (1, 2, 4, 8) that still leaves the long side >= imgsz."""
    long_side = int(max(shape))
    return next((r for r in (8, 4, 2) if long_side >= r * imgsz), 1)


def decode_resized(path: str, shape: np.ndarray | tuple[int, int], imgsz: int) -> CachedImage:
    """Decode ``path`` (reduced where its scanned ``shape`` allows) and resize to long side imgsz."""
    decoded = read_image(path, decode_reduction(shape, imgsz))
    image, _ = resize_long_side(decoded, imgsz, fast=True)
    return CachedImage(image, (int(decoded.shape[0]), int(decoded.shape[1])))


def resized_bytes(shapes: np.ndarray, imgsz: int) -> int:
    """Bytes of the resized RGB images of ``shapes`` (N, 2) [height, width]."""
    scale = imgsz / shapes.max(axis=1).clip(min=1)  # (N,)
    sides = np.maximum(1, np.round(shapes * scale[:, None]))  # (N, 2)
    return int((sides[:, 0] * sides[:, 1] * 3).sum())


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup v2 memory limit (a container's); None when unlimited."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        return None


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux MemAvailable, capped by a container's
    cgroup limit; else free pages); None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024  # kB
                    room = _cgroup_room()
                    return available if room is None else min(available, room)
    except (OSError, ValueError, IndexError):
        pass  # no /proc (macOS, BSD): sysconf below
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class ImageSource:
    """``--cache none``: every request decodes and resizes the source again."""

    mode = "none"

    def __init__(self, paths: list[str], shapes: np.ndarray, imgsz: int) -> None:
        self.paths, self.shapes, self.imgsz = paths, shapes, imgsz

    def get(self, index: int) -> CachedImage:
        return decode_resized(self.paths[index], self.shapes[index], self.imgsz)


def _fill(function, count: int, description: str, workers: int | None) -> list:
    """``function(i)`` for i < count on a thread pool (OpenCV releases the GIL), with a progress bar
    on stderr when it is a terminal (a log file gets the one summary line instead)."""
    from tqdm import tqdm

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(function, range(count)), total=count, desc=description, unit="img",
                         file=sys.stderr, disable=None, mininterval=1.0, leave=False, dynamic_ncols=True))


class RamImages(ImageSource):
    """``--cache ram``: all images decoded once, held in this process (and shared by forked workers)."""

    mode = "ram"

    def __init__(self, paths: list[str], shapes: np.ndarray, imgsz: int, workers: int | None = None) -> None:
        super().__init__(paths, shapes, imgsz)
        started = time.perf_counter()
        self.images: list[CachedImage] = _fill(super().get, len(paths), "cache ram", workers)
        for cached in self.images:
            cached.image.flags.writeable = False  # shared by every sample: augmentation must copy
        total = sum(cached.image.nbytes for cached in self.images)
        logger.info("cache ram: %d images at imgsz %d, %.2f GB in %.1f s", len(paths), imgsz, total / _GB,
                    time.perf_counter() - started)

    def get(self, index: int) -> CachedImage:
        return self.images[index]


class DiskImages(ImageSource):
    """``--cache disk``: one ``.npy`` per image: a header array, then the image.

    The header (int64) is [DISK_VERSION, source size, source mtime_ns, imgsz, reduction,
    decoded height, decoded width]: a file whose header does not match the source as it is now
    (or that cannot be read) is rebuilt, silently; writes are atomic (``smartcash.atomic``).
    """

    mode = "disk"

    def __init__(self, paths: list[str], shapes: np.ndarray, imgsz: int, workers: int | None = None) -> None:
        super().__init__(paths, shapes, imgsz)
        self._folders: dict[Path, Path] = {}
        self._write_failures = 0
        self._lock = threading.Lock()
        started = time.perf_counter()
        written = _fill(self._ensure, len(paths), "cache disk", workers)
        folders = sorted({str(self.cache_path(i).parent) for i in range(len(paths))})
        logger.info("cache disk: %d images at imgsz %d (%d written, %d reused), %.2f GB in %.1f s, in %s",
                    len(paths), imgsz, sum(written), len(paths) - sum(written),
                    resized_bytes(shapes, imgsz) / _GB, time.perf_counter() - started,
                    folders[0] if len(folders) == 1 else f"{len(folders)} folders")

    def __getstate__(self) -> dict:
        """Picklable for workers that are spawned instead of forked (macOS, Python 3.14+): no lock."""
        state = dict(self.__dict__)
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def cache_path(self, index: int) -> Path:
        """``<image>.<imgsz>.npy`` beside the image, or under ``$SMARTCASH_CACHE/images`` when read-only."""
        source = Path(self.paths[index])
        folder = self._folders.get(source.parent)
        if folder is None:
            folder = source.parent
            if not writable_folder(folder):
                digest = hashlib.sha256(str(folder.resolve()).encode("utf-8")).hexdigest()[:16]
                folder = cache_root() / "images" / digest
            self._folders[source.parent] = folder
        return folder / f"{source.name}.{self.imgsz}.npy"

    def _header(self, index: int) -> np.ndarray:
        """The header a current cache file of image ``index`` has, less the decoded shape (5,)."""
        info = os.stat(self.paths[index])
        return np.array([DISK_VERSION, info.st_size, info.st_mtime_ns, self.imgsz,
                         decode_reduction(self.shapes[index], self.imgsz)], dtype=np.int64)

    def _read(self, index: int, with_image: bool = True) -> CachedImage | None:
        """The cached image when the file is current, else None (missing, stale, truncated, not ours).

        Without ``with_image`` only the header is read and checked (the returned image is empty).
        """
        try:
            with open(self.cache_path(index), "rb") as handle:
                header = np.load(handle, allow_pickle=False)
                if header.shape != (7,) or not np.array_equal(header[:5], self._header(index)):
                    return None
                decoded = (int(header[5]), int(header[6]))
                image = np.load(handle, allow_pickle=False) if with_image else np.empty((0, 0, 3), np.uint8)
        except (OSError, ValueError, EOFError):
            return None
        if with_image and (image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3
                           or max(image.shape[:2]) != self.imgsz):
            return None
        return CachedImage(image, decoded)

    def _build(self, index: int) -> CachedImage:
        """Decode and resize the source, then write its cache file (a failed write is counted and logged)."""
        cached = super().get(index)
        header = np.concatenate([self._header(index), np.array(cached.decoded_shape, dtype=np.int64)])
        try:
            with atomic_open(self.cache_path(index), "wb") as handle:
                np.save(handle, header)
                np.save(handle, cached.image)
        except OSError as error:
            with self._lock:
                self._write_failures += 1
                failures = self._write_failures
            if failures == 1 or failures % 1000 == 0:  # a full disk: a line per thousand, not per image
                logger.warning("cache disk: cannot write %s (%s); %d image(s) decoded without the cache "
                               "so far", self.cache_path(index), error, failures)
        return cached

    def _ensure(self, index: int) -> bool:
        """Make image ``index``'s cache file current. Returns True when it had to be written."""
        if self._read(index, with_image=False) is not None:
            return False
        self._build(index)
        return True

    def get(self, index: int) -> CachedImage:
        return self._read(index) or self._build(index)


def open_image_cache(mode: str, paths: list[str], shapes: np.ndarray, imgsz: int,
                     workers: int | None = None) -> ImageSource:
    """The image source of ``mode`` (one of ``CACHE_MODES``), filled now.

    ``ram`` falls back to ``none`` with one warning when the images would take more than
    ``RAM_FRACTION`` of the available memory (divided among torchrun's ``LOCAL_WORLD_SIZE``
    processes: under DDP every rank holds its own copy).

    Args:
        mode: none | ram | disk.
        paths: the image files; shapes: (N, 2) [height, width] of each as scanned.
        imgsz: the long side of the cached images.
        workers: threads that fill the cache (default: CPU count, at most 8).
    """
    if mode not in CACHE_MODES:
        raise ValueError(f"cache {mode!r}: must be one of {', '.join(CACHE_MODES)}")
    if mode == "ram":
        needed, available = resized_bytes(shapes, imgsz), available_memory()
        share = RAM_FRACTION / max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        if available is not None and needed > share * available:
            logger.warning("cache ram: %d images at imgsz %d need %.2f GB, more than %.0f%% of the %.2f GB "
                           "of memory available: training without an image cache (--cache none; "
                           "--cache disk needs no memory)", len(paths), imgsz, needed / _GB,
                           100 * share, available / _GB)
            mode = "none"
    if mode == "ram":
        return RamImages(paths, shapes, imgsz, workers)
    if mode == "disk":
        return DiskImages(paths, shapes, imgsz, workers)
    return ImageSource(paths, shapes, imgsz)
