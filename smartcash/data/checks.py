"""Scan a dataset split (every image and label) into good samples and a list of problems.

Shared by the checker CLI (``python -m smartcash.data.check``) and training (through the label
cache). A sample is skipped when its image is unusable, any of its label lines is bad (training
on it with that object missing would teach the model the object is background) or its label file
is read by another image too (``x.jpg`` and ``x.png``: right for one of them at most). Duplicate
rows are only dropped (the sample stays) but still reported.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smartcash.data.dataset_config import DatasetConfig, load_dataset_config
from smartcash.data.image_files import (APPLE_METADATA_PREFIX, PREDICT_RESULTS_FILE, files_under, is_unread_image,
                                        left_out_kinds, predict_output_folders)
from smartcash.data.errors import DatasetError
from smartcash.data.images import probe_image
from smartcash.data.labels import DUPLICATE, LabelProblem, parse_label_file

#: Problem is the label problem type: (path, line, reason, kind); line 0 = the whole file.
Problem = LabelProblem
LABEL_WITHOUT_IMAGE = "label without image"
SHARED_LABEL = "label of several images"
CONFIG_PROBLEM = "dataset yaml problem"
_NON_FATAL = frozenset({DUPLICATE})
_NEEDED = frozenset({"train", "val"})  # splits training reads: absent on disk is a problem, not a note
_IGNORED_LABEL_FILES = frozenset({"classes.txt"})  # labelImg writes one into the labels folder


@dataclass(frozen=True, eq=False)
class Sample:
    """A usable image with its boxes (n, 5) [class, cx, cy, w, h]; class = dataset (yaml) id."""

    image: str
    label: str  # "" when the image has no label file (a background)
    boxes: np.ndarray
    width: int
    height: int


@dataclass(frozen=True)
class SplitReport:
    """What a scan of one split found."""

    split: str
    samples: tuple[Sample, ...]
    problems: tuple[Problem, ...]
    num_images: int
    num_labels: int

    @property
    def num_backgrounds(self) -> int:
        return sum(1 for s in self.samples if len(s.boxes) == 0)

    @property
    def num_skipped(self) -> int:
        return self.num_images - len(self.samples)

    def boxes_per_class(self, num_classes: int) -> np.ndarray:
        """(num_classes,) int64 box counts over the good samples, by dataset class id."""
        classes = [s.boxes[:, 0].astype(np.int64) for s in self.samples if len(s.boxes)]
        joined = np.concatenate(classes) if classes else np.zeros(0, dtype=np.int64)
        return np.bincount(joined, minlength=num_classes)

    def problems_by_kind(self) -> dict[str, int]:
        return dict(Counter(p.kind for p in self.problems).most_common())


@dataclass(frozen=True)
class DatasetReport:
    """Scan of every requested split, plus problems of the yaml itself."""

    data: str
    config: DatasetConfig | None
    splits: tuple[SplitReport, ...]
    config_problems: tuple[Problem, ...]
    notes: tuple[str, ...] = ()  # e.g. a split the yaml names that is absent and was not requested
    warnings: tuple[str, ...] = ()  # usable but suspect, e.g. a val split with no boxes (not in ``ok``)

    @property
    def problems(self) -> tuple[Problem, ...]:
        return self.config_problems + tuple(p for s in self.splits for p in s.problems)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_one(image: Path, label: Path, num_classes: int) -> tuple[Sample | None, list[Problem], bool]:
    probe = probe_image(image)
    problems = [] if probe.ok else [Problem(str(image), 0, probe.problem, probe.kind)]
    has_label = label.is_file()
    boxes = np.zeros((0, 5), dtype=np.float32)
    if has_label:
        parsed = parse_label_file(label, num_classes)
        boxes = parsed.boxes
        problems.extend(parsed.problems)
    if any(p.kind not in _NON_FATAL for p in problems):
        return None, problems, has_label
    sample = Sample(str(image), str(label) if has_label else "", boxes, probe.width, probe.height)
    return sample, problems, has_label


def _orphan_labels(config: DatasetConfig, split: str, images: list[Path]) -> list[Problem]:
    """Label files with no image, in the label folders of the split's image FOLDERS (a list file
    may take a subset of a folder, so its neighbours' labels are no orphans)."""
    expected = {config.label_path(image) for image in images}
    folders_in = [s for s in config.split_sources(split).sources if s.is_dir()]
    folders = {config.label_path(image).parent for image in images
               if any(image.is_relative_to(folder) for folder in folders_in)}
    orphans = sorted(p for folder in folders if folder.is_dir() for p in folder.glob("*.txt")
                     if p not in expected and p.name not in _IGNORED_LABEL_FILES
                     and not p.name.startswith(APPLE_METADATA_PREFIX))
    if not orphans:
        return []
    # The usual cause: the image is there in a format SmartCash does not read (.gif, .heic ...).
    unread = {config.label_path(p): p for folder in folders_in for p in files_under(folder) if is_unread_image(p)}
    return [Problem(str(p), 0, f"{LABEL_WITHOUT_IMAGE} ({_why_no_image(unread.get(p))})", LABEL_WITHOUT_IMAGE)
            for p in orphans]


