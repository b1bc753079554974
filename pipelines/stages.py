"""The stages of the segmentation and evaluation pipelines, as ordinary callables for ``Dataset.map_batches``.

    ReadImages (CPU tasks) -> Predictor (actor pool, GPU or CPU) -> Refiner (CPU tasks: CRF) -> ManifestWriter

Rows carry ``error`` ("" when fine): a stage never raises for one bad input, it records the error and passes the row
on, so every input reaches the manifest exactly once. The model math lives in ``deeplab_core``; these classes only
move rows. Between the predictor and the refiner each row carries low-resolution logits (C x H/s x W/s, float16),
not full-resolution probabilities.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import pyarrow as pa
import torch

from deeplab_core.checkpoint import load_model
from deeplab_core.data import check_mask
from deeplab_core.data.transforms import resize_image, resize_labels
from deeplab_core.inference import (
    TRANSPORT_DTYPE, batch_images, fit_max_side, labels_from_low_res, low_res_size, predict_low_res,
)
from deeplab_core.io import decode_image, decode_mask, encode_palette_png, encode_png, overlay, read_bytes, write_bytes
from pipelines.inputs import output_uri
from pipelines.manifest import SCHEMA

_NO_IMAGE = np.zeros((1, 1, 3), np.uint8)
_NO_LOGITS = np.zeros((1, 1, 1), TRANSPORT_DTYPE)
_NO_LABELS = np.zeros((1, 1), np.uint8)


def describe(error: Exception) -> str:
    """One line for the manifest: the exception's own message (ours name the input) and its type."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    return f"{type(error).__name__}: {message}"


class ReadImages:
    """Read and decode each input; shrink it to ``max_side``. With a ``label_uri`` column, decode labels too."""

    def __init__(self, max_side: int | None = None, num_classes: int | None = None) -> None:
        self.max_side, self.num_classes = max_side, num_classes

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = defaultdict(list)
        labelled = "label_uri" in batch
        for row in range(len(batch["uri"])):
            uri = str(batch["uri"][row])
            image, label, error = _NO_IMAGE, _NO_LABELS, ""
            height = width = 0
            try:
                original = decode_image(read_bytes(uri), uri)
                height, width = original.shape[:2]
                image = resize_image(original, fit_max_side(height, width, self.max_side))
                if labelled:
                    label_uri = str(batch["label_uri"][row])
                    label = decode_mask(read_bytes(label_uri), label_uri)
                    check_mask(label, original.shape, self.num_classes, label_uri)
            except Exception as err:  # noqa: BLE001 - any failure of one input is recorded, never fatal
                image, label, error = _NO_IMAGE, _NO_LABELS, describe(err)
            for key in batch:
                out[key].append(batch[key][row])
            out["image"].append(image)
            out["height"].append(height)
            out["width"].append(width)
            out["error"].append(error)
            if labelled:
                out["label"].append(label)
        return out


class Predictor:
    """Actor: loads the model once, then emits each image's low-resolution logits (float16).

    Images are batched with others of the same stride-padded size, so every image is padded exactly as when it is
    segmented alone (``deeplab_core.inference.segment_image``) and the results are identical.
    """

    def __init__(self, checkpoint: str, scales: tuple[float, ...] = (1.0,), flip: bool = False) -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model, loaded = load_model(checkpoint)
        self.model.to(self.device)
        self.mean, self.std = loaded.config["mean"], loaded.config["std"]
        self.scales, self.flip = tuple(scales), flip
        self.stride = self.model.output_stride

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows = len(batch["uri"])
        errors = [str(e) for e in batch["error"]]  # a list: numpy's fixed-width strings would truncate messages
        logits: list[np.ndarray] = [_NO_LOGITS] * rows
        seconds = [0.0] * rows
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for row in range(rows):
            if not errors[row]:
                height, width = batch["image"][row].shape[:2]
                groups[low_res_size(height, width, self.stride)].append(row)
        for members in groups.values():
            started = time.perf_counter()
            try:
                images = batch_images([batch["image"][r] for r in members], self.stride, self.mean, self.std)
                low = predict_low_res(self.model, images.to(self.device), self.scales, self.flip)
                low = low.cpu().numpy().astype(TRANSPORT_DTYPE)  # rounded as segment_image rounds
            except Exception as err:  # noqa: BLE001 - e.g. out of memory on one huge group
                for r in members:
                    errors[r] = describe(err)
                continue
            share = (time.perf_counter() - started) / len(members)
            for index, r in enumerate(members):
                grid = low_res_size(*batch["image"][r].shape[:2], self.stride)
                logits[r] = np.ascontiguousarray(low[index, :, : grid[0], : grid[1]])
                seconds[r] = share
        return {**{key: list(values) for key, values in batch.items()}, "error": errors, "logits": logits,
                "seconds_model": seconds}


