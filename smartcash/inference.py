"""Inference on images: load a checkpoint for inference, and turn batches of source images into
per-image answers (boxes in source pixels, fine and main classes, denomination, authentication
features).

Shared by ``smartcash.val``, ``smartcash.predict`` and ``smartcash.export``. Post-processing is the
validation core's (``PredictionProcessor``: decode, NMS, letterbox undo, 17 -> 8 map;
``ClassificationExtractor``: denomination and features), so predict and val agree by construction.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from smartcash.taxonomy import Taxonomy

logger = logging.getLogger(__name__)

#: Input size when neither the command line nor the checkpoint's config gives one.


def load_model(weights: str | os.PathLike[str]) -> tuple[Any, Taxonomy, dict[str, Any]]:
    """(model, taxonomy, checkpoint) from a SmartCash checkpoint; EMA weights preferred.

    The checkpoint is loaded with ``weights_only=True`` (data, never code). The model is on the
    CPU in train mode, as ``build_model`` returns it.

    Raises:
        CheckpointError: the file is missing, unreadable or not a SmartCash checkpoint.
    """
    from smartcash.model.build import build_model
    from smartcash.model.training.checkpoint import CheckpointError, load_checkpoint
    from smartcash.taxonomy import load_taxonomy

    state = load_checkpoint(weights)
    config = state.get("config") or {}
    taxonomy = Taxonomy.from_dict(state["taxonomy"], str(weights)) if "taxonomy" in state else load_taxonomy()
    name = state.get("model_name") or config.get("model") or "yolov5n"
    num_classes = int(state.get("num_classes") or config.get("num_classes") or taxonomy.num_classes)
    model = build_model(name, num_classes, anchors=state.get("anchors"))
    weights_key = "ema" if state.get("ema") else "model"
    try:
        model.load_state_dict(state[weights_key])
    except RuntimeError as error:  # missing/unexpected keys or shape mismatches
        raise CheckpointError(f"{weights}: the {weights_key!r} weights do not fit a {name} with {num_classes} "
                              f"classes ({error})") from error
    logger.info("%s: %s (%d classes), %s weights", weights, name, num_classes, weights_key)
    return model, taxonomy, state


def checkpoint_imgsz(checkpoint: dict[str, Any], requested: int | None = None) -> int:
    """The input size to use: ``requested``, else the one the checkpoint trained at, else
    ``imgsz_cpu`` of ``configs/default.yaml``."""
    if requested:
        return int(requested)
    saved = (checkpoint.get("config") or {}).get("imgsz")
    if saved:
        return int(saved)
    from smartcash.config import default_values

    return int(default_values()["imgsz_cpu"])


@dataclass(frozen=True)
class Detection:
    """One detected object, in source-image pixels."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float  # objectness * class probability
    class_id: int  # fine class
    class_name: str
    main_id: int  # after the fine -> main map
    main_name: str


@dataclass(frozen=True)
class ImagePrediction:
    """Everything predicted for one image."""

    path: str
    width: int
    height: int
    detections: tuple[Detection, ...]  # highest score first
    denomination_id: int | None  # main class id; None when no layer-1/2 detection
    denomination: str | None
    features: tuple[str, ...]  # authentication features (layer 3) present, taxonomy order

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "width": self.width, "height": self.height,
                "denomination_id": self.denomination_id, "denomination": self.denomination,
                "features": list(self.features),
                "detections": [{"box": list(d.box), "score": d.score, "class_id": d.class_id,
                                "class_name": d.class_name, "main_id": d.main_id, "main_name": d.main_name}
                               for d in self.detections]}


