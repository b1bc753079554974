"""URI-agnostic file access through fsspec: local paths, ``file://``, ``s3://`` and any fsspec protocol.

S3 is configured only by the standard AWS environment variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``); they are read on every call,
so a process that changes them sees the change.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Mapping

import fsspec
from fsspec import AbstractFileSystem


# The standard variables that configure S3 access: the single list every process and runtime env passes on.
AWS_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_DEFAULT_REGION", "AWS_REGION")


def s3_variables(environment: Mapping[str, str] | None = None) -> dict[str, str]:
    """The S3 variables set in ``environment`` (this process's by default): what a runtime env or a child process
    is given so that it reaches the same storage."""
    environment = os.environ if environment is None else environment
    return {name: environment[name] for name in AWS_VARIABLES if environment.get(name)}


def s3_options() -> dict:
    """s3fs keyword arguments from the standard AWS environment variables (empty when none are set)."""
    options: dict = {}
    client_kwargs: dict = {}
    if os.environ.get("AWS_ENDPOINT_URL"):
        client_kwargs["endpoint_url"] = os.environ["AWS_ENDPOINT_URL"]
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    if region:
        client_kwargs["region_name"] = region
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    # Passed explicitly so that fsspec's instance cache is keyed on them: new credentials, new client.
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        options["key"] = os.environ["AWS_ACCESS_KEY_ID"]
        options["secret"] = os.environ["AWS_SECRET_ACCESS_KEY"]
        if os.environ.get("AWS_SESSION_TOKEN"):
            options["token"] = os.environ["AWS_SESSION_TOKEN"]
    return options


def protocol_of(uri: str) -> str:
    return uri.split("://", 1)[0] if "://" in uri else "file"


def filesystem(uri: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem serving ``uri`` and the path of ``uri`` inside it."""
    options = s3_options() if protocol_of(uri) in ("s3", "s3a") else {}
    return fsspec.core.url_to_fs(uri, **options)


def normalize_uri(uri: str) -> str:
    """A root as a user typed it, in canonical form: a local path made absolute with its ``..``, ``.`` and repeated
    slashes resolved (``../photos``, ``a//b``, ``a/./b``); an object-store URI with empty and ``.`` segments dropped.

    Listings then hold clean paths, so that the rule refusing ``..`` in input names guards the names below the root
    and not the way the root was written."""
    if protocol_of(uri) == "file":
        path = os.path.normpath(os.path.abspath(os.path.expanduser(uri.removeprefix("file://"))))
        return "file://" + path if uri.startswith("file://") else path
    scheme, rest = uri.split("://", 1)
    return f"{scheme}://" + "/".join(part for part in rest.split("/") if part not in ("", "."))


def join_uri(base: str, *parts: str) -> str:
    """Join path parts onto a URI with forward slashes, keeping its scheme."""
    if protocol_of(base) == "file" and "://" not in base:
        return os.path.join(base, *parts)
    return posixpath.join(base, *parts)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as f:
        return f.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri``, creating parent folders of local paths."""
    fs, path = filesystem(uri)
    parent = posixpath.dirname(path)
    if parent and protocol_of(uri) == "file":
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(data)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def is_dir(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.isdir(path)


def list_files(uri: str, extensions: Iterable[str] | None = None) -> list[str]:
    """Every file under the folder or prefix ``uri`` (recursively), as sorted URIs in ``uri``'s own style.

    ``extensions`` (such as ``{".jpg", ".png"}``) filters by lower-cased suffix.
    """
    fs, root = filesystem(uri)
    if not fs.exists(root):
        raise FileNotFoundError(f"{uri}: no such folder or prefix")
    wanted = {e.lower() for e in extensions} if extensions is not None else None
    found = []
    for path in fs.find(root):
        if wanted is not None and posixpath.splitext(path)[1].lower() not in wanted:
            continue
        found.append(_in_style_of(uri, fs, path))
    return sorted(found)


def list_relative(uri: str) -> dict[str, str]:
    """``{path relative to uri: file URI}`` of every file under the folder or prefix ``uri`` (recursively), in one
    listing: what matching files by relative path needs, without a per-file ``relative_path``."""
    fs, root = filesystem(uri)
    if not fs.exists(root):
        raise FileNotFoundError(f"{uri}: no such folder or prefix")
    prefix = root.rstrip("/") + "/"
    return {path[len(prefix):]: _in_style_of(uri, fs, path) for path in sorted(fs.find(root))
            if path.startswith(prefix)}


def relative_path(root_uri: str, file_uri: str) -> str:
    """``file_uri``'s path relative to the folder ``root_uri`` (forward slashes)."""
    _, root = filesystem(root_uri)
    _, path = filesystem(file_uri)
    rel = posixpath.relpath(path, root.rstrip("/") or "/")
    if rel.startswith(".."):
        raise ValueError(f"{file_uri} is not under {root_uri}")
    return rel


def _in_style_of(uri: str, fs: AbstractFileSystem, path: str) -> str:
    if "://" not in uri:
        return path
    return fs.unstrip_protocol(path) if protocol_of(uri) != "file" else "file://" + path
