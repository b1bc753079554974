"""Atrous backbones: torchvision's classification networks with their last strides traded for dilation.

``BACKBONES`` is the table, one ``Backbone`` value per network: how to build it for each output stride it supports,
the layer the head reads and its channels, the ImageNet weights it starts from, and torchvision's DeepLab-v3 VOC
weights for it. A new family is one more entry; ``build_model``, ``ModelSpec``, the flags and ``pretrained`` read it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights, WeightsEnum, mobilenet_v3_large, resnet
from torchvision.models.segmentation import (
    DeepLabV3_MobileNet_V3_Large_Weights, DeepLabV3_ResNet50_Weights, DeepLabV3_ResNet101_Weights,
)

from deeplab_core.models.aspp_v3 import V3_RATES_AT_STRIDE_16



@dataclass(frozen=True)
class Backbone:
    """One backbone network and what the rest of the model needs to know of it."""

    constructor: Callable[..., nn.Module]  # torchvision's classification network
    dilation: Mapping[int, Mapping[str, Any]]  # output stride -> the constructor's keywords that dilate for it
    layers: str  # the network's attribute holding its feature layers in order ("": the network's own children)
    head_layer: str  # the last of those layers kept: the head reads its output
    out_channels: int  # the head layer's output channels
    imagenet_weights: WeightsEnum  # the ImageNet classification weights a training run starts from
    v3_rates_at_16: tuple[int, ...]  # the DeepLab-v3 head's atrous rates at output stride 16 (doubled at 8)
    voc_weights: WeightsEnum  # torchvision's DeepLab-v3 weights with the 21 VOC labels (deeplab_core.pretrained)
    voc_output_stride: int  # the output stride those weights run at

    @property
    def output_strides(self) -> tuple[int, ...]:
        return tuple(sorted(self.dilation))

    @property
    def default_output_stride(self) -> int:
        return self.output_strides[0]


# Which of layer2, layer3, layer4 keep their stride (False) or trade it for dilation (True).
_RESNET_DILATION = {8: {"replace_stride_with_dilation": [False, True, True]},
                    16: {"replace_stride_with_dilation": [False, False, True]}}

BACKBONES: dict[str, Backbone] = {
    "resnet50": Backbone(resnet.resnet50, _RESNET_DILATION, "", "layer4", 2048, resnet.ResNet50_Weights.IMAGENET1K_V1,
                         V3_RATES_AT_STRIDE_16, DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1, 8),
    "resnet101": Backbone(resnet.resnet101, _RESNET_DILATION, "", "layer4", 2048,
                          resnet.ResNet101_Weights.IMAGENET1K_V1, V3_RATES_AT_STRIDE_16,
                          DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1, 8),
    # torchvision's deeplabv3_mobilenet_v3_large: the last stage dilated (stride 16), the head on its last layer
    # (960 channels) with torchvision's rates, which its VOC weights were trained with.
    "mobilenet_v3_large": Backbone(mobilenet_v3_large, {16: {"dilated": True}}, "features", "16", 960,
                                   MobileNet_V3_Large_Weights.IMAGENET1K_V1, (12, 24, 36),
                                   DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1, 16),
}


def backbone_help() -> str:
    """The backbones and their output strides, for a flag's help."""
    return "; ".join(f"{name}: output stride {' or '.join(map(str, entry.output_strides))}"
                     for name, entry in BACKBONES.items())


def lookup(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name]


class AtrousBackbone(nn.Sequential):
    """The feature layers of backbone ``name`` up to its head layer; ``forward`` returns that layer's features at
    1/``output_stride``.

    Layer names are torchvision's (``conv1`` ... ``layer4`` of a ResNet, ``0`` ... ``16`` of MobileNetV3's
    ``features``), as its ``IntermediateLayerGetter`` keeps them, so torchvision's segmentation weights load unchanged.
    """

    def __init__(self, name: str = "resnet101", output_stride: int = 8) -> None:
        entry = lookup(name)
        if output_stride not in entry.output_strides:
            raise ValueError(f"output_stride of {name} must be one of {entry.output_strides}, got {output_stride!r}")
        network = entry.constructor(weights=None, **entry.dilation[output_stride])
        container = getattr(network, entry.layers) if entry.layers else network
        kept: OrderedDict[str, nn.Module] = OrderedDict()
        for layer_name, layer in container.named_children():
            kept[layer_name] = layer
            if layer_name == entry.head_layer:
                break
        super().__init__(kept)
        self.name, self.output_stride, self.entry = name, output_stride, entry

    @property
    def out_channels(self) -> int:
        return self.entry.out_channels

    def load_imagenet_weights(self, weights: str | Path | bool) -> Path:
        """Load the ImageNet classification weights of this backbone, never downloading.

        ``weights`` is a path to torchvision's weights file, or True to take it from the torch hub cache
        (``$TORCH_HOME/hub/checkpoints``) where ``torchvision`` would have stored it. Returns the path used.
        """
        path = imagenet_weights_path(self.name) if weights is True else Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"ImageNet weights for {self.name} not found at {path}. Download "
                f"{self.entry.imagenet_weights.url} on a machine with internet access and place it there "
                "(or pass its path), or build the model without pretrained_backbone."
            )
        prefix = self.entry.layers + "." if self.entry.layers else ""
        kept = {name for name, _ in self.named_children()}
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {key.removeprefix(prefix): value for key, value in state.items()
                 if key.startswith(prefix) and key.removeprefix(prefix).split(".")[0] in kept}
        self.load_state_dict(state, strict=True)
        return path


def imagenet_weights_path(name: str) -> Path:
    """Where torchvision caches the ImageNet weights of backbone ``name`` (the file may not exist)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(lookup(name).imagenet_weights.url).name
