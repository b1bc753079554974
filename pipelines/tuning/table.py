"""The CRF tuning's results table, ``<output>/crf_settings.parquet``: one row per scored setting, so that a re-run
skips what is done and a reader can rank, filter or plot every setting.

Columns: ``round`` ("paper", "coarse", "fine"; "no crf" for the model's own argmax), the ``CRFParams`` fields a
parameter file holds (iterations, bilateral_weight = w1, bilateral_xy_std = theta_alpha, bilateral_rgb_std =
theta_beta, gaussian_weight = w2, gaussian_xy_std = theta_gamma), ``method`` and ``prune_ratio`` (how the CRF was
computed), ``miou``, ``pixel_accuracy``, ``images`` (how many were scored), ``confusion`` (the summed classes x classes
counts, flattened), ``model`` (the checkpoint's digest) and ``inputs`` (a digest of the images and of everything that
shaped their logits), then one ``iou/<class name>`` column per class; the schema's metadata lists the class names.
A table is about one model on one set of inputs: ``TuningTable.load`` refuses another's.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from deeplab_core.crf_params import CRFParams
from deeplab_core.crf_file import FILE_FIELDS
from deeplab_core.io import exists, join_uri, read_bytes, write_bytes
from deeplab_core.metrics import ConfusionMatrix

TABLE_FILE = "crf_settings.parquet"
NO_CRF = "no crf"
SCHEMA = pa.schema([
    ("round", pa.string()), ("iterations", pa.int32()),
    *[(name, pa.float64()) for name in FILE_FIELDS if name != "iterations"],
    ("method", pa.string()), ("prune_ratio", pa.float64()),
    ("miou", pa.float64()), ("pixel_accuracy", pa.float64()), ("images", pa.int32()),
    ("confusion", pa.list_(pa.int64())), ("model", pa.string()), ("inputs", pa.string()),
])


def inputs_digest(**facts) -> str:
    """A short digest of what determines the logits being scored (data, split, image ids, inference settings)."""
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def setting_key(params: CRFParams | None) -> tuple:
    """What identifies a setting in the table (None: the model's own argmax)."""
    if params is None:
        return (NO_CRF,)
    return (*(round(float(getattr(params, name)), 9) for name in FILE_FIELDS), params.method,
            round(params.prune_ratio, 9))


def _params_of(row: dict) -> CRFParams | None:
    if row["round"] == NO_CRF:
        return None
    values = {name: row[name] for name in FILE_FIELDS}
    return replace(CRFParams(), **values, method=row["method"], prune_ratio=row["prune_ratio"])


class TuningTable:
    """Every scored setting of one model on one set of inputs, by ``setting_key``."""

    def __init__(self, uri: str, model: str, inputs: str, class_names: Sequence[str]) -> None:
        self.uri, self.model, self.inputs = uri, model, inputs
        self.class_names, self.num_classes = tuple(class_names), len(class_names)
        self.rows: dict[tuple, dict] = {}

    @classmethod
    def load(cls, output: str, model: str, inputs: str, class_names: Sequence[str]) -> TuningTable:
        """The table under ``output`` (empty if there is none); ``ValueError`` if it holds another tuning."""
        table = cls(join_uri(output, TABLE_FILE), model, inputs, class_names)
        if exists(table.uri):
            for row in pq.read_table(io.BytesIO(read_bytes(table.uri))).to_pylist():
                if (row["model"], row["inputs"]) != (model, inputs):
                    other = (f"of another model ({row['model']})" if row["model"] != model
                             else "on other images or inference settings")
                    raise ValueError(f"{table.uri} holds a tuning {other}; give a new --output (or remove that "
                                     "file) to tune this one")
                table.rows[setting_key(_params_of(row))] = row
        return table

    def __contains__(self, params: CRFParams | None) -> bool:
        return setting_key(params) in self.rows

    def score(self, params: CRFParams | None) -> ConfusionMatrix:
        counts = np.asarray(self.rows[setting_key(params)]["confusion"], np.int64)
        return ConfusionMatrix(self.num_classes, counts.reshape(self.num_classes, self.num_classes))

    def add(self, round_name: str, params: CRFParams | None, matrix: ConfusionMatrix, images: int) -> None:
        values = {name: None for name in FILE_FIELDS} | {"method": None, "prune_ratio": None}
        if params is not None:
            values = {name: getattr(params, name) for name in FILE_FIELDS} | {
                "method": params.method, "prune_ratio": params.prune_ratio}
        self.rows[setting_key(params)] = {
            "round": round_name, **values, "miou": matrix.miou(), "pixel_accuracy": matrix.pixel_accuracy(),
            "images": images, "confusion": matrix.counts.ravel().tolist(), "model": self.model,
            "inputs": self.inputs}

    def save(self) -> None:
        per_class = [f"iou/{name}" for name in self.class_names]
        schema = pa.schema([*SCHEMA, *[(column, pa.float64()) for column in per_class]],
                           metadata={b"deeplab.class_names": json.dumps(list(self.class_names)).encode()})
        rows = []
        for key, row in self.rows.items():
            ious = self.score(_params_of(row)).per_class_iou()
            rows.append({**row, **{column: float(iou) for column, iou in zip(per_class, ious)}})
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer)
        write_bytes(self.uri, buffer.getvalue())
