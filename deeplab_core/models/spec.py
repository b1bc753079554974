"""What a DeepLab model is, as one typed value: enough to rebuild it and to read its outputs.

A checkpoint stores it as its ``config`` dict (the on-disk format docs/architecture.md describes, under "Data,
metrics, checkpoints"); in memory it is a ``ModelSpec``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from torch import nn

from deeplab_core.classes import Colour, default_colours
from deeplab_core.models.backbone import BACKBONES
from deeplab_core.normalization import IMAGENET_MEAN, IMAGENET_STD
from deeplab_core.models.deeplab import ARCHS, DeepLab, build_model, unwrap

# Keys later versions added: a checkpoint without them still loads (class_colours: the VOC colour map's).
OPTIONAL_SPEC_KEYS = ("class_colours",)


@dataclass(frozen=True)
class ModelSpec:
    """Architecture, backbone, output stride, classes (their names and the colours masks and overlays draw them in),
    and the input normalisation the weights expect. Checked when made: a nonsense value raises a ``ValueError``
    naming the field."""

    arch: str
    backbone: str
    output_stride: int
    num_classes: int
    class_names: tuple[str, ...] = ()
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    class_colours: tuple[Colour, ...] = ()

    def __post_init__(self) -> None:
        names = tuple(str(name) for name in self.class_names) or tuple(str(k) for k in range(self.num_classes))
        object.__setattr__(self, "class_names", names)
        colours = tuple(tuple(int(v) for v in colour) for colour in self.class_colours)
        object.__setattr__(self, "class_colours", colours or default_colours(self.num_classes))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.arch not in ARCHS:
            raise ValueError(f"ModelSpec: arch must be one of {ARCHS}, got {self.arch!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"ModelSpec: backbone must be one of {tuple(BACKBONES)}, got {self.backbone!r}")
        strides = BACKBONES[self.backbone].output_strides
        if self.output_stride not in strides:
            raise ValueError(f"ModelSpec: output_stride of {self.backbone} must be one of {strides}, got "
                             f"{self.output_stride}")
        if self.num_classes < 2 or len(names) != self.num_classes:
            raise ValueError(f"ModelSpec: {self.num_classes} classes need as many names (>= 2), got {len(names)}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("ModelSpec: mean and std take one value per RGB channel")
        if len(self.class_colours) != self.num_classes or any(
                len(colour) != 3 or not all(0 <= v <= 255 for v in colour) for colour in self.class_colours):
            raise ValueError(f"ModelSpec: {self.num_classes} classes need as many RGB colours of 0..255")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelSpec:
        """From a checkpoint's ``config`` dict; a missing key is a ``KeyError`` naming the keys that are."""
        missing = [key for key in SPEC_KEYS if key not in config]
        if missing:
            raise KeyError(f"config lacks {missing}")
        return cls(**{key: config[key] for key in SPEC_KEYS + OPTIONAL_SPEC_KEYS if key in config})

    @classmethod
    def of_model(cls, model: nn.Module, class_names: list[str] | None = None, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, class_colours=()) -> ModelSpec:
        """The spec of a built model (unwrapped from DDP)."""
        net: DeepLab = unwrap(model)
        return cls(net.arch, net.backbone.name, net.output_stride, net.num_classes, tuple(class_names or ()), mean,
                   std, tuple(class_colours))

    def to_config(self) -> dict[str, Any]:
        """The checkpoint's on-disk ``config`` dict (lists, not tuples, as every earlier checkpoint holds)."""
        return {key: _plain(value) for key, value in asdict(self).items()}

    def build(self, pretrained_backbone: str | bool = False) -> DeepLab:
        """The model, freshly initialised (ImageNet backbone weights with ``pretrained_backbone``)."""
        return build_model(self.arch, self.backbone, self.output_stride, self.num_classes, pretrained_backbone)


# The on-disk config's keys, one per field; those a checkpoint must hold are every field but the optional ones.
SPEC_KEYS = tuple(field.name for field in fields(ModelSpec) if field.name not in OPTIONAL_SPEC_KEYS)


def _plain(value: Any) -> Any:
    return [_plain(item) for item in value] if isinstance(value, tuple) else value
