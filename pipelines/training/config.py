"""The training configuration: one typed dataclass, from which the command line's flags, the YAML ``--config`` keys
and the help text all derive, and which the driver hands to every worker.

The paper's recipe values (LR, weight decay, crop, momentum, poly power, head multiplier, scale range) are not
repeated here: ``None`` means "the architecture's recipe" (``deeplab_core.training.RECIPES``), filled in by
``with_recipe``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable

from deeplab_core.data import LAYOUT_NAMES, MASK_DIR
from deeplab_core.io import normalize_uri
from deeplab_core.models import ARCHS, BACKBONES, OUTPUT_STRIDES, backbone_help
from deeplab_core.training import RECIPES, Recipe
from deeplab_core.msc import MSC_SCALES
from pipelines.common.ranges import CountRange, count_range
from pipelines.common.options import (
    add_field_options, flag, flag_text, fraction, parse_scales, positive_float, positive_int,
)


def option(default: Any, help: str, *, convert: Callable[[str], Any] | None = None,
           choices: tuple | None = None, required: bool = False) -> Any:
    """A ``TrainConfig`` field: its default, its help, how a flag's (or a YAML value's) text converts, its choices."""
    return field(default=default, metadata={"help": help, "convert": convert, "choices": choices,
                                            "required": required})


# Restarts an elastic run allows by default: each lost node costs one (the run shrinks and resumes).
ELASTIC_RESTARTS = 3


@dataclass(frozen=True)
class TrainConfig:
    data: str = option("", "training dataset root (local path, s3://, any fsspec URI) in any layout --layout names",
                       required=True, convert=normalize_uri)
    output: str = option("", "run folder: checkpoints and the exported best_model.pt", required=True,
                         convert=normalize_uri)
    val_data: str | None = option(None, "validation dataset root (its --val-split); validation is skipped without",
                                  convert=normalize_uri)
    layout: str | None = option(None, "the datasets' layout; default: detected from their folders",
                                choices=LAYOUT_NAMES)
    val_fraction: float = option(0.0, "for layouts without split files (pairs, labelme): the share of samples held "
                                      "out of train as val (chosen with a fixed seed)", convert=fraction)
    train_split: str = option("train", "the training split's name (VOC: ImageSets/Segmentation/<name>.txt)")
    val_split: str = option("val", "the validation split's name")
    mask_folder: str = option(MASK_DIR, "the masks' folder under each dataset root (SegmentationClassAug for "
                                        "VOC + SBD's train_aug)")
    arch: str = option("deeplabv2", "model architecture", choices=ARCHS)
    backbone: str = option("resnet101", "the backbone network", choices=tuple(BACKBONES))
    output_stride: int | None = option(None, f"the backbone's output stride; default: the smallest it supports "
                                             f"({backbone_help()})", convert=int, choices=OUTPUT_STRIDES)
    num_classes: int | None = option(None, "classes; default: the dataset's own (a classes.txt, Cityscapes' 19, "
                                           "ADE20K's 150, COCO's categories, labelme's labels), else 21 (PASCAL VOC)",
                                     convert=positive_int)
    crop_size: int | None = option(None, "training crop side", convert=positive_int)
    batch_size: int = option(10, "images per worker per step", convert=positive_int)
    accumulation: int = option(1, "micro-batches per optimizer step, for small GPUs", convert=positive_int)
    iterations: int = option(20000, "optimizer steps", convert=positive_int)
    lr: float | None = option(None, "base LR; the head gets --head-lr-multiplier times it", convert=positive_float)
    momentum: float | None = option(None, "SGD momentum", convert=float)
    weight_decay: float | None = option(None, "weight decay", convert=float)
    lr_power: float | None = option(None, "poly LR power", convert=float)
    head_lr_multiplier: float | None = option(None, "LR multiplier of the head", convert=float)
    min_scale: float | None = option(None, "random scale lower bound", convert=positive_float)
    max_scale: float | None = option(None, "random scale upper bound", convert=positive_float)
    workers: CountRange = option(CountRange(1, 1), "Ray Train workers (DDP processes): N, or MIN-MAX for an elastic "
                                 "run that starts once MIN can run, grows to MAX as nodes join and shrinks when one "
                                 "is lost, resuming from its latest checkpoint each time", convert=count_range)
    resize_interval: float = option(60.0, "elastic runs: seconds between checks whether the cluster holds room for "
                                          "more workers", convert=positive_float)
    cpus_per_worker: float = option(1.0, "CPUs reserved per worker", convert=positive_float)
    use_gpu: bool = option(False, "one GPU per worker, NCCL")
    amp: bool = option(False, "bf16 (or fp16) autocast on GPUs")
    msc: bool = option(False, "multi-scale inputs (the paper's MSC): a loss on each scale's output and on their max")
    msc_scales: tuple[float, ...] = option(MSC_SCALES, "the scales --msc trains at", convert=parse_scales)
    sync_bn: bool = option(False, "SyncBatchNorm across workers")
    freeze_bn: bool = option(False, "freeze BatchNorm statistics and affine (the paper)")
    pretrained_backbone: str | None = option(None, "ImageNet ResNet weights: a local .pth path, or 'cache' for the "
                                                   "torch hub cache; never downloaded")
    resume: bool = option(False, "continue the run in --output from its latest checkpoint")
    val_every: int = option(1000, "validate and checkpoint every N iterations", convert=positive_int)
    log_every: int = option(20, "progress line every N iterations", convert=positive_int)
    keep_checkpoints: int = option(3, "best checkpoints kept", convert=positive_int)
    max_failures: int | None = option(None, "restarts after a worker dies (-1: no limit); default 0, or "
                                            f"{ELASTIC_RESTARTS} for an elastic run (--workers MIN-MAX), for which a "
                                            "lost node is one", convert=int)
    seed: int = option(0, "data order and augmentation seed", convert=int)

    @property
    def restarts(self) -> int:
        """How many worker-group failures the run survives (``max_failures``, else 0 or ELASTIC_RESTARTS)."""
        if self.max_failures is not None:
            return self.max_failures
        return 0 if self.workers.fixed else ELASTIC_RESTARTS

    def recipe(self) -> Recipe:
        return RECIPES[self.arch]

    def with_recipe(self) -> TrainConfig:
        """The options left to the recipe (``None``) filled in from the architecture's."""
        recipe = self.recipe()
        return replace(self, **{name: getattr(recipe, name) for name in _RECIPE_FIELDS if getattr(self, name) is None})


