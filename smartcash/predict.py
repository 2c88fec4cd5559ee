"""``python -m smartcash.predict``: detect banknotes in an image or a folder of images; and
``predict(**flags)`` for Python (``from smartcash import predict``; this module is callable as it).

Per image: boxes (source pixels, xyxy), score, fine and main class, the denomination and the
authentication features present. Writes the images with their detections drawn, plus
``predictions.json`` and ``predictions.csv`` (one row per detection), into the save folder
(default ``runs/predict/exp``, ``exp2`` ...). Unreadable images are reported and skipped.

Exit status (``smartcash.cli``): 0 when at least one image was processed, 1 when none could be
(or the weights file is an unreadable checkpoint, or the results could not be written), 2 for bad
arguments (missing weights, an empty --source, a URL or a video as --source, no images found,
thresholds out of range, a --name that is not a plain folder name, a save folder that cannot be
written), 130 on Ctrl-C (after writing the results of the images done so far). Images inside the
save folder, or inside an earlier run's output (a folder holding ``predictions.json``), are never
predicted (``prediction_source``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smartcash.cli import MAX_FOLDER_NAME_BYTES, is_plain_folder_name
from smartcash.data.image_files import PREDICT_RESULTS_FILE as RESULTS_JSON
from smartcash.prediction_source import ArgumentsError, check_source, decoding_batches, drawn_path, find_images

if TYPE_CHECKING:
    from smartcash.inference import ImagePrediction, Predictor

logger = logging.getLogger(__name__)

#: What a run writes into its save folder, besides RESULTS_JSON (whose presence marks a predict output).
RESULTS_CSV = "predictions.csv"
#: Columns of predictions.csv, one row per detection.
CSV_COLUMNS = ("image", "x1", "y1", "x2", "y2", "score", "class_id", "class_name", "main_id", "main_name")


def build_parser() -> argparse.ArgumentParser:
    from smartcash.config import default_values

    defaults = default_values()  # configs/default.yaml
    parser = argparse.ArgumentParser(prog="python -m smartcash.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="checkpoint (.pt) written by smartcash.train")
    parser.add_argument("--source", required=True, help="an image file or a folder (searched recursively)")
    parser.add_argument("--save-dir", help="output folder (default PROJECT/predict/NAME, numbered if it exists)")
    parser.add_argument("--project", default="runs", help="runs root (default runs)")
    parser.add_argument("--name", default="exp", help="PROJECT/predict/NAME (exp, exp2 ... when taken)")
    parser.add_argument("--imgsz", type=int, help="input size (default: the checkpoint's, else imgsz_cpu "
                        "of configs/default.yaml)")
    parser.add_argument("--conf", type=float, default=defaults["predict_conf"], help="confidence threshold")
    parser.add_argument("--iou", type=float, default=defaults["predict_iou"], help="NMS IoU threshold")
    parser.add_argument("--max-det", type=int, default=defaults["max_det"], help="detections kept per image")
    parser.add_argument("--device", default="", help="cpu | cuda | cuda:N | N (default: cuda if available)")
    parser.add_argument("--batch", type=int, default=8, help="images per forward pass")
    return parser


def increment_dir(root: Path, name: str) -> Path:
    """``root/name`` if it does not exist, else the first free ``root/name2``, ``root/name3`` ...

    Raises:
        ArgumentsError: the next free name would be longer than a folder name may be.
    """
    candidate, number = root / name, 2
    while candidate.exists():
        candidate, number = root / f"{name}{number}", number + 1
        if not is_plain_folder_name(candidate.name):
            raise ArgumentsError(f"--name {name[:40]}...: {root / name} exists and {candidate.name[:40]}... would be "
                                 f"longer than a folder name may be ({MAX_FOLDER_NAME_BYTES} bytes); choose a "
                                 "shorter --name")
    return candidate


def _csv_text(predictions: Sequence[ImagePrediction]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for prediction in predictions:
        for detection in prediction.detections:
            writer.writerow([prediction.path, *(f"{value:.2f}" for value in detection.box), f"{detection.score:.5f}",
                             detection.class_id, detection.class_name, detection.main_id, detection.main_name])
    return buffer.getvalue()


def write_results(save_dir: Path, predictions: Sequence[ImagePrediction], skipped: Sequence[tuple[str, str]],
                  settings: dict[str, object]) -> tuple[Path, Path]:
    """``predictions.json`` (settings, per-image answers, skipped files) and ``predictions.csv``."""
    from smartcash.atomic import atomic_write_text

    document = {**settings, "images": [prediction.to_dict() for prediction in predictions],
                "skipped": [{"path": path, "reason": reason} for path, reason in skipped]}
    json_path, csv_path = save_dir / RESULTS_JSON, save_dir / RESULTS_CSV
    atomic_write_text(json_path, json.dumps(document, indent=2) + "\n")
    atomic_write_text(csv_path, _csv_text(predictions))
    return json_path, csv_path


def predict_images(predictor: Predictor, images: Sequence[Path], source: Path, save_dir: Path,
                   batch_size: int, predictions: list[ImagePrediction], skipped: list[tuple[str, str]]) -> None:
    """Predict every image, batch by batch, writing the drawn copies into ``save_dir``.

    Appends to ``predictions`` (in ``images`` order, unreadable files left out) and ``skipped``
    (path, reason of every unreadable file, each also reported on stderr as it is met), so that
    the caller holds what was done when Ctrl-C stops it.
    """
    import cv2
    from tqdm import tqdm

    from smartcash.draw import draw_prediction

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool, \
            tqdm(total=len(images), desc="predict", unit="img", file=sys.stderr) as progress:
        for batch in decoding_batches(images, batch_size, pool):
            good = []
            for path, future in batch:
                image = future.result()
                if isinstance(image, str):
                    skipped.append((str(path), image))
                    tqdm.write(f"skipped {path}: {image}", file=sys.stderr)
                else:
                    good.append((path, image))
            results = predictor.predict([image for _, image in good], [str(path) for path, _ in good])
            for (path, image), prediction in zip(good, results):
                target = drawn_path(path, source, save_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(target), draw_prediction(image, prediction)):
                    tqdm.write(f"warning: could not write {target}", file=sys.stderr)
            predictions.extend(results)
            progress.update(len(batch))


def _check_arguments(args: argparse.Namespace) -> Path:
    """The checked flags; returns the save folder (not made yet).

    Raises:
        ArgumentsError, UsageError: a bad flag (exit 2). CheckpointError: weights that are no checkpoint (exit 1).
    """
    from smartcash.cli import (at_least, checkpoint_file, image_size, in_range, input_file, plain_folder_name,
                               writable_folder)

    if not Path(args.weights).exists():
        raise ArgumentsError(f"--weights {args.weights}: no such file (a .pt written by smartcash.train)")
    input_file("--weights", args.weights)  # a folder, or unreadable
    in_range("--conf", args.conf, 0.0, 1.0, high_open=True)
    in_range("--iou", args.iou, 0.0, 1.0, low_open=True)
    for flag, value in (("--max-det", args.max_det), ("--batch", args.batch)):
        at_least(flag, value, 1)
    image_size("--imgsz", args.imgsz)
    plain_folder_name("--name", args.name)  # PROJECT/predict/NAME: never outside PROJECT
    check_source(args.source)
    save_dir = Path(args.save_dir) if args.save_dir else increment_dir(Path(args.project) / "predict", args.name)
    if save_dir.is_file():
        raise ArgumentsError(f"--save-dir {save_dir}: is a file; give a folder")
    source = Path(args.source)
    if save_dir.resolve() == (source if source.is_dir() else source.parent).resolve():
        raise ArgumentsError(f"--save-dir {save_dir} is the source folder: the drawn images would replace the "
                             "originals")
    if save_dir.is_dir() and any(save_dir.iterdir()) and not (save_dir / RESULTS_JSON).is_file():
        raise ArgumentsError(f"--save-dir {save_dir}: holds other files, which drawn images could replace; give "
                             "a new or empty folder (or an earlier predict output)")
    writable_folder("--save-dir", save_dir)
    checkpoint_file("--weights", args.weights)  # last: a wrong flag is reported first
    return save_dir


@dataclass(frozen=True)
class PredictionRun:
    """What ``run_prediction`` did."""

    predictions: list[ImagePrediction]  # the images read, in order
    skipped: list[tuple[str, str]]  # (path, reason) of the files that could not be read
    num_images: int  # images found under the source
    save_dir: Path
    json_path: Path
    csv_path: Path
    interrupted: bool  # Ctrl-C stopped it; the results of the images done were written


def prepare_prediction(args: argparse.Namespace) -> tuple[Predictor, list[Path], Path]:
    """Check the flags, find the images, load the model: (predictor, images, save folder not made yet).

    Raises:
        ArgumentsError, UsageError, ConfigError, ValueError: the CLI's exit 2.
        CheckpointError: the weights file is no SmartCash checkpoint, or an unreadable one (exit 1).
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch

    from smartcash.config import resolve_device
    from smartcash.inference import Predictor, checkpoint_imgsz, load_model

    save_dir = _check_arguments(args)
    images = find_images(args.source, save_dir)
    device = torch.device(resolve_device(args.device, "--device"))
    model, taxonomy, checkpoint = load_model(args.weights)
    predictor = Predictor(model, taxonomy, checkpoint_imgsz(checkpoint, args.imgsz), device, args.conf, args.iou,
                          args.max_det)
    return predictor, images, save_dir


