"""mAP benchmark: SmartCash's calculator against pycocotools, faster-coco-eval, torchmetrics and
ultralytics, on the same synthetic validation set, in one run; then ``evaluate_coco`` against
pycocotools, faster-coco-eval and torchmetrics on the same COCO JSON files (all 12 stats).

    python -m benchmarks.bench_map [--quick] [--device cpu] [--cases calculator,coco,dense]

``dense``: one image crowded with boxes of one class (8,000 predictions and 8,000 ground truths;
3,000 with --quick), each tool in a fresh process: time and the process's peak resident memory.

Also holds the reference adapters (`run_pycocotools`, `run_faster_coco_eval`, `run_ultralytics`,
`run_torchmetrics`, and for COCO files `cocoeval_pycocotools`, `cocoeval_faster`) that the parity
tests reuse: each feeds its tool exactly our inputs.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import memory
from benchmarks.common import format_table, import_time, machine_info, time_call, write_results

os.environ.setdefault("YOLO_OFFLINE", "1")


@dataclass(frozen=True)
class Case:
    """A validation set: per image predictions (N_i, 6) [x1, y1, x2, y2, score, class] and
    targets (M_i, 5) [class, x1, y1, x2, y2], numpy float64."""

    predictions: list[np.ndarray]
    targets: list[np.ndarray]
    num_classes: int


def make_case(
    seed: int,
    num_images: int,
    num_classes: int,
    targets_per_image: float = 3.0,
    predictions_per_target: float = 8.0,
    false_positives_per_image: float = 6.0,
    integer_boxes: bool = False,
    score_decimals: int | None = None,
    image_size: float = 640.0,
) -> Case:
    """Realistic-ish detections: jittered copies of each target (some with a wrong class) plus
    random false positives; scores in [0, 1], higher for better boxes."""
    rng = np.random.default_rng(seed)
    predictions, targets = [], []
    for _ in range(num_images):
        count = rng.poisson(targets_per_image)
        centre = rng.uniform(0.1, 0.9, (count, 2)) * image_size
        size = rng.uniform(0.03, 0.4, (count, 2)) * image_size
        boxes = np.concatenate([centre - size / 2, centre + size / 2], 1)
        classes = rng.integers(0, num_classes, count)
        copies = rng.poisson(predictions_per_target, count)
        source = np.repeat(np.arange(count), copies)
        jitter = rng.normal(0, 0.08, (len(source), 4)) * np.tile(size[source], 2)
        predicted = boxes[source] + jitter
        quality = np.exp(-np.abs(jitter).sum(1) / np.maximum(size[source].sum(1), 1e-9) * 4)
        predicted_classes = np.where(rng.random(len(source)) < 0.9, classes[source], rng.integers(0, num_classes, len(source)))
        extra = rng.poisson(false_positives_per_image)
        extra_centre = rng.uniform(0, 1, (extra, 2)) * image_size
        extra_size = rng.uniform(0.02, 0.3, (extra, 2)) * image_size
        predicted = np.concatenate([predicted, np.concatenate([extra_centre - extra_size / 2, extra_centre + extra_size / 2], 1)])
        scores = np.concatenate([0.3 + 0.7 * quality * rng.uniform(0.6, 1, len(source)), rng.uniform(0, 0.7, extra)])
        predicted_classes = np.concatenate([predicted_classes, rng.integers(0, num_classes, extra)])
        if integer_boxes:
            boxes, predicted = np.round(boxes), np.round(predicted)
        if score_decimals is not None:
            scores = np.round(scores, score_decimals)
        predicted = np.concatenate([np.minimum(predicted[:, :2], predicted[:, 2:]), np.maximum(predicted[:, :2], predicted[:, 2:])], 1)
        predictions.append(np.column_stack([predicted, np.clip(scores, 0, 1), predicted_classes]).astype(np.float64))
        targets.append(np.column_stack([classes, boxes]).astype(np.float64))
    return Case(predictions, targets, num_classes)


@dataclass(frozen=True)
class Reference:
    """What a reference tool reports: map50, map50_95 and per-class AP (C, 10), NaN if absent."""

    map50: float
    map50_95: float
    ap: np.ndarray | None = None
    precision: np.ndarray | None = None
    recall: np.ndarray | None = None
    f1: np.ndarray | None = None


def _coco_dicts(case: Case) -> tuple[dict, list[dict]]:
    """COCO ground-truth dataset and results list; image ids 1.. in case order, category id = class + 1."""
    annotations, results = [], []
    for image, (target, prediction) in enumerate(zip(case.targets, case.predictions)):
        for cls, x1, y1, x2, y2 in target.tolist():
            w, h = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": image + 1, "category_id": int(cls) + 1,
                                "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0})
        for x1, y1, x2, y2, score, cls in prediction.tolist():
            results.append({"image_id": image + 1, "category_id": int(cls) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    dataset = {
        "images": [{"id": image + 1, "width": 640, "height": 640} for image in range(len(case.targets))],
        "categories": [{"id": cls + 1, "name": str(cls)} for cls in range(case.num_classes)],
        "annotations": annotations,
    }
    return dataset, results


def _coco_reference(evaluator) -> Reference:
    precision = evaluator.eval["precision"][:, :, :, 0, 2]  # (T, R, K)
    ap = np.where((precision > -1).all(1), precision.mean(1), np.nan).T  # (K, T)
    stats = np.where(evaluator.stats[:2] == -1, np.nan, evaluator.stats[:2])  # -1: no ground truth at all
    return Reference(float(stats[1]), float(stats[0]), ap)


def run_pycocotools(case: Case) -> Reference:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset, results = _coco_dicts(case)
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = dataset
        truth.createIndex()
        evaluator = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return _coco_reference(evaluator)


def run_faster_coco_eval(case: Case) -> Reference:
    from faster_coco_eval import COCO, COCOeval_faster

    dataset, results = _coco_dicts(case)
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(dataset)
        evaluator = COCOeval_faster(truth, truth.loadRes(results), "bbox", print_function=lambda *a, **k: None)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return _coco_reference(evaluator)


def run_torchmetrics(case: Case) -> Reference:
    import torch
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="faster_coco_eval")
    predictions = [{"boxes": torch.from_numpy(p[:, :4]), "scores": torch.from_numpy(p[:, 4]), "labels": torch.from_numpy(p[:, 5]).long()} for p in case.predictions]
    targets = [{"boxes": torch.from_numpy(t[:, 1:5]), "labels": torch.from_numpy(t[:, 0]).long()} for t in case.targets]
    metric.update(predictions, targets)
    with contextlib.redirect_stdout(io.StringIO()):
        result = metric.compute()
    return Reference(float(result["map_50"]), float(result["map"]))


def nms_order(prediction: np.ndarray) -> np.ndarray:
    """Rows by float32 score descending, ties in row order: the order our yolo mode assumes NMS gives."""
    return prediction[np.argsort(-prediction[:, 4].astype(np.float32), kind="stable")]


def run_ultralytics(case: Case) -> Reference:
    """DetectionValidator.update_metrics + Metric.process, reduced to what touches the numbers."""
    import torch
    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils.metrics import ap_per_class, box_iou

    class Matcher:  # match_predictions only reads self.iouv
        iouv = torch.linspace(0.5, 0.95, 10)

    stats = {"tp": [], "conf": [], "pred_cls": [], "target_cls": []}
    for prediction, target in zip(case.predictions, case.targets):
        prediction = torch.from_numpy(nms_order(prediction)).float()
        target = torch.from_numpy(target).float()
        if len(prediction) and len(target):
            iou = box_iou(target[:, 1:5], prediction[:, :4])
            tp = BaseValidator.match_predictions(Matcher(), prediction[:, 5], target[:, 0], iou).cpu().numpy()
        else:
            tp = np.zeros((len(prediction), 10), dtype=bool)
        stats["tp"].append(tp)
        stats["conf"].append(np.zeros(0) if not len(prediction) else prediction[:, 4].numpy())
        stats["pred_cls"].append(np.zeros(0) if not len(prediction) else prediction[:, 5].numpy())
        stats["target_cls"].append(target[:, 0].numpy())
    stats = {key: np.concatenate(value, 0) for key, value in stats.items()}
    _, _, p, r, f1, ap, classes, *_ = ap_per_class(stats["tp"], stats["conf"], stats["pred_cls"], stats["target_cls"])
    full = np.full((case.num_classes, 10), np.nan)
    full[classes] = ap
    per_class = [np.full(case.num_classes, np.nan) for _ in range(3)]
    for values, array in zip(per_class, (p, r, f1)):
        values[classes] = array
    map50 = float(ap[:, 0].mean()) if len(ap) else 0.0
    return Reference(map50, float(ap.mean()) if len(ap) else 0.0, full, *per_class)


def make_coco_case(seed: int, num_images: int, num_categories: int = 80) -> tuple[dict, list[dict]]:
    """A COCO-like dataset and results list: non-contiguous image and category ids, ~7 objects per
    image with sizes spread over small / medium / large (``area`` = polygon area, smaller than the
    box), 1% crowds, polygon segmentations, and detections as json.dump writes them from a model:
    ~3 jittered copies per object (some with a wrong category), ~15 false positives per image,
    coordinates rounded to 2 decimals and scores to 3 (so scores tie)."""
    rng = np.random.default_rng(seed)
    image_ids = np.sort(rng.choice(600_000, num_images, replace=False)) + 1
    category_ids = np.sort(rng.choice(90, num_categories, replace=False)) + 1
    images, annotations, results = [], [], []
    for image_id in image_ids.tolist():
        width, height = 640, int(rng.integers(360, 641))
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": width, "height": height})
        count = rng.poisson(7)
        side = np.exp(rng.uniform(np.log(4), np.log(400), (count, 1))) * rng.uniform(0.6, 1.4, (count, 2))
        size = np.minimum(side, [width, height])
        box = np.round(np.concatenate([rng.uniform(0, 1, (count, 2)) * ([width, height] - size), size], 1), 2)
        area = np.round(box[:, 2] * box[:, 3] * rng.uniform(0.5, 0.95, count), 2)
        crowd = rng.random(count) < 0.01
        categories = rng.choice(category_ids, count)
        for b, a, c, k in zip(box.tolist(), area.tolist(), categories.tolist(), crowd.tolist()):
            x, y, w, h = b
            polygon = [round(v, 2) for v in (x, y, x + w, y, x + w, y + h, x + w / 2, y + h * 0.8, x, y + h)]
            annotations.append({"segmentation": [polygon], "area": a, "iscrowd": int(k), "image_id": image_id,
                                "bbox": b, "category_id": c, "id": len(annotations) + 1})
        source = np.repeat(np.arange(count), rng.poisson(3, count))
        jitter = rng.normal(0, 0.1, (len(source), 4)) * np.tile(size[source], 2)
        quality = np.exp(-np.abs(jitter).sum(1) / size[source].sum(1) * 4)
        labels = np.where(rng.random(len(source)) < 0.9, categories[source], rng.choice(category_ids, len(source)))
        extra = rng.poisson(15)
        extra_box = np.concatenate([rng.uniform(0, 1, (extra, 2)) * [width, height],
                                    np.exp(rng.uniform(np.log(4), np.log(300), (extra, 2)))], 1)
        boxes = np.concatenate([box[source] + jitter, extra_box])
        boxes[:, 2:] = np.abs(boxes[:, 2:])
        scores = np.concatenate([0.2 + 0.8 * quality * rng.uniform(0.5, 1, len(source)), rng.uniform(0, 0.6, extra)])
        labels = np.concatenate([labels, rng.choice(category_ids, extra)])
        for b, score, c in zip(np.round(boxes, 2).tolist(), np.round(scores, 3).tolist(), labels.tolist()):
            results.append({"image_id": image_id, "category_id": c, "bbox": b, "score": score})
    dataset = {"info": {"description": "SmartCash synthetic COCO case"}, "images": images, "annotations": annotations,
               "categories": [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in category_ids.tolist()]}
    return dataset, results


def cocoeval_pycocotools(ground_truth, detections, params: dict | None = None):
    """pycocotools COCOeval (bbox) on a dataset dict or JSON path and a results list, array or path;
    params: attributes of COCOeval.params to set (imgIds, catIds, maxDets, useCats, areaRng ...).
    Returns the COCOeval after evaluate / accumulate / summarize."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(ground_truth, dict):
            truth = COCO()
            truth.dataset = copy.deepcopy(ground_truth)
            truth.createIndex()
        else:
            truth = COCO(str(ground_truth))
        found = truth.loadRes(copy.deepcopy(detections) if isinstance(detections, list) else
                              (str(detections) if isinstance(detections, (str, Path)) else detections))
        return _run_cocoeval(COCOeval(truth, found, "bbox"), params)