def _left_out_note(sources: tuple[Path, ...]) -> str:
    """``; left out: N (.heic: N ...)`` for the files under ``sources`` that look like images but are not read."""
    left_out = [p for source in sources if source.is_dir() for p in files_under(source) if is_unread_image(p)]
    if not left_out:
        return ""
    return (f"; left out, as SmartCash does not read them: {len(left_out)} files ({left_out_kinds(left_out)}); "
            "convert them to .jpg or .png")


def _why_no_image(unread: Path | None) -> str:
    if unread is None:
        return "no image with this stem in the split; add the image or delete the label"
    return (f"its image {unread} is a {unread.suffix.lower()} file, a format SmartCash does not read; convert it "
            "to .jpg or .png")


def shared_labels(images: list[Path], labels: list[Path], has_label: list[bool]) -> list[Problem]:
    """Label files that several images of the split read (``x.jpg`` and ``x.png`` both read
    ``x.txt``): each image gets its boxes, which is right for at most one of them."""
    readers: dict[Path, list[str]] = {}
    for image, label, found in zip(images, labels, has_label):
        if found:
            readers.setdefault(label, []).append(image.name)
    return [Problem(str(label), 0, f"{SHARED_LABEL} ({', '.join(names)} all take its boxes; rename or "
                    "remove the duplicate image)", SHARED_LABEL)
            for label, names in sorted(readers.items()) if len(names) > 1]


def no_boxes_reason(config: DatasetConfig, report: SplitReport) -> str:
    """Why a split whose usable images hold not one box is of no use ('' when some box exists):
    train cannot train on it (an error); on val or test nothing can be measured (a warning)."""
    if not report.samples or any(len(sample.boxes) for sample in report.samples):
        return ""
    folders = sorted({str(config.label_path(sample.image).parent) for sample in report.samples})
    found = f"{report.num_labels} label files found; labels are read from {', '.join(folders[:3])}"
    fix = "check that the labels sit in labels/ next to images/, with the images' file stems"
    if report.split == "train":
        return (f"train split has no boxes: its {len(report.samples)} usable images are all backgrounds"
                f" ({found}): {fix}")
    lost = "mAP, best.pt and early stopping" if report.split == "val" else "mAP"
    return (f"{report.split} split has {len(report.samples)} usable images and no labelled boxes ({found}),"
            f" so {lost} cannot be measured on it: {fix}")


def default_scan_threads() -> int:
    """Threads for the scan: image header checks release the GIL."""
    return min(16, 4 * (os.cpu_count() or 1))


