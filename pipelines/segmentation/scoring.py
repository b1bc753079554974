"""Scoring a pipeline's labels against ground truth, as a Ray Data stage: ``Scorer`` for ``pipelines.evaluate``
(``pipelines.tuning.scoring`` scores CRF settings for ``pipelines.tune_crf``)."""

from __future__ import annotations

import numpy as np

from deeplab_core.io import resize_labels
from deeplab_core.metrics import ConfusionMatrix
from pipelines.segmentation import columns

PLAIN, REFINED = "plain", "refined"  # confusion counts (classes x classes, flattened): the model's labels, the CRF's


def confusion_counts(labels: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """The flattened confusion counts of predicted ``labels`` (at the working size) against ground truth ``label``
    (at the input's size, to which the labels are resized)."""
    return ConfusionMatrix(num_classes).update(resize_labels(labels, label.shape), label).counts.ravel()


class Scorer:
    """CPU task: each row's confusion matrices (flattened) against its ground truth, of the model's labels
    (``plain``) and, ``with_crf``, of the CRF's (``refined``); rows that failed keep their ``error`` and empty
    matrices. The precision and the costs pass through for the driver's report and sizing line."""

    def __init__(self, num_classes: int, with_crf: bool) -> None:
        self.num_classes, self.with_crf = num_classes, with_crf

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        passed = (columns.PRECISION, columns.SECONDS_MODEL, columns.SECONDS_CRF, columns.CRF_LABELS)
        out: dict[str, list] = {columns.URI: [], columns.ERROR: [], PLAIN: [], REFINED: []}
        out.update({column: [] for column in passed if column in batch})
        empty = np.zeros(0, np.int64)
        for row in range(len(batch[columns.URI])):
            error = str(batch[columns.ERROR][row])
            plain = refined = empty
            if not error:
                label = batch[columns.LABEL][row]
                plain = confusion_counts(batch[columns.LABELS][row], label, self.num_classes)
                if self.with_crf:
                    refined = confusion_counts(batch[columns.LABELS_CRF][row], label, self.num_classes)
            out[columns.URI].append(str(batch[columns.URI][row]))
            out[columns.ERROR].append(error)
            out[PLAIN].append(plain)
            out[REFINED].append(refined)
            for column in passed:
                if column in batch:
                    out[column].append(batch[column][row])
        return out
