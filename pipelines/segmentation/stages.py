"""The stages of the segmentation and evaluation pipelines, as ordinary callables for ``Dataset.map_batches``, and
``add_model_stages``, which chains them the same way for both drivers.

    ReadImages (CPU tasks) -> Predictor (actor pool, GPU or CPU) -> Refiner (CPU tasks: CRF) -> ManifestWriter

Rows carry ``error`` ("" when fine): a stage never raises for one bad input, it records the error and passes the row
on, so every input reaches the manifest exactly once. The model math lives in ``deeplab_core``; these classes only
move rows. Only the model actors and the CRF tasks import torch, where they use it: the workers of the decode and
write tasks, which import this module, start ~2.5 s sooner and ~800 MB lighter without it. Rows travel light: uint8
images into the model actors; out of them, low-resolution float16 logits when a CRF follows (``logits``), else uint8
labels computed on the device (``labels``); the image column only where a later stage needs it. The CRF writes
``labels_crf``."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from deeplab_core.crf_params import PAPER_PARAMS, CRFParams
from deeplab_core.data import Sample, read_label
from deeplab_core.inference_settings import InferenceSettings, working_size
from deeplab_core.io import decode_image, read_bytes, resize_image, resize_labels
from pipelines.common.usage import UsageSampler
from pipelines.segmentation.model_pool import ModelResources, PoolPlan, model_stage_resources, plan_pool
from pipelines.segmentation import columns
from pipelines.segmentation.manifest import empty_record, manifest_schema
from pipelines.segmentation.writers import OutputWriter

if TYPE_CHECKING:
    from deeplab_core.models import ModelSpec

_NO_IMAGE = np.zeros((1, 1, 3), np.uint8)
_NO_LABELS = np.zeros((1, 1), np.uint8)
# A model call that kills its actor (out of memory, a crashed driver) is retried once on a fresh actor; then its
# block fails, is skipped (max_errored_blocks), and the driver records its inputs as errors. Ray Data's default is
# to retry forever, which turns one bad input into a job that never ends.
ACTOR_RETRIES = {"max_restarts": -1, "max_task_retries": 1}
TASK_RETRIES = {"max_retries": 1}
# Model calls (of --batch-size images each) per Predictor task: Ray Data's per-task overhead is paid once for all of
# them, and they are queued on the device back to back.
CALLS_PER_MODEL_TASK = 4
# Blocks are the unit of parallelism of the decode and write tasks: small enough to give every CPU work.
MAX_ROWS_PER_BLOCK = 64


def describe(error: Exception) -> str:
    """One line for the manifest: the exception's own message (ours name the input) and its type."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    return f"{type(error).__name__}: {message}"


def _copy_columns(batch: dict, drop: tuple[str, ...] = ()) -> dict[str, list]:
    # Lists, not arrays: numpy's fixed-width strings would truncate longer error messages appended later.
    return {key: list(values) for key, values in batch.items() if key not in drop}


class ReadImages:
    """Read and decode each input; shrink it to ``max_side`` / ``max_pixels``. With ``label_uri``, read its label as
    class ids (mapped or rasterised as its ``layout`` says).

    Rows arriving with an ``error`` (an input refused when listed) are passed on unread.
    """

    def __init__(self, max_side: int | None = None, max_pixels: int | None = None,
                 num_classes: int | None = None) -> None:
        self.max_side, self.max_pixels, self.num_classes = max_side, max_pixels, num_classes

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = _copy_columns(batch, drop=(columns.ERROR,))
        labelled = columns.LABEL_URI in batch
        added = (columns.IMAGE, columns.HEIGHT, columns.WIDTH, columns.ERROR) + ((columns.LABEL,) if labelled else ())
        for key in added:
            out[key] = []
        for row in range(len(batch[columns.URI])):
            uri = str(batch[columns.URI][row])
            error = str(batch[columns.ERROR][row]) if columns.ERROR in batch else ""
            image, label = _NO_IMAGE, _NO_LABELS
            height = width = 0
            if not error:
                try:
                    original = decode_image(read_bytes(uri), uri)
                    height, width = original.shape[:2]
                    image = resize_image(original, working_size(height, width, self.max_side, self.max_pixels))
                    del original
                    if labelled:
                        sample = Sample(uri, str(batch[columns.LABEL_URI][row]), str(batch[columns.LAYOUT][row]), "",
                                        str(batch[columns.ANNOTATION][row]))
                        label = read_label(sample, (height, width), self.num_classes)
                except Exception as err:  # noqa: BLE001 - any failure of one input is recorded, never fatal
                    image, label, error = _NO_IMAGE, _NO_LABELS, describe(err)
            out[columns.IMAGE].append(image)
            out[columns.HEIGHT].append(height)
            out[columns.WIDTH].append(width)
            out[columns.ERROR].append(error)
            if labelled:
                out[columns.LABEL].append(label)
        return out