def _run_cocoeval(evaluator, params: dict | None):
    """Set ``params`` on a COCOeval-like evaluator, then evaluate, accumulate and summarize it."""
    for name, value in (params or {}).items():
        setattr(evaluator.params, name, value)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator


def cocoeval_faster(ground_truth, detections, params: dict | None = None):
    """faster-coco-eval's COCOeval_faster, the same way as ``cocoeval_pycocotools``."""
    from faster_coco_eval import COCO, COCOeval_faster

    with contextlib.redirect_stdout(io.StringIO()):
        source = copy.deepcopy(ground_truth) if isinstance(ground_truth, dict) else str(ground_truth)
        truth = COCO(source)
        found = truth.loadRes(copy.deepcopy(detections) if isinstance(detections, list) else str(detections))
        return _run_cocoeval(COCOeval_faster(truth, found, "bbox", print_function=lambda *a, **k: None), params)


def torchmetrics_inputs(dataset: dict, results: list[dict]) -> tuple[list[dict], list[dict]]:
    """Per-image prediction / target tensors for torchmetrics, images in id order (COCO's order)."""
    import torch

    by_image: dict[int, dict[str, list]] = {image["id"]: {"d": [], "t": []} for image in dataset["images"]}
    for detection in results:
        by_image[detection["image_id"]]["d"].append(detection)
    for annotation in dataset["annotations"]:
        by_image[annotation["image_id"]]["t"].append(annotation)
    predictions, targets = [], []
    for image_id in sorted(by_image):
        found, truth = by_image[image_id]["d"], by_image[image_id]["t"]
        predictions.append({"boxes": torch.tensor([d["bbox"] for d in found], dtype=torch.float64).reshape(-1, 4),
                            "scores": torch.tensor([d["score"] for d in found], dtype=torch.float64),
                            "labels": torch.tensor([d["category_id"] for d in found], dtype=torch.long)})
        targets.append({"boxes": torch.tensor([a["bbox"] for a in truth], dtype=torch.float64).reshape(-1, 4),
                        "labels": torch.tensor([a["category_id"] for a in truth], dtype=torch.long),
                        "iscrowd": torch.tensor([a["iscrowd"] for a in truth], dtype=torch.long),
                        "area": torch.tensor([a["area"] for a in truth], dtype=torch.float64)})
    return predictions, targets


