"""What a segmentation job reads, and where each input's outputs go.

Every input gets an output name: the path of its mask (and overlay) under ``<output>/masks/`` (``overlays/``).
The rules, also stated in the README:

- The name is the input's path relative to the input root, extension replaced by ``.png``: ``a/b.jpg`` ->
  ``a/b.png``. The root is the ``--input`` folder or prefix; for a list of URIs it is the longest common folder of
  the listed URIs.
- Inputs whose names would coincide (``a.jpg`` and ``a.png``) keep their extension instead: ``a.jpg.png`` and
  ``a.png.png``. A name that a previous run's manifest already gave another input is never reused either.
- An input whose path could steer a write outside the output (``..`` or ``.`` segments, empty segments,
  backslashes, control characters) gets no name: it gets an error row, and the rest of the job goes on.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Iterable

import pyarrow.parquet as pq

from deeplab_core.io import filesystem, is_dir, join_uri, list_files, protocol_of, read_text, relative_path

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
LIST_EXTENSIONS = (".txt", ".parquet")
OUTPUT_SUFFIX = ".png"


class InputError(ValueError):
    """The --input cannot be listed; the message names it."""


class UnsafeNameError(ValueError):
    """An input's path cannot be turned into an output name that stays under the output."""


def list_inputs(input_uri: str, exclude: str | None = None) -> list[dict[str, str]]:
    """``[{"uri", "relative", "error"}]`` for every image under a folder/prefix (recursively, common image
    extensions), or for every URI in a text file (one per line) or a Parquet file (column ``uri``).

    ``exclude``: a folder whose files are never inputs: the run's own output, when it lies inside the input folder
    (a re-run would otherwise segment the previous run's masks). Give both in ``normalize_uri``'s form.

    ``relative`` is the input's path under the input root (see the module's rules); ``error`` is "" or why the
    input cannot be segmented safely (``relative`` is then "").
    """
    if input_uri.endswith(LIST_EXTENSIONS) and not is_dir(input_uri):
        uris = list(dict.fromkeys(_read_uri_list(input_uri)))
        root = common_root(uris)
        return [_item(uri, lambda u: "/".join(_key(u)[len(root):])) for uri in uris]
    try:
        uris = list_files(input_uri, IMAGE_EXTENSIONS)
    except FileNotFoundError:
        raise InputError(f"--input {input_uri}: no such folder, prefix or list file") from None
    if exclude:
        uris = [uri for uri in uris if not uri.startswith(exclude.rstrip("/") + "/")]
    return [_item(uri, lambda u: relative_path(input_uri, u)) for uri in uris]


def _item(uri: str, relative_of) -> dict[str, str]:
    try:
        check_safe_path(_path_of(uri), uri)
        relative = relative_of(uri)  # only for safe paths: relative_path normalises ".." away
        check_safe_path(relative, uri)
    except (UnsafeNameError, ValueError) as err:
        return {"uri": uri, "relative": "", "error": f"UnsafeNameError: {err}"}
    return {"uri": uri, "relative": relative, "error": ""}


def check_safe_path(path: str, uri: str) -> None:
    """Refuse a path whose segments could leave the folder it is joined to (for local paths and S3 keys alike)."""
    if any(ord(char) < 32 for char in path) or "\\" in path:
        raise UnsafeNameError(f"{uri}: the name holds a backslash or a control character; refusing to derive an "
                              "output name from it")
    inner = path.lstrip("/")
    if not inner:
        raise UnsafeNameError(f"{uri}: empty name")
    bad = [part for part in inner.split("/") if part in ("", ".", "..")]
    if bad:
        segment = "an empty" if bad[0] == "" else repr(bad[0])
        raise UnsafeNameError(f"{uri}: the path holds {segment} segment, which could steer a write outside the "
                              "output; rename the input or list it without it")


def _path_of(uri: str) -> str:
    """The path part of a URI (bucket included for object stores), without its scheme."""
    return uri.split("://", 1)[1] if "://" in uri else uri


def _key(uri: str) -> list[str]:
    """The scheme, then the path segments: ``s3://b/x.jpg`` -> ``["s3", "b", "x.jpg"]``."""
    return [protocol_of(uri), *_path_of(uri).lstrip("/").split("/")]


def common_root(uris: Iterable[str]) -> list[str]:
    """The longest common folder (as ``_key`` segments) of the URIs that are safe to name."""
    folders = []
    for uri in uris:
        try:
            check_safe_path(_path_of(uri), uri)
        except UnsafeNameError:
            continue
        folders.append(_key(uri)[:-1])
    if not folders:
        return []
    prefix = folders[0]
    for folder in folders[1:]:
        length = 0
        while length < min(len(prefix), len(folder)) and prefix[length] == folder[length]:
            length += 1
        prefix = prefix[:length]
    return prefix


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


def assign_output_names(items: list[dict[str, str]], taken: dict[str, str] | None = None) -> list[dict[str, str]]:
    """Give every safe item a unique ``name`` (its mask's path under ``masks/``), following the module's rules.

    ``taken`` maps names already used by earlier runs to the input that holds them; they are never given to
    another input. Items whose every candidate name is taken get an error instead.
    """
    taken = dict(taken or {})
    named = [dict(item, name="") for item in items]
    candidates: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(named):
        if not item["error"]:
            candidates[posixpath.splitext(item["relative"])[0] + OUTPUT_SUFFIX].append(index)
    wanted: dict[int, str] = {}
    for name, members in candidates.items():
        for index in members:
            wanted[index] = name if len(members) == 1 else named[index]["relative"] + OUTPUT_SUFFIX
    owners: dict[str, list[int]] = defaultdict(list)
    for index, name in wanted.items():
        owners[name].append(index)
    for name, members in owners.items():
        for index in members:
            item = named[index]
            holder = taken.get(name)
            if len(members) == 1 and (holder is None or holder == item["uri"]):
                item["name"] = name
                continue
            clash = holder if holder not in (None, item["uri"]) else next(
                named[other]["uri"] for other in members if other != index)
            item["error"] = (f"NameCollisionError: {item['uri']}: its output name {name} is also the output name of "
                             f"{clash}; rename one of them")
    return named


def output_uri(output: str, kind: str, name: str) -> str:
    """``<output>/<kind>/<name>``; refuses a name that could leave ``<output>/<kind>``."""
    check_safe_path(name, name)
    return join_uri(output, kind, name)