def run_prediction(args: argparse.Namespace, predictor: Predictor, images: list[Path], save_dir: Path) -> PredictionRun:
    """Predict ``images``, draw them into ``save_dir``, write predictions.json / .csv. Ctrl-C stops
    after writing the results of the images done (``interrupted``).

    Raises:
        OSError: the save folder could not be written.
    """
    predictions: list[ImagePrediction] = []
    skipped: list[tuple[str, str]] = []
    interrupted = False
    source = Path(args.source)
    settings = {"weights": str(args.weights), "source": str(source), "imgsz": predictor.imgsz, "conf": args.conf,
                "iou": args.iou, "max_det": args.max_det}
    save_dir.mkdir(parents=True, exist_ok=True)
    try:
        predict_images(predictor, images, source, save_dir, args.batch, predictions, skipped)
    except KeyboardInterrupt:  # keep what is done: the results of the images predicted so far
        interrupted = True
    json_path, csv_path = write_results(save_dir, predictions, skipped, settings)
    return PredictionRun(predictions, skipped, len(images), save_dir, json_path, csv_path, interrupted)


def predict(**flags: Any) -> list[ImagePrediction]:
    """Predict from Python: ``predict(weights="best.pt", source="images/")``.

    Keywords are the flags of ``python -m smartcash.predict`` without their dashes (``save_dir``,
    ``max_det`` ...), with the same defaults; the drawn images and predictions.json / .csv are
    written as the CLI writes them.

    Returns:
        One ``ImagePrediction`` per readable image, in order: ``.detections`` (box in source
        pixels, score, fine class, main class), ``.denomination`` and ``.features``.

    Raises:
        TypeError: an unknown keyword. ValueError (UsageError, ArgumentsError ...): bad flags,
        missing weights or source. CheckpointError (RuntimeError): an unreadable checkpoint.
        OSError: the save folder could not be written. KeyboardInterrupt after writing the results
        of the images done.
    """
    from smartcash.cli import parse_keywords

    args = parse_keywords(build_parser(), flags, "predict")
    run = run_prediction(args, *prepare_prediction(args))
    if run.interrupted:
        raise KeyboardInterrupt(f"predict interrupted; the results of the images done are in {run.json_path}")
    return run.predictions


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from smartcash.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError, print_error
    from smartcash.config import ConfigError
    from smartcash.model.training.checkpoint import CheckpointError

    try:
        predictor, images, save_dir = prepare_prediction(args)
    except (ArgumentsError, ConfigError, UsageError, ValueError) as error:
        print_error(error)
        return EXIT_USAGE
    except CheckpointError as error:  # the file is there but unreadable: as training, exit 1
        print_error(error)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted: nothing predicted", file=sys.stderr)
        return EXIT_INTERRUPTED
    try:
        run = run_prediction(args, predictor, images, save_dir)
    except OSError as error:  # the save folder filled up or went away: the error names the file
        print_error(f"{error} (predictions not saved)")
        return EXIT_FAILED
    num_detections = sum(len(prediction.detections) for prediction in run.predictions)
    print(f"{len(run.predictions)} images, {num_detections} detections, {len(run.skipped)} skipped -> {save_dir} "
          f"({run.json_path.name}, {run.csv_path.name})")
    if run.interrupted:
        print(f"interrupted: {len(run.predictions) + len(run.skipped)} of {run.num_images} images done; their results "
              f"are in {run.json_path}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not run.predictions:
        print_error(f"none of the {run.num_images} images under {args.source} could be read")
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
else:
    from smartcash.cli import callable_module

    callable_module(__name__, predict)
