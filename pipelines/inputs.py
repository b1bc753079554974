"""What a segmentation job reads: the input listing, and where each input's outputs go."""

from __future__ import annotations

import posixpath

import pyarrow.parquet as pq

from deeplab_core.io import filesystem, is_dir, join_uri, list_files, protocol_of, read_text, relative_path

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
LIST_EXTENSIONS = (".txt", ".parquet")


class InputError(ValueError):
    """The --input cannot be listed; the message names it."""


def list_inputs(input_uri: str) -> list[dict[str, str]]:
    """``[{"uri": ..., "relative": ...}]`` for every image under a folder/prefix (recursively, common image
    extensions), or for every URI in a text file (one per line) or a Parquet file (column ``uri``).

    ``relative`` is the input's path under the folder, or for listed URIs the URI without its scheme, so two inputs
    never share an output path.
    """
    if input_uri.endswith(LIST_EXTENSIONS) and not is_dir(input_uri):
        uris = _read_uri_list(input_uri)
        return [{"uri": uri, "relative": _without_scheme(uri)} for uri in dict.fromkeys(uris)]
    try:
        uris = list_files(input_uri, IMAGE_EXTENSIONS)
    except FileNotFoundError:
        raise InputError(f"--input {input_uri}: no such folder, prefix or list file") from None
    return [{"uri": uri, "relative": relative_path(input_uri, uri)} for uri in uris]


def _read_uri_list(uri: str) -> list[str]:
    try:
        if uri.endswith(".parquet"):
            fs, path = filesystem(uri)
            with fs.open(path, "rb") as f:
                table = pq.read_table(f, columns=["uri"])
            return [u for u in table.column("uri").to_pylist() if u]
        return [line.strip() for line in read_text(uri).splitlines() if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        raise InputError(f"--input {uri}: no such list file") from None
    except KeyError:
        raise InputError(f"--input {uri}: a Parquet list needs a 'uri' column") from None


def _without_scheme(uri: str) -> str:
    path = uri.split("://", 1)[1] if "://" in uri else uri
    return path.lstrip("/")


def output_uri(output: str, kind: str, relative: str) -> str:
    """``<output>/<kind>/<relative with its extension replaced by .png>``."""
    return join_uri(output, kind, posixpath.splitext(relative)[0] + ".png")


def is_remote(uri: str) -> bool:
    return protocol_of(uri) != "file"
