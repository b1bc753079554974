"""Command-line options shared by the drivers: how the model and the CRF run, and checked number types.

Each default is written once, here or in ``deeplab_core``, and the help text shows it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import Field, fields, replace
from typing import Any

from deeplab_core.crf_params import PAPER_PARAMS, CRFParams
from deeplab_core.crf_file import load_crf_params
from deeplab_core.inference_settings import InferenceSettings
from deeplab_core.io import normalize_uri
from pipelines.common.ranges import count_range
from pipelines.segmentation.model_pool import ModelResources


def _checked_number(convert: type, accept, requirement: str):
    """An argparse ``type`` converting with ``convert`` and refusing values ``accept`` rejects."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            kind = "a whole number" if convert is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {value}")
        return value
    return parse


positive_int = _checked_number(int, lambda value: value >= 1, "at least 1")
positive_float = _checked_number(float, lambda value: value > 0, "greater than 0")
unit_fraction = _checked_number(float, lambda value: 0 < value <= 1, "greater than 0 and at most 1")
fraction = _checked_number(float, lambda value: 0 <= value < 1, "at least 0 and below 1")


def add_dataset_options(parser: argparse.ArgumentParser, split_help: str) -> None:
    """``--data``'s companions for the drivers that score a labelled split: the split, the layout and the options
    of particular layouts."""
    from deeplab_core.data import LAYOUT_NAMES, MASK_DIR

    parser.add_argument("--split", default="val", help=split_help)
    parser.add_argument("--layout", choices=LAYOUT_NAMES, default=None,
                        help="the dataset's layout (default: detected from its folders)")
    parser.add_argument("--val-fraction", type=fraction, default=0.0,
                        help="for layouts without split files (pairs, labelme): the share held out as val, as "
                             "pipelines.train --val-fraction chose it")
    parser.add_argument("--mask-folder", default=MASK_DIR,
                        help="VOC: the masks' folder under --data (SegmentationClassAug for VOC + SBD)")


def parse_scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not scales or any(scale <= 0 for scale in scales):
        raise argparse.ArgumentTypeError(f"scales must be positive, got {text!r}")
    return scales


# How a flag's text becomes each field's value (a field not named here: a string; a bool field: a switch).
FIELD_TYPES: dict[str, Callable[[str], Any]] = {
    "scales": parse_scales, "batch_size": positive_int, "max_side": positive_int, "max_pixels": positive_int,
    "model_actors": count_range, "gpus_per_actor": positive_float, "cpus_per_actor": positive_float,
    "crf_cpus": positive_float, "iterations": positive_int, "prune_ratio": unit_fraction,
}


def flag(name: str) -> str:
    """A field's flag: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def add_field_options(parser: argparse.ArgumentParser, specs: Iterable[Field], convert: Mapping[str, Callable],
                      default: Callable[[Field], Any] | None = None,
                      help_text: Callable[[Field], str] | None = None, prefix: str = "") -> None:
    """One flag per dataclass field: its name (after ``prefix``), ``convert[name]`` as the type (else text), the
    ``choices`` in its metadata, a bool field as a switch. ``default``: the flag's default for a field (the field's
    own, tuples written as comma-separated text, unless given); ``help_text``: its help (the metadata's ``help``
    unless given)."""
    for spec in specs:
        value = default(spec) if default else flag_text(spec.default)
        text = help_text(spec) if help_text else spec.metadata["help"]
        if spec.default is False:
            parser.add_argument(flag(prefix + spec.name), action="store_true", default=value, help=text)
        else:
            parser.add_argument(flag(prefix + spec.name), type=convert.get(spec.name, str),
                                choices=spec.metadata.get("choices"), default=value, help=text)


def flag_text(value: Any) -> Any:
    """A default as a flag would take it: tuples as comma-separated text."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else value


def _flag_fields(cls: type) -> list[Field]:
    """The fields of ``cls`` that are flags: those with help text."""
    return [spec for spec in fields(cls) if "help" in spec.metadata]


