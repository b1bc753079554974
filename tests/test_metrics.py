import numpy as np
import pytest
import torch

from deeplab_core.metrics import ConfusionMatrix


def _brute_force(preds, labels, num_classes):
    tp = np.zeros(num_classes)
    fp = np.zeros(num_classes)
    fn = np.zeros(num_classes)
    correct = total = 0
    for pred, label in zip(preds, labels):
        for p, t in zip(pred.ravel(), label.ravel()):
            if t == 255:
                continue
            total += 1
            correct += p == t
            if p == t:
                tp[t] += 1
            else:
                fp[p] += 1
                fn[t] += 1
    ious = [tp[c] / (tp[c] + fp[c] + fn[c]) for c in range(num_classes) if tp[c] + fp[c] + fn[c] > 0]
    freq = (tp + fn) / total
    fw = sum(freq[c] * tp[c] / (tp[c] + fp[c] + fn[c]) for c in range(num_classes) if tp[c] + fp[c] + fn[c] > 0)
    return np.mean(ious), correct / total, fw


def test_scores_equal_brute_force_and_absent_classes_are_excluded():
    rng = np.random.default_rng(0)
    num_classes = 6  # class 5 never occurs in labels or predictions
    preds = [rng.integers(0, 5, (7, 9)) for _ in range(3)]
    labels = [np.where(rng.random((7, 9)) < 0.2, 255, rng.integers(0, 5, (7, 9))) for _ in range(3)]
    matrix = ConfusionMatrix(num_classes)
    for pred, label in zip(preds, labels):
        matrix.update(pred, label)
    miou, accuracy, fwiou = _brute_force(preds, labels, num_classes)
    assert matrix.miou() == pytest.approx(miou)
    assert matrix.pixel_accuracy() == pytest.approx(accuracy)
    assert matrix.frequency_weighted_iou() == pytest.approx(fwiou)
    assert np.isnan(matrix.per_class_iou()[5])
    assert matrix.total == sum(int((label != 255).sum()) for label in labels)


def test_merging_equals_one_matrix_over_everything():
    rng = np.random.default_rng(1)
    pairs = [(rng.integers(0, 3, (5, 5)), rng.integers(0, 3, (5, 5))) for _ in range(4)]
    whole = ConfusionMatrix(3)
    parts = [ConfusionMatrix(3), ConfusionMatrix(3)]
    for index, (pred, label) in enumerate(pairs):
        whole.update(pred, label)
        parts[index % 2].update(pred, label)
    assert parts[0] + parts[1] == whole
    assert sum(parts) == whole
    assert (parts[0] + parts[1]).miou() == pytest.approx(whole.miou())


def test_accepts_torch_tensors_and_rejects_bad_input():
    matrix = ConfusionMatrix(3).update(torch.tensor([[0, 1], [2, 2]]), torch.tensor([[0, 1], [2, 255]]))
    assert matrix.pixel_accuracy() == 1.0 and matrix.total == 3
    with pytest.raises(ValueError, match="differ in shape"):
        matrix.update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="class ids"):
        matrix.update(np.full((2, 2), 7), np.zeros((2, 2)))
    with pytest.raises(TypeError):
        ConfusionMatrix(3) + ConfusionMatrix(4)


def test_summary_is_json_ready():
    import json
    matrix = ConfusionMatrix(3).update(np.array([0, 1]), np.array([0, 1]))
    summary = matrix.summary(["bg", "a", "b"])
    assert summary["per_class_iou"] == {"bg": 1.0, "a": 1.0, "b": None}
    json.dumps(summary)
