"""Finding the compiled dense-CRF extension, ``deeplab_core._meanfield`` (built from ``_meanfield.cpp`` on install)."""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.metadata
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote, urlparse


@functools.cache
def load_meanfield() -> ModuleType:
    """``deeplab_core._meanfield``, from this package or else from the installed deeplab-ray.

    A ``ray job submit --working-dir .`` copy of the sources shadows the installed package but carries no build
    outputs (Ray skips git-ignored files): then the installed package's build is loaded.
    """
    try:
        from deeplab_core import _meanfield

        return _meanfield
    except ImportError:
        pass
    for library in installed_meanfield_builds():
        spec = importlib.util.spec_from_file_location("deeplab_core._meanfield", library)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    raise ImportError(
        "deeplab_core._meanfield (the dense-CRF extension) is not built: install the project with "
        "`pip install -c constraints.txt -e .` (it compiles deeplab_core/_meanfield.cpp; needs g++), or use "
        "the exact CRF (method=\"exact\" / --crf-method exact)"
    )


def installed_meanfield_builds() -> list[Path]:
    """The extension files of the installed deeplab-ray distribution (editable or not)."""
    try:
        distribution = importlib.metadata.distribution("deeplab-ray")
    except importlib.metadata.PackageNotFoundError:
        return []
    roots = [Path(distribution.locate_file("")).resolve()]
    direct_url = json.loads(distribution.read_text("direct_url.json") or "{}")
    if direct_url.get("dir_info", {}).get("editable"):
        roots.append(Path(unquote(urlparse(direct_url["url"]).path)))
    candidates = [root / "deeplab_core" / f"_meanfield{suffix}"
                  for root in roots for suffix in importlib.machinery.EXTENSION_SUFFIXES]
    return [candidate for candidate in candidates if candidate.is_file()]