class Predictor:
    """Actor: loads the model once onto its device, then runs every batch through a ``ModelRunner``.

    Emits ``logits`` (low-resolution, ``TRANSPORT_DTYPE``) and/or ``labels`` (uint8, the device's argmax), each
    image's share of its batch's seconds and the precision that produced it; drops ``image`` unless ``keep_image``.
    """

    def __init__(self, checkpoint: str, settings: InferenceSettings, logits: bool = True, labels: bool = False,
                 keep_image: bool = True) -> None:
        from deeplab_core.checkpoint import load_model
        from deeplab_core.inference import TRANSPORT_DTYPE
        from deeplab_core.runner import ModelRunner

        model, loaded = load_model(checkpoint)
        self.runner = ModelRunner(model, settings, mean=loaded.spec.mean, std=loaded.spec.std)
        self.no_logits = np.zeros((1, 1, 1), TRANSPORT_DTYPE)
        self.logits, self.labels, self.keep_image = logits, labels, keep_image

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows = len(batch[columns.URI])
        out = _copy_columns(batch, drop=() if self.keep_image else (columns.IMAGE,))
        errors = out[columns.ERROR] = [str(e) for e in batch[columns.ERROR]]
        todo = [row for row in range(rows) if not errors[row]]
        started = time.perf_counter()
        result = self.runner.run([batch[columns.IMAGE][row] for row in todo], logits=self.logits, labels=self.labels)
        share = (time.perf_counter() - started) / max(1, len(todo))
        logits: list[np.ndarray] = [self.no_logits] * rows
        labels: list[np.ndarray] = [_NO_LABELS] * rows
        for position, row in enumerate(todo):
            if result.errors[position] is not None:
                errors[row] = describe(result.errors[position])
                continue
            if self.logits:
                logits[row] = result.logits[position]
            if self.labels:
                labels[row] = result.labels[position]
        if self.logits:
            out[columns.LOGITS] = logits
        if self.labels:
            out[columns.LABELS] = labels
        out[columns.SECONDS_MODEL] = [share if not errors[row] else 0.0 for row in range(rows)]
        out[columns.PRECISION] = [self.runner.precision] * rows
        return out


class Refiner:
    """CPU task: dense-CRF labels (``labels_crf``) from each row's image and low-resolution logits, with the seconds
    and the number of labels the CRF took (``seconds_crf``, ``crf_labels``); drops the logits column, and the image
    unless ``keep_image``."""

    def __init__(self, stride: int, crf_params: CRFParams = PAPER_PARAMS, keep_image: bool = True) -> None:
        self.stride, self.crf_params = stride, crf_params
        self.drop = (columns.LOGITS,) if keep_image else (columns.LOGITS, columns.IMAGE)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from deeplab_core.crf import refine_low_res

        out = _copy_columns(batch, drop=self.drop)
        out[columns.ERROR] = [str(e) for e in out[columns.ERROR]]
        out[columns.LABELS_CRF], out[columns.SECONDS_CRF], out[columns.CRF_LABELS] = [], [], []
        for row in range(len(batch[columns.URI])):
            labels, seconds, stats = _NO_LABELS, 0.0, {"labels": 0}
            if not out[columns.ERROR][row]:
                started = time.perf_counter()
                try:
                    labels = refine_low_res(batch[columns.IMAGE][row], batch[columns.LOGITS][row], self.stride,
                                            self.crf_params, stats).astype(np.uint8)
                    seconds = time.perf_counter() - started
                except Exception as err:  # noqa: BLE001
                    out[columns.ERROR][row] = describe(err)
            out[columns.LABELS_CRF].append(labels)
            out[columns.SECONDS_CRF].append(seconds)
            out[columns.CRF_LABELS].append(stats["labels"])
        return out