def run_torchmetrics_coco(predictions: list[dict], targets: list[dict]) -> np.ndarray:
    """torchmetrics MeanAveragePrecision (faster_coco_eval backend, xywh boxes): its 12 COCO stats."""
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xywh", iou_type="bbox", backend="faster_coco_eval")
    metric.update(predictions, targets)
    with contextlib.redirect_stdout(io.StringIO()):
        result = metric.compute()
    names = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
             "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")
    return np.array([float(result[name]) for name in names])


def run_smartcash(case: Case, mode: str, device: str = "cpu", batch_size: int = 32):
    from smartcash.model.training.core.parallel_map_calculator import ParallelMapCalculator

    calculator = ParallelMapCalculator(case.num_classes, mode=mode)
    predictions, targets = case.predictions, case.targets
    if device != "cpu":
        import torch

        predictions = [torch.from_numpy(p).to(device) for p in predictions]
        targets = [torch.from_numpy(t).to(device) for t in targets]
    for start in range(0, len(predictions), batch_size):
        calculator.update(predictions[start : start + batch_size], targets[start : start + batch_size])
    return calculator.compute()


def bench_calculator(args: argparse.Namespace) -> None:
    """ParallelMapCalculator (coco and yolo modes) against the reference tools, in memory."""
    num_images = 500 if args.quick else 5000
    case = make_case(0, num_images, 17, targets_per_image=3.0, predictions_per_target=8.0, false_positives_per_image=6.0)
    num_targets = sum(len(t) for t in case.targets)
    num_predictions = sum(len(p) for p in case.predictions)
    print(f"{num_images} images, 17 classes, {num_targets} targets, {num_predictions} predictions", file=sys.stderr)

    tools = [
        ("smartcash coco", lambda: run_smartcash(case, "coco", args.device), "smartcash.model.training.core.parallel_map_calculator"),
        ("smartcash yolo", lambda: run_smartcash(case, "yolo", args.device), "smartcash.model.training.core.parallel_map_calculator"),
        ("pycocotools", lambda: run_pycocotools(case), "pycocotools.cocoeval"),
        ("faster-coco-eval", lambda: run_faster_coco_eval(case), "faster_coco_eval"),
        ("torchmetrics (faster_coco_eval)", lambda: run_torchmetrics(case), "torchmetrics.detection"),
        ("ultralytics", lambda: run_ultralytics(case), "ultralytics.utils.metrics"),
    ]
    slow = {"pycocotools", "torchmetrics (faster_coco_eval)"}
    rows, records = [], {}
    for name, function, module in tools:
        repeats = max(1, args.repeats // 2) if name in slow else args.repeats
        timing, value = time_call(function, repeats=repeats, warmup=1)
        records[name] = {"median_s": timing.median_s, "runs_s": timing.runs_s, "map50": value.map50,
                         "map50_95": value.map50_95, "import_s": import_time(module)}
    reference = {"coco": records["smartcash coco"]["median_s"], "yolo": records["smartcash yolo"]["median_s"]}
    for name, record in records.items():
        base = reference["yolo"] if name in ("ultralytics", "smartcash yolo") else reference["coco"]
        record["ratio_to_smartcash"] = record["median_s"] / base
        rows.append([name, record["median_s"], f"{record['ratio_to_smartcash']:.1f}x", record["map50"], record["map50_95"], record["import_s"]])
    headers = ["tool", "time_s (median)", "vs smartcash", "mAP50", "mAP50-95", "import_s"]
    print(format_table(headers, rows))
    print("(ratio: time / SmartCash time in the same semantics: coco mode for COCO tools, yolo mode for ultralytics)")
    info = machine_info(args.device)
    print(f"machine: {info}")
    name = ("map_quick" if args.quick else "map") + ("" if args.device == "cpu" else f"_{args.device.replace(':', '')}")
    path = write_results(name, {"machine": info, "images": num_images, "targets": num_targets,
                                "predictions": num_predictions, "tools": records})
    print(f"wrote {path}")


def bench_coco_json(args: argparse.Namespace) -> None:
    """evaluate_coco against pycocotools, faster-coco-eval and torchmetrics on the same COCO JSON
    files: 80 categories, crowds, all area ranges, the 12 stats. The COCO tools and SmartCash go
    from the two file paths to the stats (parsing included); torchmetrics takes per-image tensors
    (built from the same data before the clock starts: it reads no files)."""
    from smartcash.model.training.core.coco_evaluation import evaluate_coco

    num_images = 500 if args.quick else 5000
    dataset, results = make_coco_case(1, num_images, 80)
    crowds = sum(a["iscrowd"] for a in dataset["annotations"])
    print(f"COCO JSON case: {num_images} images, 80 categories, {len(dataset['annotations'])} annotations "
          f"({crowds} crowds), {len(results)} detections", file=sys.stderr)
    with tempfile.TemporaryDirectory() as directory:
        truth_path, found_path = Path(directory) / "instances.json", Path(directory) / "detections.json"
        truth_path.write_text(json.dumps(dataset))
        found_path.write_text(json.dumps(results))
        predictions, targets = torchmetrics_inputs(dataset, results)
        tools = [
            ("smartcash evaluate_coco (files)", lambda: evaluate_coco(truth_path, found_path).stats,
             "smartcash.model.training.core.coco_evaluation"),
            ("smartcash evaluate_coco (dicts in memory)", lambda: evaluate_coco(dataset, results).stats,
             "smartcash.model.training.core.coco_evaluation"),
            ("pycocotools (files)", lambda: np.asarray(cocoeval_pycocotools(truth_path, found_path).stats),
             "pycocotools.cocoeval"),
            ("faster-coco-eval (files)", lambda: np.asarray(cocoeval_faster(truth_path, found_path).stats[:12]),
             "faster_coco_eval"),
            ("torchmetrics (faster_coco_eval backend, tensors)", lambda: run_torchmetrics_coco(predictions, targets),
             "torchmetrics.detection"),
        ]
        slow = {"pycocotools (files)", "torchmetrics (faster_coco_eval backend, tensors)"}
        records = {}
        for name, function, module in tools:
            repeats = max(1, args.repeats // 2) if name in slow else args.repeats
            timing, stats = time_call(function, repeats=repeats, warmup=1)
            records[name] = {"median_s": timing.median_s, "runs_s": timing.runs_s, "stats": stats.tolist(),
                             "import_s": import_time(module)}
    base = records["smartcash evaluate_coco (files)"]["median_s"]
    reference = np.array(records["pycocotools (files)"]["stats"])
    rows = []
    for name, record in records.items():
        record["ratio_to_smartcash"] = record["median_s"] / base
        record["max_stat_difference_to_pycocotools"] = float(np.abs(np.array(record["stats"]) - reference).max())
        rows.append([name, record["median_s"], f"{record['ratio_to_smartcash']:.1f}x", record["stats"][0],
                     record["stats"][1], f"{record['max_stat_difference_to_pycocotools']:.1e}", record["import_s"]])
    numpy_import = import_time("numpy")
    print(format_table(["tool", "time_s (median)", "vs smartcash", "AP", "AP50", "max |stats - pycocotools|", "import_s"], rows))
    print(f"(import_s includes numpy's {numpy_import:.3f} s where the tool imports it)")
    info = machine_info("cpu")
    print(f"machine: {info}")
    path = write_results("map_coco_quick" if args.quick else "map_coco", {
        "machine": info, "images": num_images, "categories": 80, "annotations": len(dataset["annotations"]),
        "crowds": crowds, "detections": len(results), "numpy_import_s": numpy_import, "tools": records})
    print(f"wrote {path}")


def make_dense_case(count: int, seed: int = 0) -> Case:
    """One 640-px image with `count` ground truths of one class (5-60 px, overlapping freely) and
    one prediction near each (2 px noise), random scores: count^2 candidate pairs, few overlapping."""
    rng = np.random.default_rng(seed)
    centre, size = rng.uniform(0, 640, (count, 2)), rng.uniform(5, 60, (count, 2))
    truth = np.concatenate([centre - size / 2, centre + size / 2], 1)
    moved = truth + rng.normal(0, 2, (count, 4))
    moved = np.concatenate([np.minimum(moved[:, :2], moved[:, 2:]), np.maximum(moved[:, :2], moved[:, 2:])], 1)
    return Case([np.column_stack([moved, rng.random(count), np.zeros(count)])],
                [np.column_stack([np.zeros(count), truth])], 1)


DENSE_TOOLS = {
    "smartcash yolo": lambda case: run_smartcash(case, "yolo"),
    "ultralytics": run_ultralytics,
    "smartcash coco": lambda case: run_smartcash(case, "coco"),
    "pycocotools": run_pycocotools,
}


def dense_child(tool: str, count: int) -> None:
    """In a fresh process: one timed call of `tool` on the dense case; prints one JSON line."""
    case = make_dense_case(count)
    function = DENSE_TOOLS[tool]
    function(make_dense_case(50, seed=1))  # imports and first-call set-up outside the clock
    before = memory.status_kib(os.getpid()).get("VmRSS", 0)
    timing, value = time_call(lambda: function(case), repeats=1, warmup=0)
    peak = memory.status_kib(os.getpid()).get("VmHWM", 0)
    print(json.dumps({"time_s": timing.median_s, "rss_before_mib": before / 1024, "peak_rss_mib": peak / 1024,
                      "map50": value.map50, "map50_95": value.map50_95}))


def bench_dense(args: argparse.Namespace) -> None:
    """Each tool on one crowded image, in its own process (a peak of resident memory is per process)."""
    count = 3000 if args.quick else 8000
    print(f"dense case: 1 image, 1 class, {count} predictions, {count} targets", file=sys.stderr)
    records, rows = {}, []
    for tool in DENSE_TOOLS:
        done = subprocess.run([sys.executable, "-m", "benchmarks.bench_map", "--dense-child", tool, "--dense-count",
                               str(count)], capture_output=True, text=True, env={**os.environ, "YOLO_OFFLINE": "1"})
        if done.returncode != 0:
            raise RuntimeError(f"dense case, {tool}: exit {done.returncode}\n{done.stderr[-2000:]}")
        records[tool] = json.loads(done.stdout.strip().splitlines()[-1])
        record = records[tool]
        rows.append([tool, record["time_s"], f"{record['peak_rss_mib']:.0f}",
                     f"{record['peak_rss_mib'] - record['rss_before_mib']:.0f}", record["map50"], record["map50_95"]])
    print(format_table(["tool", "time_s", "peak RSS MiB", "peak - before MiB", "mAP50", "mAP50-95"], rows))
    print("(coco semantics keep the 100 best-scored detections of an image and class; yolo keeps all)")
    info = machine_info("cpu")
    print(f"machine: {info}")
    path = write_results("map_dense_quick" if args.quick else "map_dense",
                         {"machine": info, "predictions": count, "targets": count, "tools": records})
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1/10 of the full size")
    parser.add_argument("--device", default="cpu", help="where the SmartCash inputs live (cpu, cuda:0)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default="calculator,coco,dense",
                        help="comma-separated: calculator (in-memory mAP), coco (COCO JSON files, 12 stats), "
                             "dense (one crowded image: time and peak memory)")
    parser.add_argument("--dense-child", default=None, help=argparse.SUPPRESS)  # one tool of the dense case
    parser.add_argument("--dense-count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dense_child:
        dense_child(args.dense_child, args.dense_count)
        return 0
    cases = {case.strip() for case in args.cases.split(",") if case.strip()}
    if not cases or cases - {"calculator", "coco", "dense"}:
        parser.error(f"--cases: choose from calculator, coco, dense; got {args.cases!r}")
    if "calculator" in cases:
        bench_calculator(args)
    if "coco" in cases and args.device == "cpu":  # evaluate_coco runs on the host only
        bench_coco_json(args)
    if "dense" in cases and args.device == "cpu":
        bench_dense(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
