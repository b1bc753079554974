"""Scoring CRF settings for ``pipelines.tune_crf``: ``CRFSettingsScorer`` (a Ray Data stage: one image's confusion
matrices under many settings) and ``RoundScorer`` (rounds of settings into the tuning table, the model run once)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from deeplab_core.crf_params import CRFParams
from deeplab_core.crf_tuning import score_crf_settings
from deeplab_core.data import Sample
from deeplab_core.inference_settings import InferenceSettings
from deeplab_core.metrics import ConfusionMatrix
from pipelines.segmentation import columns
from pipelines.segmentation.model_pool import ModelResources
from pipelines.segmentation.scoring import PLAIN, confusion_counts
from pipelines.segmentation.stages import describe
from pipelines.tuning.table import NO_CRF, TuningTable, setting_key

if TYPE_CHECKING:  # the scoring tasks' workers unpickle this module: they need no torch
    from deeplab_core.checkpoint import Checkpoint

CHUNK = "chunk"  # which share of the settings a row's task scores (an image's settings are split over tasks)
MATRICES = "matrices"  # settings x classes x classes confusion counts, flattened


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


class RoundScorer:
    """Scores rounds of settings into the table; runs the model over the images once, on the first round that has
    settings left to score, and keeps its rows (image, logits, ground truth) for every later round."""

    def __init__(self, inference: InferenceSettings, resources: ModelResources, samples: list[Sample],
                 checkpoint: Checkpoint) -> None:
        self.inference, self.resources, self.samples, self.checkpoint = inference, resources, samples, checkpoint
        self.model_rows = None
        self.failures: dict[str, str] = {}

    def score(self, table: TuningTable, rounds: Sequence[tuple[str, list[CRFParams]]]) -> bool:
        """Score every setting of ``rounds`` not yet in ``table``, then save it; False when no image could be
        scored."""
        todo: dict[tuple, tuple[str, CRFParams]] = {}
        for name, settings in rounds:
            for params in settings:
                if params not in table:
                    todo.setdefault(setting_key(params), (name, params))
        total = len({setting_key(params) for _, settings in rounds for params in settings})
        print(f"[tune_crf] {' + '.join(name for name, _ in rounds)}: {total} settings, {total - len(todo)} already "
              f"scored, {len(todo)} to score", flush=True)
        if not todo:
            return True
        matrices, plain, images, cpu_seconds = self._run([params for _, params in todo.values()])
        if images == 0:
            uri, error = next(iter(self.failures.items()))
            print(f"error: no image could be scored (first failure: {uri}: {error})", file=sys.stderr)
            return False
        print(f"[tune_crf] scored {len(todo)} settings x {images} images: {cpu_seconds:.1f} CPU-s in CRF tasks "
              f"({cpu_seconds / (len(todo) * images):.3f} s per image and setting)", flush=True)
        for (name, params), matrix in zip(todo.values(), matrices):
            table.add(name, params, matrix, images)
        if None not in table:
            table.add(NO_CRF, None, plain, images)
        table.save()
        return True

    def _run(self, settings: list[CRFParams]) -> tuple[list[ConfusionMatrix], ConfusionMatrix, int, float]:
        """Every setting's summed confusion matrix over the images scored under all of them, the model's own
        argmax's, how many images that is, and the CPU-seconds the scoring tasks took."""
        import ray

        rows = self._model_rows()
        num_classes = self.checkpoint.spec.num_classes
        images = len(self.samples)
        # Enough tasks for every CPU of the cluster: an image's settings are split over several tasks when the
        # images alone are too few (each task then copies the image's row: few images, small cost).
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1) / self.resources.crf_cpus))
        chunks = max(1, min(len(settings), math.ceil(4 * cpus / max(1, images))))
        scored = rows.flat_map(lambda row: [{**row, CHUNK: chunk} for chunk in range(chunks)]).map_batches(
            CRFSettingsScorer(settings, chunks, self.checkpoint.spec.output_stride, num_classes), batch_size=1,
            num_cpus=self.resources.crf_cpus, max_retries=1)
        per_image: dict[str, dict[int, np.ndarray]] = {}
        plain, cpu_seconds = {}, 0.0
        for row in scored.iter_rows():
            uri, error = str(row[columns.URI]), str(row[columns.ERROR])
            cpu_seconds += float(row[columns.SECONDS_CRF])
            if error:
                self.failures.setdefault(uri, error)
                continue
            per_image.setdefault(uri, {})[int(row[CHUNK])] = np.asarray(row[MATRICES], np.int64)
            if int(row[CHUNK]) == 0:
                plain[uri] = np.asarray(row[PLAIN], np.int64)
        complete = [uri for uri, parts in per_image.items() if len(parts) == chunks and uri not in self.failures]
        totals = np.zeros((len(settings), num_classes, num_classes), np.int64)
        no_crf = np.zeros((num_classes, num_classes), np.int64)
        for uri in complete:
            for chunk, counts in per_image[uri].items():
                totals[chunk::chunks] += counts.reshape(-1, num_classes, num_classes)
            no_crf += plain[uri].reshape(num_classes, num_classes)
        return ([ConfusionMatrix(num_classes, counts) for counts in totals], ConfusionMatrix(num_classes, no_crf),
                len(complete), cpu_seconds)

    def _model_rows(self):
        """The model's rows over every image, computed once and kept in the object store."""
        if self.model_rows is None:
            from pipelines.common.runtime import init_ray
            from pipelines.segmentation.stages import add_model_stages, labelled_images, plan_model_stage

            init_ray()
            pool = plan_model_stage(self.resources, "tune_crf")
            self.model_rows = add_model_stages(
                labelled_images(self.samples, self.inference.batch_size), self.checkpoint,
                replace(self.inference, crf=None), self.resources, pool, plain=True, keep_image=True,
                num_classes=self.checkpoint.spec.num_classes, low_res_logits=True).materialize()
        return self.model_rows
