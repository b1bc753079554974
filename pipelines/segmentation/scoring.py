"""Scoring a pipeline's labels against ground truth, as Ray Data stages: ``Scorer`` for ``pipelines.evaluate``,
``CRFSettingsScorer`` for ``pipelines.tune_crf``."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import numpy as np

from deeplab_core.crf import CRFParams
from deeplab_core.crf_tuning import score_crf_settings
from deeplab_core.io import resize_labels
from deeplab_core.metrics import ConfusionMatrix
from pipelines.segmentation import columns
from pipelines.segmentation.stages import describe

CHUNK = "chunk"  # which share of the settings a row's task scores (tune_crf splits an image's settings over tasks)
MATRICES = "matrices"  # settings x classes x classes confusion counts, flattened


class Scorer:
    """CPU task: confusion matrices (flattened) of each row's labels against its ground truth."""

    def __init__(self, num_classes: int, with_crf: bool) -> None:
        self.num_classes, self.with_crf = num_classes, with_crf

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        plain, refined = ConfusionMatrix(self.num_classes), ConfusionMatrix(self.num_classes)
        errors, precisions = [], sorted({str(p) for p in batch[columns.PRECISION]})
        costs: dict[str, list] = {columns.SECONDS_MODEL: [], columns.SECONDS_CRF: [], columns.CRF_LABELS: []}
        for row in range(len(batch[columns.URI])):
            if batch[columns.ERROR][row]:
                errors.append(str(batch[columns.ERROR][row]))
                continue
            label = batch[columns.LABEL][row]
            plain.update(resize_labels(batch[columns.LABELS][row], label.shape), label)
            if self.with_crf:
                refined.update(resize_labels(batch[columns.LABELS_CRF][row], label.shape), label)
            for column, values in costs.items():
                if column in batch:
                    values.append(batch[column][row].item())
        return {"plain": [plain.counts.ravel()], "crf": [refined.counts.ravel()], "errors": [json.dumps(errors)],
                "precisions": [json.dumps(precisions)], "costs": [json.dumps(costs)]}


class CRFSettingsScorer:
    """CPU task: for each row (an image, its low-resolution logits and ground truth; its ``chunk``), the confusion
    matrices of the CRF's labels under every ``chunks``-th setting from the chunk's index on, and of the model's own
    argmax (``plain``, chunk 0 only); ``error`` when the row failed earlier or here."""

    def __init__(self, settings: Sequence[CRFParams], chunks: int, stride: int, num_classes: int) -> None:
        self.settings, self.chunks, self.stride, self.num_classes = tuple(settings), chunks, stride, num_classes

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {columns.URI: [], columns.ERROR: [], CHUNK: [], MATRICES: [], "plain": [],
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
                        plain = ConfusionMatrix(self.num_classes).update(
                            resize_labels(batch[columns.LABELS][row], label.shape), label).counts.ravel()
                except Exception as err:  # noqa: BLE001 - recorded; the driver leaves the image out of every setting
                    error = describe(err)
            out[columns.URI].append(str(batch[columns.URI][row]))
            out[columns.ERROR].append(error)
            out[CHUNK].append(chunk)
            out[MATRICES].append(matrices)
            out["plain"].append(plain)
            out[columns.SECONDS_CRF].append(time.perf_counter() - started)
        return out
