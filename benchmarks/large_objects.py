"""A large-object set made from the synthetic notes: a crop around each whole note, fine labels dropped.

Real exports of banknote photos (VND is one) frame one note that fills most of the picture: the
median box is ~0.75 of the image side, against ~0.2 in the built-in synthetic set, whose boxes are
mostly nominal areas and authentication features. A recipe chosen on the built-in set alone says
nothing about that shape of data, and choosing on VND would tune to the data we are scored on.
This set has the shape without being VND: the synthetic generator's notes at 640 px, each cropped
with independent random margins (0-35% of its side per edge, clipped to the picture), labelled
with the whole-note boxes (7 classes) visible in the crop. Deterministic in (seed, split, index).

``python -m benchmarks.large_objects [--num-train N --num-val M]`` prints its data.yaml; the
learning benchmark takes ``--data synthetic-large``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from smartcash.data.synthetic import default_cache_dir, render_sample, synthetic_classes
from smartcash.data.yolo_writer import YoloLayoutWriter
from smartcash.taxonomy import load_taxonomy

VERSION = "v1"
SOURCE_IMGSZ = 640  # drawn large, so a crop is not an upsampled 320 px picture
MAX_MARGIN = 0.35  # per edge, as a fraction of the note's side
MIN_VISIBLE = 0.6  # another note keeps its (clipped) box when this much of it is inside the crop
_MARKER = ".complete"


def _crops(seed: int, split: str, index: int, whole_ids: np.ndarray, classes) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, boxes (n, 5) [class, cx, cy, w, h] normalised) for each whole note of one drawn picture."""
    sample = render_sample(seed, split, index, SOURCE_IMGSZ, classes)
    notes = sample.boxes[np.isin(sample.boxes[:, 0].astype(int), whole_ids)] if len(sample.boxes) else sample.boxes
    if not len(notes):
        return []
    side = SOURCE_IMGSZ
    xyxy = np.concatenate((notes[:, 1:3] - notes[:, 3:5] / 2, notes[:, 1:3] + notes[:, 3:5] / 2), axis=1) * side
    rng = np.random.default_rng([seed, {"train": 0, "val": 1}[split], index, 7])
    out = []
    for box in xyxy:
        size = np.tile(box[2:] - box[:2], 2)
        margin = rng.uniform(0, MAX_MARGIN, 4) * size * np.array([-1, -1, 1, 1])
        x0, y0, x1, y1 = np.clip(np.round(box + margin), 0, side).astype(int)
        clipped = np.clip(xyxy, [x0, y0, x0, y0], [x1, y1, x1, y1])
        area = np.prod(xyxy[:, 2:] - xyxy[:, :2], axis=1)
        visible = np.prod(np.clip(clipped[:, 2:] - clipped[:, :2], 0, None), axis=1) / area
        keep = visible >= MIN_VISIBLE
        width, height = x1 - x0, y1 - y0
        kept = clipped[keep] - [x0, y0, x0, y0]
        boxes = np.column_stack((
            notes[keep, 0], (kept[:, 0] + kept[:, 2]) / 2 / width, (kept[:, 1] + kept[:, 3]) / 2 / height,
            (kept[:, 2] - kept[:, 0]) / width, (kept[:, 3] - kept[:, 1]) / height))
        out.append((np.ascontiguousarray(sample.image[y0:y1, x0:x1]), boxes))
    return out


def ensure_large_object_dataset(seed: int = 0, num_train: int = 500, num_val: int = 120) -> Path:
    """The set's data.yaml under the SmartCash cache, made on first use from ``num_*`` drawn pictures."""
    directory = default_cache_dir() / f"large-objects-{VERSION}-seed{seed}-train{num_train}-val{num_val}"
    if (directory / _MARKER).is_file():
        return directory / "data.yaml"
    taxonomy = load_taxonomy()
    whole_ids = np.array(taxonomy.ids_in_layer(1))
    remap = {int(fine): new for new, fine in enumerate(whole_ids)}
    directory.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{directory.name}-", dir=directory.parent))
    try:
        writer = YoloLayoutWriter(temporary, [taxonomy.names[int(i)] for i in whole_ids])
        classes = synthetic_classes(taxonomy)
        counts = {}
        for split, count in (("train", num_train), ("val", num_val)):
            made = 0
            for index in range(count):
                for crop, boxes in _crops(seed, split, index, whole_ids, classes):
                    boxes[:, 0] = [remap[int(c)] for c in boxes[:, 0]]
                    writer.add_array(split, f"large_{split}_{made:05d}.jpg", crop, boxes,
                                     [cv2.IMWRITE_JPEG_QUALITY, 92])
                    made += 1
            counts[split] = made
        writer.finish()
        (temporary / _MARKER).write_text(json.dumps({"version": VERSION, "seed": seed, **counts}) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        temporary.rename(directory)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return directory / "data.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=500)
    parser.add_argument("--num-val", type=int, default=120)
    args = parser.parse_args(argv)
    print(ensure_large_object_dataset(args.seed, args.num_train, args.num_val))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