def scan_split(config: DatasetConfig, split: str, workers: int | None = None) -> SplitReport:
    """Check every image and label of ``split``.

    Args:
        config: the dataset.
        split: ``train``, ``val`` or ``test``.
        workers: threads for the image checks (default ``default_scan_threads()``).

    Raises:
        DatasetError: the split is missing (see ``DatasetConfig.images``).
    """
    images = config.images(split)
    labels = [config.label_path(image) for image in images]
    num_classes = config.num_source_classes
    with ThreadPoolExecutor(max_workers=workers or default_scan_threads()) as pool:
        results = list(pool.map(lambda pair: _check_one(pair[0], pair[1], num_classes),
                                zip(images, labels)))
    problems = [p for _, found, _ in results for p in found]
    has_label = [found for _, _, found in results]
    problems.extend(_orphan_labels(config, split, images))
    shared = shared_labels(images, labels, has_label)
    problems.extend(shared)
    # A label several images read is right for one at most: none of them trains (as the checker fails it).
    shared_files = {problem.path for problem in shared}
    samples = tuple(sample for sample, _, _ in results if sample is not None and sample.label not in shared_files)
    return SplitReport(split=split, samples=samples, problems=tuple(problems), num_images=len(images),
                       num_labels=len({label for label, found in zip(labels, has_label) if found}))


def _predict_outputs(config: DatasetConfig, split: str) -> list[Path]:
    """The predict output folders inside ``split``'s folders, which ``config.images`` leaves out."""
    sources = config.split_sources(split).sources
    return [folder for source in sources if source.is_dir() for folder in predict_output_folders(source)]


def check_dataset(data: str | os.PathLike[str], splits: tuple[str, ...] | None = None,
                  workers: int | None = None) -> DatasetReport:
    """Load a dataset yaml and scan its splits; yaml errors become problems, not exceptions.

    Args:
        data: the dataset yaml.
        splits: which splits; default every split the yaml names (an absent ``test`` is a note, an
            absent ``train``/``val`` a problem). A requested split that is absent is a problem.
        workers: threads for the image checks.
    """
    try:
        config = load_dataset_config(data)
    except DatasetError as error:
        return DatasetReport(str(data), None, (), (Problem(str(data), 0, str(error).split(": ", 1)[-1],
                                                           CONFIG_PROBLEM),))
    reports: list[SplitReport] = []
    config_problems: list[Problem] = []
    notes: list[str] = []
    warnings: list[str] = []
    if splits is None:  # an absent test split is a note; training cannot run without train and val
        notes = [f"{name}: not found on disk, not checked ({', '.join(source.missing)})"
                 for name, source in config.splits if not config.has_split(name) and name not in _NEEDED]
        splits = tuple(name for name, _ in config.splits if config.has_split(name) or name in _NEEDED)
        named = {name for name, _ in config.splits}
        config_problems += [Problem(str(config.path), 0, f"no `{name}:` entry: training needs train and val "
                                    "(smartcash.data.split makes them)", CONFIG_PROBLEM)
                            for name in sorted(_NEEDED) if name not in named]
    for split in splits:
        try:
            report = scan_split(config, split, workers)
        except DatasetError as error:
            config_problems.append(Problem(str(config.path), 0, str(error).split(": ", 1)[-1],
                                           CONFIG_PROBLEM))
            continue
        reports.append(report)
        warnings.extend(f"{split}: {folder} left out: a smartcash.predict output (it holds {PREDICT_RESULTS_FILE}) "
                        "inside the dataset; move it out" for folder in _predict_outputs(config, split))
        if not report.num_images:  # training refuses a split with no images: so does the checker
            sources = config.split_sources(split)
            config_problems.append(Problem(str(config.path), 0, f"{split} split has no images (in "
                                           f"{', '.join(sources.entries)}){_left_out_note(sources.sources)}",
                                           CONFIG_PROBLEM))
            continue
        no_boxes = no_boxes_reason(config, report)
        if no_boxes and split == "train":  # ... and one with no boxes
            config_problems.append(Problem(str(config.path), 0, no_boxes, CONFIG_PROBLEM))
        elif no_boxes:  # val/test measure nothing: validating on backgrounds may be deliberate, not clean
            warnings.append(no_boxes)
    return DatasetReport(str(data), config, tuple(reports), tuple(config_problems), tuple(notes),
                         tuple(warnings))
