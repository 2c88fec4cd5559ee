"""Per-image classification answers from a batch of detections, and their accumulated metrics.

Each image gets a denomination (from layers 1 and 2 after the fine -> main map) and, per
authentication feature (layer 3), present or absent; the same answers are read from the ground
truth, and the two are compared. One vectorized pass per batch (scatter-add over a padded
(B, D) layout), counts accumulated on the device, one host transfer in ``compute()``.

Choices, documented once:
- Predicted denomination = argmax over denominations of the summed scores of the layer-1/2
  detections with score >= ``presence_threshold``; "none" when there is no such detection.
  True denomination = the denomination with the most layer-1/2 boxes; "none" for an image with
  none. Ties go to the lower denomination index (``argmax`` returns the first maximum).
- The confusion matrix is (K + 1) x (K + 1) over the K denominations (the main classes that
  layer-1/2 classes map onto: 7 for SmartCash) plus a last "none" row/column, so 8 x 8 for
  SmartCash; rows are the truth, columns the prediction. Background images land in the "none"
  row, missed notes in the "none" column.
- Accuracy counts every image ("none" is an answer). Precision/recall/F1 are macro averages over
  the denominations that occur in the truth or the predictions (scikit-learn's default labels,
  ``zero_division=0``); authentication features are binary per feature, and the layer-3 summary
  is their mean over features that occur in the truth or the predictions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from smartcash.taxonomy import Taxonomy


@dataclass(frozen=True)
class ClassificationMetrics:
    """Accuracy and macro (or binary) precision / recall / F1 of one per-image answer."""

    accuracy: float
    precision: float
    recall: float
    f1: float
    num_images: int


@dataclass(frozen=True)
class ImageAnswers:
    """Per-image answers of one batch. Denomination index K means "none"."""

    predicted_denomination: Tensor  # (B,) int64 in 0..K
    true_denomination: Tensor  # (B,) int64 in 0..K
    predicted_features: Tensor  # (B, F) bool
    true_features: Tensor  # (B, F) bool


@dataclass(frozen=True)
class ClassificationResult:
    """Image-level classification metrics over every validated image."""

    denomination: ClassificationMetrics  # layers 1 and 2 together
    layers: dict[int, ClassificationMetrics]  # per layer: 1 and 2 denomination, 3 authentication
    features: dict[str, ClassificationMetrics]  # per authentication feature, binary
    confusion_matrix: np.ndarray  # (K + 1, K + 1) int64, rows truth, columns prediction, last "none"
    class_names: tuple[str, ...]  # K denomination names, then "none"
    num_images: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "denomination": asdict(self.denomination),
            "layers": {str(layer): asdict(metrics) for layer, metrics in self.layers.items()},
            "features": {name: asdict(metrics) for name, metrics in self.features.items()},
            "confusion_matrix": self.confusion_matrix.tolist(),
            "class_names": list(self.class_names),
            "num_images": self.num_images,
        }


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=np.float64),
                     where=denominator > 0)


def multiclass_metrics(confusion: np.ndarray) -> ClassificationMetrics:
    """Metrics from a (K + 1, K + 1) confusion matrix whose last row/column is "none"."""
    confusion = confusion.astype(np.float64)
    total = confusion.sum()
    correct = np.diag(confusion)[:-1]  # (K,)
    predicted, actual = confusion.sum(axis=0)[:-1], confusion.sum(axis=1)[:-1]  # (K,) each
    precision, recall = _safe_divide(correct, predicted), _safe_divide(correct, actual)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    present = (predicted + actual) > 0
    mean = (lambda values: float(values[present].mean())) if present.any() else (lambda values: 0.0)
    return ClassificationMetrics(accuracy=float(np.trace(confusion) / total) if total else 0.0,
                                 precision=mean(precision), recall=mean(recall), f1=mean(f1),
                                 num_images=int(total))


def binary_metrics(counts: np.ndarray) -> ClassificationMetrics:
    """Metrics from [tp, fp, fn, tn] counts (zero_division=0)."""
    tp, fp, fn, tn = (float(value) for value in counts)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    total = tp + fp + fn + tn
    return ClassificationMetrics(accuracy=(tp + tn) / total if total else 0.0, precision=precision,
                                 recall=recall, f1=f1, num_images=int(total))


class ClassificationExtractor:
    """Accumulates image-level denomination and authentication answers (module docstring).

    Args:
        taxonomy: the detector's classes; a foreign (identity) taxonomy has only layer 1, so its
            denomination is simply the dominant class.
        presence_threshold: minimum detection score that counts as "seen".
    """

    def __init__(self, taxonomy: Taxonomy, presence_threshold: float) -> None:
        self.taxonomy = taxonomy
        self.presence_threshold = presence_threshold
        self.authentication_layer = taxonomy.authentication_layer
        layers, fine_to_main = taxonomy.layers, taxonomy.fine_to_main
        # loss.json: layers 1 (whole note) and 2 (nominal area) name a denomination, 3 holds the features.
        denomination_layers, authentication_layer = taxonomy.denomination_layers, taxonomy.authentication_layer
        denomination_fine = [i for i, layer in enumerate(layers) if layer in denomination_layers]
        self.denomination_ids = tuple(sorted({fine_to_main[i] for i in denomination_fine}))  # main ids
        self.feature_ids = () if authentication_layer is None else taxonomy.ids_in_layer(authentication_layer)  # fine ids
        self.num_denominations, self.num_features = len(self.denomination_ids), len(self.feature_ids)
        # Groups answered separately: layers 1+2 together (the headline), then each layer alone.
        self.groups: tuple[tuple[int, ...], ...] = (denomination_layers, *(
            (layer,) for layer in denomination_layers if any(item == layer for item in layers)))
        none = self.num_denominations
        position = {main_id: index for index, main_id in enumerate(self.denomination_ids)}
        self._fine_to_denomination = torch.tensor(
            [position.get(fine_to_main[i], none) for i in range(len(layers))], dtype=torch.int64)  # (nc,)
        self._in_group = torch.tensor([[layer in group for layer in layers] for group in self.groups])  # (G, nc)
        feature_of = {fine: index for index, fine in enumerate(self.feature_ids)}
        self._fine_to_feature = torch.tensor([feature_of.get(i, self.num_features) for i in range(len(layers))],
                                             dtype=torch.int64)  # (nc,), F = not a feature
        self._tables: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}
        self.reset()

    def reset(self) -> None:
        size = self.num_denominations + 1
        self._confusion: Tensor | None = None  # (G, K + 1, K + 1), allocated on the first update's device
        self._feature_counts: Tensor | None = None  # (F, 4) [tp, fp, fn, tn]
        self._shape = (len(self.groups), size, size)

    def _on(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        tables = self._tables.get(device)
        if tables is None:
            tables = self._tables[device] = (self._fine_to_denomination.to(device), self._in_group.to(device),
                                             self._fine_to_feature.to(device))
        return tables

    def extract(self, padded: Tensor, valid: Tensor, targets: Tensor, group: int = 0) -> ImageAnswers:
        """Per-image answers of one batch (no Python loop over images or boxes).

        Args:
            padded: (B, D, 6) [x1, y1, x2, y2, score, fine class] detections.
            valid: (B, D) bool, which rows of ``padded`` are detections.
            targets: (n, 6) [image_index, fine class, ...] ground truth of the batch.
            group: which layer group answers the denomination (index into ``groups``; 0: layers 1+2).
        """
        predicted, truth = self._denominations(padded, valid, targets, group)
        predicted_features, true_features = self._features(padded, valid, targets)
        return ImageAnswers(predicted, truth, predicted_features, true_features)

    def _denominations(self, padded: Tensor, valid: Tensor, targets: Tensor, group: int) -> tuple[Tensor, Tensor]:
        """Predicted and true denomination index per image, (B,) each, K = "none"."""
        to_denomination, in_group, _ = self._on(padded.device)
        batch_size, none = padded.shape[0], self.num_denominations
        scores, classes = padded[..., 4], padded[..., 5].long()  # (B, D) each
        counted = valid & (scores >= self.presence_threshold) & in_group[group][classes]  # (B, D)
        weights = torch.zeros(batch_size, none + 1, device=padded.device, dtype=scores.dtype)
        weights.scatter_add_(1, to_denomination[classes], torch.where(counted, scores, 0.0))  # (B, K + 1)
        predicted = torch.where(counted.any(dim=1), weights[:, :none].argmax(dim=1), none)  # (B,)

        image, true_classes = targets[:, 0].long(), targets[:, 1].long()  # (n,) each
        boxes_per = torch.zeros(batch_size * (none + 1), device=padded.device, dtype=scores.dtype)
        boxes_per.index_add_(0, image * (none + 1) + to_denomination[true_classes],
                             in_group[group][true_classes].to(scores.dtype))
        boxes_per = boxes_per.view(batch_size, none + 1)[:, :none]  # (B, K) layer-1/2 boxes per denomination
        truth = torch.where(boxes_per.sum(dim=1) > 0, boxes_per.argmax(dim=1), none)  # (B,)
        return predicted, truth

    def _features(self, padded: Tensor, valid: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Predicted and true presence of each authentication feature, (B, F) bool each."""
        _, _, to_feature = self._on(padded.device)
        batch_size, features = padded.shape[0], self.num_features
        seen = valid & (padded[..., 4] >= self.presence_threshold)  # (B, D)
        present = torch.zeros(batch_size, features + 1, device=padded.device, dtype=torch.int64)
        present.scatter_add_(1, to_feature[padded[..., 5].long()], seen.long())  # (B, F + 1)
        image, true_classes = targets[:, 0].long(), targets[:, 1].long()  # (n,) each
        true_present = torch.zeros(batch_size * (features + 1), device=padded.device, dtype=torch.int64)
        true_present.index_add_(0, image * (features + 1) + to_feature[true_classes], torch.ones_like(image))
        true_present = true_present.view(batch_size, features + 1)
        return present[:, :features] > 0, true_present[:, :features] > 0

    def update(self, padded: Tensor, valid: Tensor, targets: Tensor) -> None:
        """Add one batch (arguments as ``extract``); stays on the device."""
        if self._confusion is None:
            self._confusion = torch.zeros(self._shape, dtype=torch.int64, device=padded.device)
            self._feature_counts = torch.zeros(self.num_features, 4, dtype=torch.int64, device=padded.device)
        size = self.num_denominations + 1
        for group in range(len(self.groups)):  # 2 or 3 layer groups, each one vectorized pass
            predicted, truth = self._denominations(padded, valid, targets, group)
            self._confusion[group] += torch.bincount(truth * size + predicted, minlength=size * size).view(size, size)
        predicted, truth = self._features(padded, valid, targets)  # (B, F) each
        self._feature_counts += torch.stack(((predicted & truth).sum(0), (predicted & ~truth).sum(0),
                                             (~predicted & truth).sum(0), (~predicted & ~truth).sum(0)), dim=1)

    def compute(self) -> ClassificationResult:
        """Metrics of everything added since ``reset()`` (one device -> host transfer)."""
        if self._confusion is None:
            confusion = np.zeros(self._shape, dtype=np.int64)
            feature_counts = np.zeros((self.num_features, 4), dtype=np.int64)
        else:
            confusion, feature_counts = (tensor.cpu().numpy() for tensor in (self._confusion, self._feature_counts))
        denomination = multiclass_metrics(confusion[0])
        layers = {group[0]: multiclass_metrics(matrix) for group, matrix in zip(self.groups[1:], confusion[1:])}
        names = self.taxonomy.names
        features = {names[fine]: binary_metrics(counts) for fine, counts in zip(self.feature_ids, feature_counts)}
        if features:
            occurring = [metrics for metrics, counts in zip(features.values(), feature_counts) if counts[:3].sum()]
            chosen = occurring or list(features.values())
            layers[self.authentication_layer] = ClassificationMetrics(
                accuracy=float(np.mean([m.accuracy for m in features.values()])),
                precision=float(np.mean([m.precision for m in chosen])),
                recall=float(np.mean([m.recall for m in chosen])), f1=float(np.mean([m.f1 for m in chosen])),
                num_images=denomination.num_images)
        class_names = (*(self.taxonomy.main_names[i] for i in self.denomination_ids), "none")
        return ClassificationResult(denomination, dict(sorted(layers.items())), features, confusion[0],
                                    class_names, denomination.num_images)
