"""A streaming, mergeable confusion matrix and the segmentation scores derived from it."""

from __future__ import annotations

import numpy as np


class ConfusionMatrix:
    """Counts (label, prediction) pixel pairs; rows are labels, columns predictions.

    ``update`` ignores label pixels outside ``0..num_classes-1`` (255 = ignore). Matrices from different
    workers merge with ``+`` (a plain sum), so evaluation can be split any way and combined exactly.
    Classes absent from both labels and predictions have no IoU (NaN) and are left out of the means.
    """

    def __init__(self, num_classes: int, counts: np.ndarray | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        if counts is None:
            counts = np.zeros((num_classes, num_classes), dtype=np.int64)
        counts = np.asarray(counts, dtype=np.int64)
        if counts.shape != (num_classes, num_classes):
            raise ValueError(f"counts must be {num_classes} x {num_classes}, got {counts.shape}")
        self.counts = counts

    def update(self, pred, label) -> ConfusionMatrix:
        pred = _as_int_array(pred)
        label = _as_int_array(label)
        if pred.shape != label.shape:
            raise ValueError(f"prediction {pred.shape} and label {label.shape} differ in shape")
        valid = (label >= 0) & (label < self.num_classes)
        if np.any((pred[valid] < 0) | (pred[valid] >= self.num_classes)):
            raise ValueError(f"predictions must be class ids in 0..{self.num_classes - 1}")
        pairs = label[valid] * self.num_classes + pred[valid]
        self.counts += np.bincount(pairs, minlength=self.num_classes**2).reshape(self.counts.shape)
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        if not isinstance(other, ConfusionMatrix) or other.num_classes != self.num_classes:
            return NotImplemented
        return ConfusionMatrix(self.num_classes, self.counts + other.counts)

    def __radd__(self, other):  # lets sum() start from 0
        return self if other == 0 else self.__add__(other)

    def __eq__(self, other) -> bool:
        return isinstance(other, ConfusionMatrix) and np.array_equal(self.counts, other.counts)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def per_class_iou(self) -> np.ndarray:
        true_positive = np.diag(self.counts).astype(np.float64)
        union = self.counts.sum(0) + self.counts.sum(1) - true_positive
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, true_positive / union, np.nan)

    def miou(self) -> float:
        iou = self.per_class_iou()
        return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")

    def pixel_accuracy(self) -> float:
        return float(np.trace(self.counts) / self.total) if self.total else float("nan")

    def mean_class_accuracy(self) -> float:
        per_label = self.counts.sum(1)
        present = per_label > 0
        if not present.any():
            return float("nan")
        return float(np.mean(np.diag(self.counts)[present] / per_label[present]))

    def frequency_weighted_iou(self) -> float:
        if not self.total:
            return float("nan")
        frequency = self.counts.sum(1) / self.total
        iou = np.nan_to_num(self.per_class_iou(), nan=0.0)
        return float(np.sum(frequency * iou))

    def summary(self, class_names: list[str] | None = None) -> dict:
        """A JSON-ready dict of every score (per-class IoU as a name -> value map, NaN as None)."""
        names = class_names or [str(i) for i in range(self.num_classes)]
        per_class = {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, self.per_class_iou())}
        return {
            "miou": self.miou(),
            "pixel_accuracy": self.pixel_accuracy(),
            "mean_class_accuracy": self.mean_class_accuracy(),
            "frequency_weighted_iou": self.frequency_weighted_iou(),
            "per_class_iou": per_class,
            "pixels": self.total,
        }

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={self.total}, miou={self.miou():.4f})"


def _as_int_array(values) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, without importing torch here
        values = values.detach().cpu().numpy()
    return np.asarray(values).astype(np.int64, copy=False).ravel()
