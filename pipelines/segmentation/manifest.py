"""The segmentation manifest: one Parquet row per input image (its columns are a contract: SCHEMA, in the README).

Each run writes its rows under ``<output>/manifest/run-<time>/``; ``compact`` then rewrites the folder as one
``manifest-<time>.parquet`` in which every input appears exactly once (a newer row supersedes an older one for the
same URI, and an ok row is never replaced). A run that crashed leaves its finished files behind: their inputs count
as done on the next run.
"""

from __future__ import annotations

import io
import json
import posixpath
import time
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from deeplab_core.io import filesystem, join_uri, write_bytes
from pipelines.segmentation import columns

MANIFEST_DIR = "manifest"
SCHEMA = pa.schema([
    (columns.URI, pa.string()),
    (columns.STATUS, pa.string()),
    ("error", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("mask_uri", pa.string()),
    ("class_pixels", pa.list_(pa.int64())),
    ("crf", pa.bool_()),
    ("model", pa.string()),
    ("seconds_model", pa.float64()),
    ("seconds_crf", pa.float64()),
    ("precision", pa.string()),  # the model's arithmetic: fp32, bf16 or fp16
    ("crf_labels", pa.int32()),  # how many labels the image's CRF ran over (its cost); null without the CRF
    ("overlay_uri", pa.string()),  # with --overlay
    # with --output-format rle|both: per class present, COCO's compressed run-length encoding of its pixels
    ("rle", pa.list_(pa.struct([("class_id", pa.int32()), ("counts", pa.string())]))),
])


def empty_record(uri: str, **values) -> dict:
    """A manifest row of ``uri`` with every column of ``SCHEMA`` null but ``values`` (which must be columns)."""
    unknown = set(values) - set(SCHEMA.names)
    if unknown:
        raise KeyError(f"not manifest columns: {sorted(unknown)}")
    return {**dict.fromkeys(SCHEMA.names), columns.URI: uri, **values}


# The schema's metadata names the model's classes, so that a manifest read alone says what class_pixels[i] counts.
CLASS_NAMES_KEY, CLASS_COLOURS_KEY = b"deeplab.class_names", b"deeplab.class_colours"


def manifest_schema(spec) -> pa.Schema:
    """``SCHEMA`` with the classes of ``spec`` (a ``ModelSpec``) in its metadata (JSON lists)."""
    return SCHEMA.with_metadata({CLASS_NAMES_KEY: json.dumps(list(spec.class_names)).encode(),
                                 CLASS_COLOURS_KEY: json.dumps([list(c) for c in spec.class_colours]).encode()})


def manifest_classes(schema: pa.Schema) -> list[str] | None:
    """The class names a manifest's schema records (None for manifests written before they did)."""
    metadata = schema.metadata or {}
    return json.loads(metadata[CLASS_NAMES_KEY]) if CLASS_NAMES_KEY in metadata else None


def manifest_folder(output: str) -> str:
    return join_uri(output, MANIFEST_DIR)


def run_folder(output: str) -> str:
    """Where one run writes its rows; the name sorts by start time, after the compacted file."""
    return join_uri(output, MANIFEST_DIR, f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")


def _files(output: str) -> tuple:
    fs, folder = filesystem(manifest_folder(output))
    if not fs.exists(folder):
        return fs, []
    return fs, sorted(p for p in fs.find(folder) if p.endswith(".parquet"))


def read_manifest(output: str) -> pa.Table:
    """Every row of every manifest file (possibly with superseded duplicates before ``compact``)."""
    fs, paths = _files(output)
    tables = []
    for path in paths:
        with fs.open(path, "rb") as f:
            tables.append(_conform(pq.read_table(f)))
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


def _conform(table: pa.Table) -> pa.Table:
    """The table in today's schema; columns added since it was written are null."""
    for field in SCHEMA:
        if field.name not in table.column_names:
            table = table.append_column(field.name, pa.nulls(table.num_rows, field.type))
    return table.select(SCHEMA.names).cast(SCHEMA)


def completed(output: str) -> dict[str, str]:
    """``{input uri: mask uri}`` of the inputs already segmented into ``output``."""
    table = read_manifest(output)
    done = table.filter(pc.equal(table.column(columns.STATUS), "ok"))
    return dict(zip(done.column(columns.URI).to_pylist(), done.column("mask_uri").to_pylist()))


def _has_metadata(fs, paths: list[str], schema: pa.Schema) -> bool:
    if not schema.metadata or not paths:
        return True
    with fs.open(paths[0], "rb") as f:
        written = pq.read_schema(f).metadata or {}
    return all(written.get(key) == value for key, value in schema.metadata.items())


def record_errors(output: str, errors: dict[str, str], crf: bool, model: str) -> None:
    """Error rows for inputs that no stage reported (their worker died): written as one more run file."""
    if not errors:
        return
    rows = [empty_record(uri, status="error", error=message, crf=crf, model=model, seconds_model=0.0,
                         seconds_crf=0.0) for uri, message in errors.items()]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), buffer)
    write_bytes(join_uri(run_folder(output), "unreported.parquet"), buffer.getvalue())


def compact(output: str, schema: pa.Schema = SCHEMA) -> pa.Table:
    """Rewrite the manifest folder as one file with exactly one row per input URI; returns that table. ``schema``
    (``manifest_schema``'s) gives the file's metadata: the classes of the model that wrote it.

    Files are read in path order (runs are named by start time), so a later row for a URI wins, except that an ok
    row is never replaced by an error. The new file is written before the old ones are deleted: a crash in between
    leaves duplicates that the next ``compact`` removes, never a lost row.
    """
    fs, paths = _files(output)
    table = read_manifest(output).replace_schema_metadata(schema.metadata)
    chosen: dict[str, int] = {}
    statuses = table.column(columns.STATUS).to_pylist()
    for index, uri in enumerate(table.column(columns.URI).to_pylist()):
        previous = chosen.get(uri)
        if previous is None or not (statuses[previous] == "ok" and statuses[index] != "ok"):
            chosen[uri] = index
    compacted = table.take(sorted(chosen.values())) if len(chosen) != table.num_rows else table
    if len(paths) > 1 or len(chosen) != table.num_rows or not _has_metadata(fs, paths, schema):
        _, folder = filesystem(manifest_folder(output))
        name = posixpath.join(folder, f"manifest-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet")
        with fs.open(name, "wb") as f:
            pq.write_table(compacted, f)
        for path in paths:
            fs.rm(path)
        for run in {posixpath.dirname(path) for path in paths} - {folder}:
            if fs.exists(run):  # local run folders outlive their files; object stores have no folders
                fs.rm(run, recursive=True)
    return compacted