_RECIPE_FIELDS = tuple(f.name for f in fields(Recipe))
_CONFIG_FIELDS = {f.name: f for f in fields(TrainConfig)}


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """One flag per ``TrainConfig`` field, with its default in the help. Flags given default to "not given"
    (``argparse.SUPPRESS``), so that a YAML ``--config`` can fill what the command line leaves out."""
    convert = {name: spec.metadata["convert"] for name, spec in _CONFIG_FIELDS.items() if spec.metadata["convert"]}
    add_field_options(parser, _CONFIG_FIELDS.values(), convert, default=lambda spec: argparse.SUPPRESS,
                      help_text=lambda spec: ("(required) " if spec.metadata["required"] else "")
                      + spec.metadata["help"] + _default_text(spec))


def _default_text(spec) -> str:
    if spec.name in _RECIPE_FIELDS:
        values = sorted({getattr(recipe, spec.name) for recipe in RECIPES.values()})
        if len(values) == 1:
            return f" (default {values[0]}, the recipe's)"
        per_arch = " / ".join(f"{getattr(recipe, spec.name)} {arch}" for arch, recipe in RECIPES.items())
        return f" (default {per_arch})"
    if spec.default in (None, False, ""):
        return ""
    return f" (default {flag_text(spec.default)})"


def config_from(given: dict[str, Any], yaml_options: dict[str, Any], error: Callable[[str], None]) -> TrainConfig:
    """The ``TrainConfig`` of flags ``given`` over ``yaml_options`` over the defaults; ``error`` (the parser's) is
    called with one line for a missing required option or a YAML value its flag would refuse."""
    options = {}
    for name, value in yaml_options.items():
        options[name] = _checked_yaml_value(name, value, error)
    options.update(given)
    for name, spec in _CONFIG_FIELDS.items():
        if spec.metadata["required"] and not options.get(name):
            error(f"{flag(name)} is required (on the command line or in --config)")
    return TrainConfig(**options).with_recipe()


def yaml_unknown_keys(yaml_options: dict[str, Any]) -> list[str]:
    return sorted(set(yaml_options) - set(_CONFIG_FIELDS))


def known_keys() -> list[str]:
    return sorted(_CONFIG_FIELDS)


def _checked_yaml_value(name: str, value: Any, error: Callable[[str], None]) -> Any:
    """A YAML value checked as its flag checks text: a number where the flag wants one, within its bounds."""
    spec = _CONFIG_FIELDS[name]
    meta = spec.metadata
    if value is None:
        return None
    if spec.default is False:
        if not isinstance(value, bool):
            error(f"{flag(name)} must be true or false, got {value!r}")
        return value
    if meta["convert"] is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            error(f"{flag(name)} must be a number, got {value!r}")
        try:
            value = meta["convert"](str(value))
        except (argparse.ArgumentTypeError, ValueError) as err:
            error(f"{flag(name)} {err}")
    if meta["choices"] is not None and value not in meta["choices"]:
        error(f"{flag(name)} must be one of {meta['choices']}, got {value!r}")
    return value
