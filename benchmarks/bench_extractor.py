"""Classification extractor benchmark: the vectorized ClassificationExtractor vs a per-image Python loop.

``ClassificationExtractor.update`` against a straightforward loop that gives the same answers, at
several batch sizes.

    python -m benchmarks.bench_extractor [--quick] [--device cpu|cuda]

The loop baseline (``LoopExtractor``, below) reads the docstring rules of
``classification_extractor`` and applies them image by image, box by box: predicted denomination =
the denomination with the largest summed score of the layer-1/2 detections scoring at least the
presence threshold ("none" without one), true denomination = the one with the most layer-1/2 boxes
(ties to the lower index), each authentication feature present when detected / labelled. Before
any timing, both accumulate the same batches and their ``compute()`` results must be identical
(the whole ``ClassificationResult.to_dict()``), and their per-image answers for every layer group
must match. Scores are multiples of 1/256 so that float32 and Python sums are exact and equal.

Timed: one ``update(padded, valid, targets)`` per batch (all layer groups and the features, what
validation calls per batch), median of --repeats after a warm-up; on CUDA the loop includes its
copy to the host (``tolist``, once per batch), as such code would. The millions of small Python
objects that ``tolist`` makes set off the garbage collector, a large part of the loop's time at
big batches: the ``gc off`` row shows the loop without it.
"""

from __future__ import annotations

import argparse
import gc
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from benchmarks import workloads
from benchmarks.common import format_table, machine_info, time_call, write_results

MAX_DET = 300  # PredictionProcessor's default: the padded layout's width


@dataclass(frozen=True)
class DetectionBatch:
    padded: Tensor  # (B, MAX_DET, 6) [x1, y1, x2, y2, score, class], zeros after counts[b]
    valid: Tensor  # (B, MAX_DET) bool
    targets: Tensor  # (n, 6) [image, class, cx, cy, w, h]


