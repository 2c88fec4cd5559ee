"""ClassificationExtractor against a per-image Python-loop reference (the loop lives only here)."""

import numpy as np
import pytest
import torch

from smartcash.model.training.core.classification_extractor import ClassificationExtractor
from smartcash.taxonomy import Taxonomy, load_taxonomy

THRESHOLD = 0.25


def _random_batch(seed: int, num_classes: int, batch: int = 12, slots: int = 9):
    generator = torch.Generator().manual_seed(seed)
    padded = torch.rand(batch, slots, 6, generator=generator)
    padded[..., 5] = torch.randint(0, num_classes, (batch, slots), generator=generator).float()
    counts = torch.randint(0, slots + 1, (batch,), generator=generator)
    valid = torch.arange(slots)[None, :] < counts[:, None]
    num_targets = 30
    targets = torch.rand(num_targets, 6, generator=generator)
    targets[:, 0] = torch.randint(0, batch - 2, (num_targets,), generator=generator).float()  # 2 background images
    targets[:, 1] = torch.randint(0, num_classes, (num_targets,), generator=generator).float()
    return padded, valid, targets


def _reference_answers(taxonomy: Taxonomy, padded, valid, targets, layers=(1, 2)):
    """Per image: (predicted denomination, true denomination, predicted features, true features)."""
    denominations = sorted({taxonomy.fine_to_main[i] for i, layer in enumerate(taxonomy.layers) if layer in (1, 2)})
    features = taxonomy.ids_in_layer(3)
    none = len(denominations)
    answers = []
    for image in range(padded.shape[0]):
        sums, seen = {}, set()
        for slot in range(padded.shape[1]):
            if not valid[image, slot]:
                continue
            score, cls = float(padded[image, slot, 4]), int(padded[image, slot, 5])
            if score < THRESHOLD:
                continue
            seen.add(cls)
            if taxonomy.layers[cls] in layers:
                main = denominations.index(taxonomy.fine_to_main[cls])
                sums[main] = sums.get(main, 0.0) + score
        predicted = max(sorted(sums), key=lambda key: sums[key]) if sums else none
        counts = {}
        truth_classes = [int(c) for i, c in targets[:, :2].tolist() if int(i) == image]
        for cls in truth_classes:
            if taxonomy.layers[cls] in layers:
                main = denominations.index(taxonomy.fine_to_main[cls])
                counts[main] = counts.get(main, 0) + 1
        truth = max(sorted(counts), key=lambda key: counts[key]) if counts else none
        answers.append((predicted, truth, [f in seen for f in features], [f in truth_classes for f in features]))
    return answers


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_answers_equal_loop_reference(seed: int) -> None:
    taxonomy = load_taxonomy()
    extractor = ClassificationExtractor(taxonomy, presence_threshold=THRESHOLD)
    padded, valid, targets = _random_batch(seed, taxonomy.num_classes)
    answers = extractor.extract(padded, valid, targets)
    reference = _reference_answers(taxonomy, padded, valid, targets)
    assert answers.predicted_denomination.tolist() == [item[0] for item in reference]
    assert answers.true_denomination.tolist() == [item[1] for item in reference]
    assert answers.predicted_features.tolist() == [item[2] for item in reference]
    assert answers.true_features.tolist() == [item[3] for item in reference]


def _macro(confusion: np.ndarray) -> tuple[float, float, float, float]:
    """scikit-learn style accuracy and macro P/R/F1 over labels present (excluding the last, "none")."""
    labels = [c for c in range(len(confusion) - 1) if confusion[c].sum() + confusion[:, c].sum() > 0]
    precision, recall, f1 = [], [], []
    for c in labels:
        tp, predicted, actual = confusion[c, c], confusion[:, c].sum(), confusion[c].sum()
        p = tp / predicted if predicted else 0.0
        r = tp / actual if actual else 0.0
        precision.append(p)
        recall.append(r)
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    return np.trace(confusion) / confusion.sum(), np.mean(precision), np.mean(recall), np.mean(f1)


def test_accumulated_metrics_equal_loop_reference() -> None:
    taxonomy = load_taxonomy()
    extractor = ClassificationExtractor(taxonomy, presence_threshold=THRESHOLD)
    confusion = {group: np.zeros((8, 8), dtype=np.int64) for group in ((1, 2), (1,), (2,))}
    feature_counts = np.zeros((3, 4), dtype=np.int64)
    for seed in range(4):
        padded, valid, targets = _random_batch(seed, taxonomy.num_classes)
        extractor.update(padded, valid, targets)
        for group in confusion:
            for predicted, truth, *_ in _reference_answers(taxonomy, padded, valid, targets, group):
                confusion[group][truth, predicted] += 1
        for _, _, predicted, truth in _reference_answers(taxonomy, padded, valid, targets):
            for feature, (p, t) in enumerate(zip(predicted, truth)):
                feature_counts[feature] += [p and t, p and not t, t and not p, not p and not t]
    result = extractor.compute()
    assert result.confusion_matrix.shape == (8, 8)  # 7 denominations + "none"
    assert result.class_names[-1] == "none" and result.class_names[0] == taxonomy.main_names[0]
    np.testing.assert_array_equal(result.confusion_matrix, confusion[(1, 2)])
    assert result.num_images == 48
    for metrics, matrix in ((result.denomination, confusion[(1, 2)]), (result.layers[1], confusion[(1,)]),
                            (result.layers[2], confusion[(2,)])):
        expected = _macro(matrix)
        assert (metrics.accuracy, metrics.precision, metrics.recall, metrics.f1) == pytest.approx(expected)
    for (name, metrics), (tp, fp, fn, tn) in zip(result.features.items(), feature_counts):
        assert name in ("security_thread", "watermark", "special_sign")
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        assert metrics.accuracy == pytest.approx((tp + tn) / (tp + fp + fn + tn))
        assert (metrics.precision, metrics.recall) == pytest.approx((p, r))
    assert result.layers[3].f1 == pytest.approx(np.mean([m.f1 for m in result.features.values()]))
    extractor.reset()
    assert extractor.compute().num_images == 0


def test_identity_taxonomy_denomination_is_the_dominant_class() -> None:
    taxonomy = Taxonomy.identity(["cat", "dog", "bird"])
    extractor = ClassificationExtractor(taxonomy, presence_threshold=THRESHOLD)
    padded = torch.zeros(2, 4, 6)
    padded[0, :3, 4:] = torch.tensor([[0.9, 0], [0.5, 1], [0.6, 1]])  # dog 1.1 beats cat 0.9
    padded[1, :1, 4:] = torch.tensor([[0.1, 2]])  # below the threshold: "none"
    valid = torch.tensor([[True, True, True, False], [True, False, False, False]])
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.1, 0.1], [1, 2, 0.5, 0.5, 0.1, 0.1]])
    answers = extractor.extract(padded, valid, targets)
    assert answers.predicted_denomination.tolist() == [1, 3]
    assert answers.true_denomination.tolist() == [1, 2]
    assert answers.predicted_features.shape == (2, 0)
    extractor.update(padded, valid, targets)
    result = extractor.compute()
    assert result.confusion_matrix.shape == (4, 4)
    assert result.class_names == ("cat", "dog", "bird", "none")
    assert result.denomination.accuracy == 0.5
    assert set(result.layers) == {1} and result.features == {}
