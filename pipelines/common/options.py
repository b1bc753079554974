"""Command-line options shared by the drivers: how the model and the CRF run, and checked number types.

Each default is written once, here or in ``deeplab_core``, and the help text shows it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any

from deeplab_core.crf import PAPER_PARAMS, CRFParams
from deeplab_core.crf_file import load_crf_params
from deeplab_core.inference_settings import InferenceSettings
from deeplab_core.io import normalize_uri


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


@dataclass(frozen=True)
class ModelResources:
    """What the model and CRF stages ask of the cluster. Each field is a flag of segment, evaluate and tune_crf."""

    model_actors: int | None = field(default=None, metadata={
        "help": "model replicas (actors); default: one per GPU of the cluster, or 1 without GPUs"})
    gpus_per_actor: float = field(default=1.0, metadata={"help": "GPUs per model actor when the cluster has GPUs"})
    cpus_per_actor: float = field(default=1.0, metadata={"help": "CPUs per model actor"})
    crf_cpus: float = field(default=1.0, metadata={"help": "CPUs per CRF task"})


# How a flag's text becomes each field's value (a field not named here: a string; a bool field: a switch).
FIELD_TYPES: dict[str, Callable[[str], Any]] = {
    "scales": parse_scales, "batch_size": positive_int, "max_side": positive_int, "max_pixels": positive_int,
    "model_actors": positive_int, "gpus_per_actor": positive_float, "cpus_per_actor": positive_float,
    "crf_cpus": positive_float,
}


def flag(name: str) -> str:
    """A field's flag: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def add_field_options(parser: argparse.ArgumentParser, specs: Iterable[Field], convert: Mapping[str, Callable],
                      default: Callable[[Field], Any] | None = None,
                      help_text: Callable[[Field], str] | None = None) -> None:
    """One flag per dataclass field: its name, ``convert[name]`` as the type (else text), the ``choices`` in its
    metadata, a bool field as a switch. ``default``: the flag's default for a field (the field's own, tuples written
    as comma-separated text, unless given); ``help_text``: its help (the metadata's ``help`` unless given)."""
    for spec in specs:
        value = default(spec) if default else flag_text(spec.default)
        text = help_text(spec) if help_text else spec.metadata["help"]
        if spec.default is False:
            parser.add_argument(flag(spec.name), action="store_true", default=value, help=text)
        else:
            parser.add_argument(flag(spec.name), type=convert.get(spec.name, str), choices=spec.metadata.get("choices"),
                                default=value, help=text)


def flag_text(value: Any) -> Any:
    """A default as a flag would take it: tuples as comma-separated text."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else value


def _flag_fields(cls: type) -> list[Field]:
    """The fields of ``cls`` that are flags: those with help text."""
    return [spec for spec in fields(cls) if "help" in spec.metadata]


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
    parser.add_argument("--crf-iterations", type=positive_int, default=None,
                        help="mean-field iterations (default: the --crf-params file's, else "
                             f"{PAPER_PARAMS.iterations})")
    parser.add_argument("--crf-prune-ratio", type=unit_fraction, default=PAPER_PARAMS.prune_ratio,
                        help="label pruning: the CRF runs over the labels whose marginal, in a screening mean field "
                             "on 8-pixel cells, comes within this factor of a cell's winner (smaller keeps more "
                             "labels); --crf-exact runs every label; see docs/crf.md")
    parser.add_argument("--crf-exact", action="store_true",
                        help="the reference CRF: pydensecrf over all labels, no pruning (~5x slower)")


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
    crf = None
    if not getattr(args, "crf", True) and args.crf_params is not None:
        parser.error("--crf-params sets the CRF's parameters, but the CRF is off: add --crf (evaluate) or drop "
                     "--no-crf (segment)")
    if getattr(args, "crf", True):
        base = args.crf_params or PAPER_PARAMS
        method = {"method": "exact"} if args.crf_exact else {"prune_ratio": args.crf_prune_ratio}
        crf = replace(base, iterations=args.crf_iterations or base.iterations, **method)
    values = {spec.name: getattr(args, spec.name) for spec in _flag_fields(InferenceSettings)}
    return InferenceSettings(**values, crf=crf)


def model_resources(args: argparse.Namespace) -> ModelResources:
    return ModelResources(**{spec.name: getattr(args, spec.name) for spec in _flag_fields(ModelResources)})


def model_actor_count(resources: ModelResources) -> tuple[int, bool]:
    """(model actors, whether they use GPUs): ``model_actors``, else one per GPU of the cluster, or 1 without."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    use_gpus = gpus > 0 and resources.gpus_per_actor > 0
    return resources.model_actors or (max(1, int(gpus // resources.gpus_per_actor)) if use_gpus else 1), use_gpus


def model_stage_resources(resources: ModelResources) -> dict:
    """``map_batches`` resources for the model actors: one actor per GPU when the cluster has GPUs, else CPU actors.

    With CPU actors whose resources equal the decode tasks', Ray Data fuses decoding into the actors (one transfer
    fewer); with GPUs it cannot, and decoding stays in CPU tasks off the GPU actors.
    """
    from ray.data import ActorPoolStrategy

    actors, use_gpus = model_actor_count(resources)
    compute = {"num_cpus": resources.cpus_per_actor}
    if use_gpus:
        compute["num_gpus"] = resources.gpus_per_actor
    # Several batches queued per actor: the next is decoded and copied while the current one runs.
    return {"compute": ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=4), **compute}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where there is none to show (required options, switches that are off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or action.required:
            return action.help or ""
        return super()._get_help_string(action)