class Predictor:
    """Letterbox, forward, post-process a batch of RGB images (one forward per batch).

    Args:
        model: a Detector (moved to ``device`` and put in eval mode here).
        taxonomy: the detector's classes.
        imgsz: input square side; rounded up to a multiple of 32.
        device: where the forward runs.
        conf_threshold: minimum score of a detection; also what counts as "seen" for the
            denomination and the features, so every reported detection takes part.
        iou_threshold: NMS IoU.
        max_det: detections kept per image.
        (None: ``predict_conf``, ``predict_iou``, ``max_det`` of ``configs/default.yaml``.)
    """

    def __init__(self, model: nn.Module, taxonomy: Taxonomy, imgsz: int, device: torch.device | str = "cpu",
                 conf_threshold: float | None = None, iou_threshold: float | None = None,
                 max_det: int | None = None) -> None:
        from smartcash.config import default_values
        from smartcash.data.dataset import stride_aligned
        from smartcash.model.training.core.classification_extractor import ClassificationExtractor
        from smartcash.model.training.core.prediction_processor import PredictionProcessor

        if model.num_classes != taxonomy.num_classes:
            raise ValueError(f"the model predicts {model.num_classes} classes, the taxonomy has "
                             f"{taxonomy.num_classes}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.taxonomy = taxonomy
        self.imgsz = stride_aligned(imgsz)
        if self.imgsz != imgsz:
            logger.warning("imgsz %d is not a multiple of 32: using %d", imgsz, self.imgsz)
        defaults = default_values()
        conf_threshold = defaults["predict_conf"] if conf_threshold is None else conf_threshold
        iou_threshold = defaults["predict_iou"] if iou_threshold is None else iou_threshold
        max_det = defaults["max_det"] if max_det is None else max_det
        # One class per box (YOLOv5 detect.py): a deployed predictor reports each object once.
        self.processor = PredictionProcessor(taxonomy.num_classes, taxonomy.fine_to_main, conf_threshold,
                                             iou_threshold, max_det, multi_label=False)
        self.extractor = ClassificationExtractor(taxonomy, presence_threshold=conf_threshold)

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """RGB uint8 (H_i, W_i, 3) images -> inputs (B, 3, S, S) float in [0, 1] on the device,
        letterbox (B, 3) [scale, pad_x, pad_y] and original shapes (B, 2) [height, width]."""
        from smartcash.data.augment import letterbox

        squares, boxes = zip(*(letterbox(image, self.imgsz) for image in images))  # as val's dataset does
        inputs = torch.from_numpy(np.ascontiguousarray(np.stack(squares).transpose(0, 3, 1, 2)))  # (B, 3, S, S)
        inputs = inputs.to(self.device, non_blocking=True).float().div_(255)
        letterboxes = torch.tensor([(box.scale, box.pad_x, box.pad_y) for box in boxes], dtype=torch.float32)
        shapes = torch.tensor([image.shape[:2] for image in images], dtype=torch.int64)
        return inputs, letterboxes.to(self.device), shapes.to(self.device)

    @torch.inference_mode()
    def predict(self, images: Sequence[np.ndarray], paths: Sequence[str]) -> list[ImagePrediction]:
        """Answers for a batch of RGB uint8 (H_i, W_i, 3) images, one per image, in order."""
        if not images:
            return []
        inputs, letterboxes, shapes = self.preprocess(images)
        decoded, _ = self.model(inputs)  # (B, N, 5 + nc)
        detections = self.processor.postprocess(decoded, letterboxes, shapes)
        no_targets = decoded.new_zeros((0, 6))
        answers = self.extractor.extract(detections.padded, detections.valid, no_targets)
        return self._answers(detections, answers, shapes, paths)

    def _answers(self, detections: Any, answers: Any, shapes: torch.Tensor,
                 paths: Sequence[str]) -> list[ImagePrediction]:
        """Device tensors -> plain Python answers (one host transfer per tensor)."""
        names, main_names = self.taxonomy.names, self.taxonomy.main_names
        rows = detections.boxes.cpu().tolist()  # (K, 6) [x1, y1, x2, y2, score, class]
        main = detections.main_class.cpu().tolist()
        counts = detections.counts.cpu().tolist()
        denominations = answers.predicted_denomination.cpu().tolist()  # (B,) index, K = none
        features = answers.predicted_features.cpu().tolist()  # (B, F)
        predictions, start = [], 0
        for index, (path, (height, width)) in enumerate(zip(paths, shapes.cpu().tolist())):
            items = tuple(Detection((x1, y1, x2, y2), score, int(fine), names[int(fine)], main_id,
                                    main_names[main_id])
                          for (x1, y1, x2, y2, score, fine), main_id in zip(rows[start:start + counts[index]],
                                                                           main[start:start + counts[index]]))
            start += counts[index]
            position = denominations[index]
            denomination = (self.extractor.denomination_ids[position]
                            if position < self.extractor.num_denominations else None)
            present = tuple(names[fine] for fine, seen in zip(self.extractor.feature_ids, features[index]) if seen)
            predictions.append(ImagePrediction(str(path), int(width), int(height), items, denomination,
                                               None if denomination is None else main_names[denomination],
                                               present))
        return predictions
