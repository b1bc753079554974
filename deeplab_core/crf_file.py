"""The CRF parameter file, ``crf_params.yaml``: the dense CRF's weights and kernel widths by name.

``pipelines.tune_crf`` writes it; ``--crf-params`` (segment, evaluate) reads it from any URI. The keys are
``CRFParams``' field names; the paper's symbols (w1, theta_alpha, theta_beta, w2, theta_gamma) are accepted too, for
a file written by hand. A ``tuned`` section records where the values came from and is not read back.

    iterations: 10
    bilateral_weight: 5.0       # w1
    bilateral_xy_std: 50.0      # theta_alpha
    bilateral_rgb_std: 4.0      # theta_beta
    gaussian_weight: 3.0        # w2
    gaussian_xy_std: 1.0        # theta_gamma
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import yaml

from deeplab_core.crf_params import PAPER_PARAMS, CRFParams
from deeplab_core.io import read_bytes

CRF_PARAMS_FILE = "crf_params.yaml"
# The paper's symbol for each parameter a file may set (Chen et al., eq. 3).
PAPER_SYMBOLS = {"bilateral_weight": "w1", "bilateral_xy_std": "theta_alpha", "bilateral_rgb_std": "theta_beta",
                 "gaussian_weight": "w2", "gaussian_xy_std": "theta_gamma"}
FILE_FIELDS = ("iterations", *PAPER_SYMBOLS)
NOTES_KEY = "tuned"


def _crf_params_from_dict(values: dict[str, Any], source: str, base: CRFParams = PAPER_PARAMS) -> CRFParams:
    """``base`` with the parameters ``values`` names (field names or the paper's symbols); ``source`` names the
    input in errors."""
    by_symbol = {symbol: name for name, symbol in PAPER_SYMBOLS.items()}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key == NOTES_KEY:
            continue
        name = by_symbol.get(key, key)
        if name not in FILE_FIELDS:
            raise ValueError(f"{source}: unknown CRF parameter {key!r}; expected some of "
                             f"{', '.join(FILE_FIELDS)} (or {', '.join(PAPER_SYMBOLS.values())})")
        if name in changes:
            raise ValueError(f"{source}: {key!r} sets {name} a second time")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{source}: {key} must be a number, got {value!r}")
        if name == "iterations" and value != int(value):
            raise ValueError(f"{source}: iterations must be a whole number, got {value!r}")
        changes[name] = int(value) if name == "iterations" else float(value)
    try:
        return replace(base, **changes)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def load_crf_params(uri: str, base: CRFParams = PAPER_PARAMS) -> CRFParams:
    """The ``CRFParams`` a parameter file at ``uri`` (local or any fsspec URI) describes, over ``base``."""
    try:
        values = yaml.safe_load(read_bytes(uri))
    except yaml.YAMLError as err:
        raise ValueError(f"{uri} is not a YAML file: {str(err).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{uri} must hold a mapping of CRF parameters by name (e.g. bilateral_weight: 4.0), "
                         f"got {type(values).__name__}")
    return _crf_params_from_dict(values, uri, base)


def dump_crf_params(params: CRFParams, notes: dict[str, Any] | None = None) -> bytes:
    """The file's bytes: every parameter ``FILE_FIELDS`` names, with its paper symbol, then ``notes``."""
    lines = ["# Dense CRF parameters (deeplab-ray; --crf-params FILE). Keys: deeplab_core.crf.CRFParams' fields."]
    for name in FILE_FIELDS:
        symbol = PAPER_SYMBOLS.get(name)
        lines.append(f"{name}: {getattr(params, name)!r}" + (f"  # {symbol}" if symbol else ""))
    text = "\n".join(lines) + "\n"
    if notes:
        text += yaml.safe_dump({NOTES_KEY: notes}, sort_keys=False)
    return text.encode()