class ManifestWriter:
    """CPU task: each input's outputs straight to the output filesystem (``writers``: the mask as a PNG and/or RLE,
    the overlay, ...); returns the manifest rows, each writer filling its own columns."""

    def __init__(self, output: str, spec: ModelSpec, model_digest: str, crf: bool,
                 writers: Sequence[OutputWriter]) -> None:
        self.output, self.num_classes, self.model_digest = output, spec.num_classes, model_digest
        self.crf, self.writers = crf, tuple(writers)
        self.labels_column = columns.LABELS_CRF if crf else columns.LABELS
        self.schema = manifest_schema(spec)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        rows = []
        for row in range(len(batch[columns.URI])):
            uri, error = str(batch[columns.URI][row]), str(batch[columns.ERROR][row])
            record = empty_record(
                uri, status="error", error=error or None, crf=self.crf, model=self.model_digest,
                seconds_model=float(batch[columns.SECONDS_MODEL][row]),
                seconds_crf=float(batch[columns.SECONDS_CRF][row]) if columns.SECONDS_CRF in batch else 0.0,
                crf_labels=int(batch[columns.CRF_LABELS][row]) if self.crf and not error else None,
                precision=str(batch[columns.PRECISION][row]))
            if not error:
                try:
                    record.update(self._write(batch, row))
                except Exception as err:  # noqa: BLE001 - e.g. no write permission on the output
                    record["error"] = describe(err)
            rows.append(record)
        return pa.Table.from_pylist(rows, schema=self.schema)

    def _write(self, batch: dict[str, np.ndarray], row: int) -> dict:
        height, width = int(batch[columns.HEIGHT][row]), int(batch[columns.WIDTH][row])
        name = str(batch[columns.NAME][row])
        labels = batch[self.labels_column][row]
        mask = resize_labels(labels, (height, width))
        image = batch[columns.IMAGE][row] if columns.IMAGE in batch else _NO_IMAGE
        written: dict = {}
        for writer in self.writers:
            written.update(writer.write(self.output, name, image, labels, mask))
        counts = np.bincount(mask.ravel(), minlength=self.num_classes)[: self.num_classes]
        return {**written, "status": "ok", "width": width, "height": height,
                "class_pixels": counts.astype(np.int64).tolist()}


def default_rows_per_block(count: int, batch_size: int) -> int:
    """Rows per input block for ``count`` inputs: about four blocks per CPU of the cluster, at least one model
    batch and at most ``MAX_ROWS_PER_BLOCK``."""
    import ray

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return max(1, min(MAX_ROWS_PER_BLOCK, max(batch_size, math.ceil(count / (4 * cpus)))))


def labelled_images(samples: Sequence[Sample], batch_size: int):
    """A Ray Dataset of rows (``uri``, ``label_uri``, ``layout``, ``annotation``, ``error``) for labelled
    ``samples``, in blocks as ``default_rows_per_block`` sizes them: what evaluate and tune_crf score."""
    import ray.data

    items = [{columns.URI: s.image, columns.LABEL_URI: s.label, columns.LAYOUT: s.layout,
              columns.ANNOTATION: s.annotation, columns.ERROR: ""} for s in samples]
    blocks = math.ceil(len(items) / default_rows_per_block(len(items), batch_size))
    return ray.data.from_items(items, override_num_blocks=blocks)


def add_model_stages(dataset, checkpoint, settings: InferenceSettings, resources: ModelResources, pool: PoolPlan, *,
                     plain: bool, keep_image: bool, num_classes: int | None = None, low_res_logits: bool = False):
    """decode -> model (an actor pool as ``pool`` plans it) -> (CRF, when ``settings.crf``) on ``dataset``.

    ``plain``: also emit the model's own argmax labels (``labels``); ``keep_image``: keep the decoded image after
    the CRF (overlays need it); ``low_res_logits``: emit the model's ``logits`` (with no CRF stage: tune_crf runs
    many CRF settings on them).
    """
    crf = settings.crf is not None
    # The retry limits above have no named map_batches parameter in Ray 2.60; its deprecation notice is noise.
    warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
    dataset = dataset.map_batches(ReadImages(settings.max_side, settings.max_pixels, num_classes),
                                  batch_size=settings.batch_size, **TASK_RETRIES)
    dataset = dataset.map_batches(
        Predictor, fn_constructor_kwargs={"checkpoint": checkpoint.uri, "settings": settings,
                                          "logits": crf or low_res_logits,
                                          "labels": plain, "keep_image": crf or keep_image},
        batch_size=settings.batch_size * CALLS_PER_MODEL_TASK, **model_stage_resources(pool, resources), **ACTOR_RETRIES)
    if crf:
        # One row per CRF task: every CPU given to the stage works while images are queued, however the model
        # stage grouped its output.
        dataset = dataset.repartition(target_num_rows_per_block=1).map_batches(
            Refiner(checkpoint.spec.output_stride, settings.crf, keep_image), batch_size=1,
            num_cpus=resources.crf_cpus, **TASK_RETRIES)
    return dataset


# How the model actors show in Ray's actor table (Ray Data names them after the stage): what UsageSampler counts.
MODEL_ACTOR_NAME = f"MapBatches({Predictor.__name__})"


def plan_model_stage(resources: ModelResources, program: str) -> PoolPlan:
    """The model stage's actor pool on the connected cluster (``plan_pool``), announced as
    ``[program] model stage: ...``."""
    pool = plan_pool(resources)
    print(f"[{program}] model stage: {pool}", flush=True)
    return pool


def model_stage_usage(pool: PoolPlan) -> UsageSampler:
    """``with model_stage_usage(pool) as sampler:`` samples what the run uses of the cluster while it runs, its model
    actors counted (at least the pool's minimum, which runs before any row does)."""
    return UsageSampler(MODEL_ACTOR_NAME, at_least_actors=pool.actors.minimum)