# The CRF's fields that are flags (--crf-<name>): how it runs; its weights and widths come from --crf-params.
CRF_FLAG_FIELDS = [spec for spec in fields(CRFParams) if "help" in spec.metadata]


def add_model_options(parser: argparse.ArgumentParser, crf_default: bool | None) -> None:
    """Options shared by segment, evaluate and tune_crf: one per ``InferenceSettings`` and ``ModelResources`` field
    (``add_field_options``), and the CRF's. ``--crf/--no-crf``: whether the dense CRF runs (``crf_default``: on by
    default for segment, off for evaluate; None: no such switch, the CRF always runs)."""
    if crf_default is not None:
        parser.add_argument("--crf", action=argparse.BooleanOptionalAction, default=crf_default,
                            help="refine with the dense CRF (" + ("on by default; --no-crf: masks are the model's "
                                                                "argmax)" if crf_default else
                                                                "--crf: also score the CRF's labels)"))
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint file, a training --output folder, or a Ray Train checkpoint folder")
    add_field_options(parser, _flag_fields(InferenceSettings) + _flag_fields(ModelResources), FIELD_TYPES)
    parser.add_argument("--crf-params", type=crf_params_file, default=None, metavar="FILE",
                        help="the CRF's weights and kernel widths from a crf_params.yaml (local or s3://), as "
                             "pipelines.tune_crf writes it; default: the paper's")
    add_field_options(parser, CRF_FLAG_FIELDS, FIELD_TYPES, default=lambda spec: None, prefix="crf_",
                      help_text=lambda spec: f"{spec.metadata['help']} (default: the --crf-params file's, else "
                                             f"{flag_text(spec.default)})")
    parser.add_argument("--crf-exact", action="store_true", help="the same as --crf-method exact")


def crf_params_file(uri: str) -> CRFParams:
    """An argparse ``type``: the ``CRFParams`` of the parameter file at ``uri`` (refused with the reason)."""
    uri = normalize_uri(uri)
    try:
        return load_crf_params(uri)
    except FileNotFoundError:
        raise argparse.ArgumentTypeError(f"no such file: {uri}") from None
    except (ValueError, OSError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def inference_settings(args: argparse.Namespace, parser: argparse.ArgumentParser) -> InferenceSettings:
    """The ``InferenceSettings`` the model options describe (the CRF's: the --crf-params file's, else the paper's;
    a parser without ``--crf`` always runs the CRF). CRF options with the CRF off are refused through ``parser``."""
    given = {spec.name: getattr(args, "crf_" + spec.name) for spec in CRF_FLAG_FIELDS
             if getattr(args, "crf_" + spec.name) is not None}
    if args.crf_exact:
        if given.get("method", "exact") != "exact":
            parser.error(f"--crf-exact means --crf-method exact; it contradicts --crf-method {given['method']}")
        given["method"] = "exact"
    if not getattr(args, "crf", True):
        named = [flag("crf_" + name) for name in given if not (name == "method" and args.crf_exact)]
        named += ["--crf-exact"] * args.crf_exact + ["--crf-params"] * (args.crf_params is not None)
        if named:
            parser.error(f"{', '.join(named)} set{'s' if len(named) == 1 else ''} the CRF, but the CRF is off: add "
                         "--crf (evaluate) or drop --no-crf (segment)")
        crf = None
    else:
        base = args.crf_params or PAPER_PARAMS
        if "prune_ratio" in given and given.get("method", base.method) != "pruned":
            parser.error(f"--crf-prune-ratio applies to --crf-method pruned; it contradicts --crf-method "
                         f"{given.get('method', base.method)}")
        crf = replace(base, **given)
    values = {spec.name: getattr(args, spec.name) for spec in _flag_fields(InferenceSettings)}
    return InferenceSettings(**values, crf=crf)


def model_resources(args: argparse.Namespace) -> ModelResources:
    return ModelResources(**{spec.name: getattr(args, spec.name) for spec in _flag_fields(ModelResources)})


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where there is none to show (required options, switches that are off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or action.required:
            return action.help or ""
        return super()._get_help_string(action)
