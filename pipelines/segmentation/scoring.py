"""Scoring a pipeline's labels against ground truth, as Ray Data stages: ``Scorer`` for ``pipelines.evaluate``,
``CRFSettingsScorer`` for ``pipelines.tune_crf``."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from deeplab_core.crf import CRFParams
from deeplab_core.crf_tuning import score_crf_settings
from deeplab_core.io import resize_labels
from deeplab_core.metrics import ConfusionMatrix
from pipelines.segmentation import columns
from pipelines.segmentation.stages import describe

PLAIN, REFINED = "plain", "refined"  # confusion counts (classes x classes, flattened): the model's labels, the CRF's
CHUNK = "chunk"  # which share of the settings a row's task scores (tune_crf splits an image's settings over tasks)
MATRICES = "matrices"  # settings x classes x classes confusion counts, flattened


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

class CRFSettingsScorer:
    """CPU task: for each row (an image, its low-resolution logits and ground truth; its ``chunk``), the confusion
    matrices of the CRF's labels under every ``chunks``-th setting from the chunk's index on, and of the model's own
    argmax (``plain``, chunk 0 only); ``error`` when the row failed earlier or here."""

    def __init__(self, settings: Sequence[CRFParams], chunks: int, stride: int, num_classes: int) -> None:
        self.settings, self.chunks, self.stride, self.num_classes = tuple(settings), chunks, stride, num_classes

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {columns.URI: [], columns.ERROR: [], CHUNK: [], MATRICES: [], PLAIN: [],
                                columns.SECONDS_CRF: []}
        for row in range(len(batch[columns.URI])):
            chunk, error = int(batch[CHUNK][row]), str(batch[columns.ERROR][row])
            matrices, plain, started = np.zeros(0, np.int64), np.zeros(0, np.int64), time.perf_counter()
            if not error:
                label = batch[columns.LABEL][row]
                try:
                    scores = score_crf_settings(batch[columns.IMAGE][row], batch[columns.LOGITS][row], label,
                                                self.stride, self.settings[chunk::self.chunks], self.num_classes)
                    matrices = np.stack([score.counts for score in scores]).ravel()
                    if chunk == 0:
                        plain = confusion_counts(batch[columns.LABELS][row], label, self.num_classes)
                except Exception as err:  # noqa: BLE001 - recorded; the driver leaves the image out of every setting
                    error = describe(err)
            out[columns.URI].append(str(batch[columns.URI][row]))
            out[columns.ERROR].append(error)
            out[CHUNK].append(chunk)
            out[MATRICES].append(matrices)
            out[PLAIN].append(plain)
            out[columns.SECONDS_CRF].append(time.perf_counter() - started)
        return out
