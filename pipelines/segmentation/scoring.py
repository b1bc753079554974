"""Scoring a pipeline's labels against ground truth, as a Ray Data stage of ``pipelines.evaluate``."""

from __future__ import annotations

import json

import numpy as np

from deeplab_core.io import resize_labels
from deeplab_core.metrics import ConfusionMatrix
from pipelines.segmentation import columns


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