def make_batch(seed: int, batch_size: int, num_classes: int, device: str, targets_per_image: float = 4.0) -> DetectionBatch:
    """Random detections (0..MAX_DET per image, scores k/256) and ground truth (Poisson boxes per image)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, MAX_DET + 1, batch_size)
    counts[rng.random(batch_size) < 0.05] = 0  # some images with no detection at all
    padded = np.zeros((batch_size, MAX_DET, 6), dtype=np.float32)
    for image, count in enumerate(counts):
        corners = rng.uniform(0, 300, (count, 2))
        padded[image, :count, :2] = corners
        padded[image, :count, 2:4] = corners + rng.uniform(5, 100, (count, 2))
        padded[image, :count, 4] = rng.integers(1, 257, count) / 256.0
        padded[image, :count, 5] = rng.integers(0, num_classes, count)
    valid = np.arange(MAX_DET)[None, :] < counts[:, None]
    boxes = rng.poisson(targets_per_image, batch_size)
    image_index = np.repeat(np.arange(batch_size), boxes)
    targets = np.column_stack([image_index, rng.integers(0, num_classes, len(image_index)),
                               rng.uniform(0.1, 0.9, (len(image_index), 2)), rng.uniform(0.05, 0.3, (len(image_index), 2))])
    return DetectionBatch(torch.from_numpy(padded).to(device), torch.from_numpy(valid).to(device),
                          torch.from_numpy(targets.astype(np.float32)).to(device))


def _first_argmax(values: list[float]) -> int:
    best = 0
    for index, value in enumerate(values):
        if value > values[best]:
            best = index
    return best


class LoopExtractor:
    """The same answers and counts as ``ClassificationExtractor``, one image and one box at a time."""

    def __init__(self, reference: Any) -> None:
        taxonomy = reference.taxonomy
        self.threshold = reference.presence_threshold
        self.layers = taxonomy.layers
        self.groups = reference.groups
        self.num_denominations, self.num_features = reference.num_denominations, reference.num_features
        position = {main_id: index for index, main_id in enumerate(reference.denomination_ids)}
        self.denomination_of = [position.get(main, self.num_denominations) for main in taxonomy.fine_to_main]
        feature_of = {fine: index for index, fine in enumerate(reference.feature_ids)}
        self.feature_of = [feature_of.get(fine, -1) for fine in range(len(self.layers))]
        self.reset()

    def reset(self) -> None:
        size = self.num_denominations + 1
        self.confusion = np.zeros((len(self.groups), size, size), dtype=np.int64)
        self.feature_counts = np.zeros((self.num_features, 4), dtype=np.int64)  # tp, fp, fn, tn

    def answers(self, padded: Tensor, valid: Tensor, targets: Tensor, group: int) -> tuple[list, list, list, list]:
        """Per image: predicted and true denomination (K = none), predicted and true feature sets."""
        return self._answers(padded.tolist(), valid.tolist(), targets.tolist(), group)

    def _answers(self, detections: list, masks: list, truth_rows: list, group: int) -> tuple[list, list, list, list]:
        none, layers_in_group = self.num_denominations, self.groups[group]
        predicted, predicted_features = [], []
        for rows, mask in zip(detections, masks):
            weights, counted, seen = [0.0] * none, False, [False] * self.num_features
            for row, is_valid in zip(rows, mask):
                if not is_valid or row[4] < self.threshold:
                    continue
                fine = int(row[5])
                if self.layers[fine] in layers_in_group:
                    weights[self.denomination_of[fine]] += row[4]
                    counted = True
                if self.feature_of[fine] >= 0:
                    seen[self.feature_of[fine]] = True
            predicted.append(_first_argmax(weights) if counted else none)
            predicted_features.append(seen)
        boxes = [[0] * none for _ in detections]
        true_features = [[False] * self.num_features for _ in detections]
        for image, fine, *_ in truth_rows:
            image, fine = int(image), int(fine)
            if self.layers[fine] in layers_in_group:
                boxes[image][self.denomination_of[fine]] += 1
            if self.feature_of[fine] >= 0:
                true_features[image][self.feature_of[fine]] = True
        truth = [_first_argmax(counts) if sum(counts) else none for counts in boxes]
        return predicted, truth, predicted_features, true_features

    def update(self, padded: Tensor, valid: Tensor, targets: Tensor) -> None:
        rows = padded.tolist(), valid.tolist(), targets.tolist()  # one copy to Python lists per batch
        for group in range(len(self.groups)):
            predicted, truth, predicted_features, true_features = self._answers(*rows, group)
            for guess, answer in zip(predicted, truth):
                self.confusion[group, answer, guess] += 1
        for guesses, answers in zip(predicted_features, true_features):
            for feature, (guess, answer) in enumerate(zip(guesses, answers)):
                self.feature_counts[feature, (0 if answer else 1) if guess else (2 if answer else 3)] += 1

    def compute(self, reference: Any) -> Any:
        """The same ClassificationResult as the reference would build from these counts."""
        saved = reference._confusion, reference._feature_counts
        reference._confusion = torch.from_numpy(self.confusion)
        reference._feature_counts = torch.from_numpy(self.feature_counts)
        try:
            return reference.compute()  # only the count -> metric arithmetic is shared
        finally:
            reference._confusion, reference._feature_counts = saved


def check_same_answers(extractor: Any, loop: LoopExtractor, batches: list[DetectionBatch]) -> None:
    """Per-image answers per layer group, then the accumulated results, must be identical."""
    for batch in batches:
        for group in range(len(extractor.groups)):
            expected = extractor.extract(batch.padded, batch.valid, batch.targets, group)
            predicted, truth, predicted_features, true_features = loop.answers(batch.padded, batch.valid,
                                                                               batch.targets, group)
            assert expected.predicted_denomination.tolist() == predicted, f"group {group}: predicted denominations differ"
            assert expected.true_denomination.tolist() == truth, f"group {group}: true denominations differ"
            assert expected.predicted_features.tolist() == predicted_features, "predicted features differ"
            assert expected.true_features.tolist() == true_features, "true features differ"
    extractor.reset()
    loop.reset()
    for batch in batches:
        extractor.update(batch.padded, batch.valid, batch.targets)
        loop.update(batch.padded, batch.valid, batch.targets)
    vectorized, looped = extractor.compute().to_dict(), loop.compute(extractor).to_dict()
    assert vectorized == looped, f"accumulated results differ:\n{vectorized}\n{looped}"


def run_device(device: str, batch_sizes: list[int], repeats: int) -> dict[str, Any]:
    from smartcash.model.training.core.classification_extractor import ClassificationExtractor
    from smartcash.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    extractor = ClassificationExtractor(taxonomy, presence_threshold=0.25)
    loop = LoopExtractor(extractor)
    check_same_answers(extractor, loop, [make_batch(seed, size, taxonomy.num_classes, device)
                                         for seed, size in enumerate((1, 7, 64))])
    sizes = []
    for batch_size in batch_sizes:
        batch = make_batch(100 + batch_size, batch_size, taxonomy.num_classes, device)

        def vectorized() -> None:
            extractor.update(batch.padded, batch.valid, batch.targets)
            workloads.synchronize(device)

        def looped() -> None:
            loop.update(batch.padded, batch.valid, batch.targets)

        def looped_without_gc() -> None:
            gc.disable()
            try:
                looped()
            finally:
                gc.enable()

        timings = {"smartcash ClassificationExtractor.update": time_call(vectorized, repeats=repeats)[0],
                   "per-image Python loop": time_call(looped, repeats=repeats)[0],
                   "per-image Python loop, gc off": time_call(looped_without_gc, repeats=repeats)[0]}
        reference = timings["smartcash ClassificationExtractor.update"].median_s
        detections = int(batch.valid.sum())
        sizes.append({"batch_size": batch_size, "detections": detections, "targets": len(batch.targets),
                      "tools": {name: {"median_s": timing.median_s, "min_s": timing.min_s, "runs_s": timing.runs_s,
                                       "ratio_to_smartcash": timing.median_s / reference,
                                       "images_per_s": batch_size / timing.median_s}
                                for name, timing in timings.items()}})
    return {"device": device, "answers_identical": True, "batches": sizes}


def print_table(record: dict[str, Any]) -> None:
    rows = []
    for size in record["batches"]:
        for name, tool in size["tools"].items():
            rows.append([size["batch_size"], size["detections"], name, tool["median_s"] * 1e3,
                         f"{tool['ratio_to_smartcash']:.1f}x", f"{tool['images_per_s']:.0f}", "yes"])
    print(f"\nclassification extractor on {record['device']}: one update() per batch "
          f"(3 layer groups + authentication features), padded to {MAX_DET} detections/image")
    print(format_table(["batch", "detections", "tool", "time_ms (median)", "vs smartcash", "images/s",
                        "same answers"], rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    workloads.add_common_arguments(parser, repeats=7)
    parser.add_argument("--batch-sizes", default=None, help="comma-separated (default 16,64,256; 16,64 with --quick)")
    args = parser.parse_args(argv)
    workloads.apply_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 7)
    batch_sizes = [int(size) for size in (args.batch_sizes or ("16,64" if args.quick else "16,64,256")).split(",")]
    records = [run_device(device, batch_sizes, repeats) for device in workloads.devices(args.device)]
    for record in records:
        print_table(record)
    print("same answers: per-image answers of every layer group and the accumulated ClassificationResult were "
          "checked identical before timing")
    info = machine_info(records[0]["device"])
    print(f"machine: {info}")
    path = write_results("extractor_quick" if args.quick else "extractor",
                         {"machine": info, "repeats": repeats, "devices": records})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