class Refiner:
    """CPU task: labels from the low-resolution logits, by dense CRF (``crf``) or argmax; ``plain_too`` also keeps
    the argmax labels (evaluation scores both from one model pass). The logits column is dropped here."""

    def __init__(self, stride: int, crf: bool, plain_too: bool = False, crf_params: dict | None = None) -> None:
        self.stride, self.crf, self.plain_too, self.crf_params = stride, crf, plain_too, crf_params or {}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out = {key: list(values) for key, values in batch.items() if key != "logits"}
        out["error"] = [str(e) for e in out["error"]]
        out["labels"], out["seconds_crf"] = [], []
        if self.plain_too:
            out["labels_plain"] = []
        for row in range(len(batch["uri"])):
            labels, plain, seconds = _NO_LABELS, _NO_LABELS, 0.0
            if not out["error"][row]:
                image, low = batch["image"][row], batch["logits"][row]
                started = time.perf_counter()
                try:
                    labels = labels_from_low_res(image, low, self.stride, self.crf, **self.crf_params)
                    seconds = time.perf_counter() - started if self.crf else 0.0
                    if self.plain_too:
                        plain = labels if not self.crf else labels_from_low_res(image, low, self.stride, crf=False)
                except Exception as err:  # noqa: BLE001
                    out["error"][row] = describe(err)
            out["labels"].append(labels)
            out["seconds_crf"].append(seconds)
            if self.plain_too:
                out["labels_plain"].append(plain)
        return out


class ManifestWriter:
    """CPU task: write each mask (and overlay) straight to the output filesystem; return the manifest rows."""

    def __init__(self, output: str, num_classes: int, model_digest: str, crf: bool, overlays: bool) -> None:
        self.output, self.num_classes, self.model_digest = output, num_classes, model_digest
        self.crf, self.overlays = crf, overlays

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        rows = []
        for row in range(len(batch["uri"])):
            uri, error = str(batch["uri"][row]), str(batch["error"][row])
            record = {"uri": uri, "status": "error", "error": error or None, "width": None, "height": None,
                      "mask_uri": None, "class_pixels": None, "crf": self.crf, "model": self.model_digest,
                      "seconds_model": float(batch["seconds_model"][row]), "seconds_crf": float(batch["seconds_crf"][row])}
            if not error:
                try:
                    record.update(self._write(batch, row))
                except Exception as err:  # noqa: BLE001 - e.g. no write permission on the output
                    record["error"] = describe(err)
            rows.append(record)
        return pa.Table.from_pylist(rows, schema=SCHEMA)

    def _write(self, batch: dict[str, np.ndarray], row: int) -> dict:
        height, width = int(batch["height"][row]), int(batch["width"][row])
        relative = str(batch["relative"][row])
        labels = batch["labels"][row]
        mask = resize_labels(labels, (height, width))
        mask_uri = output_uri(self.output, "masks", relative)
        write_bytes(mask_uri, encode_palette_png(mask))
        if self.overlays:
            write_bytes(output_uri(self.output, "overlays", relative), encode_png(overlay(batch["image"][row], labels)))
        counts = np.bincount(mask.ravel(), minlength=self.num_classes)[: self.num_classes]
        return {"status": "ok", "width": width, "height": height, "mask_uri": mask_uri,
                "class_pixels": counts.astype(np.int64).tolist()}
