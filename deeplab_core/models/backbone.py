"""Atrous (dilated) ResNet backbone: torchvision's ResNet with its last strides replaced by dilation."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet

# The input normalisation the ImageNet-pretrained backbones were trained with (torchvision's).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESNETS = {
    "resnet50": (resnet.resnet50, resnet.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (resnet.resnet101, resnet.ResNet101_Weights.IMAGENET1K_V1),
}
OUTPUT_STRIDES = (8, 16)
OUT_CHANNELS = 2048

# Which of layer2, layer3, layer4 keep their stride (False) or trade it for dilation (True).
_DILATION_FOR_STRIDE = {8: [False, True, True], 16: [False, False, True]}


class AtrousResNet(nn.Module):
    """ResNet-50/101 stem and four stages; ``forward`` returns the layer4 features at 1/``output_stride``.

    Attribute names match torchvision's ``IntermediateLayerGetter`` over a ResNet, so state dicts of
    torchvision's segmentation models load into it unchanged.
    """

    def __init__(self, name: str = "resnet101", output_stride: int = 8) -> None:
        super().__init__()
        if name not in RESNETS:
            raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(RESNETS)}")
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
        constructor, _ = RESNETS[name]
        net = constructor(weights=None, replace_stride_with_dilation=_DILATION_FOR_STRIDE[output_stride])
        self.name = name
        self.output_stride = output_stride
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def load_imagenet_weights(self, weights: str | Path | bool) -> Path:
        """Load ImageNet-classification ResNet weights, never downloading.

        ``weights`` is a path to torchvision's ``resnet*.pth`` file, or True to take it from the torch hub
        cache (``$TORCH_HOME/hub/checkpoints``) where ``torchvision`` would have stored it. Returns the path used.
        """
        path = imagenet_weights_path(self.name) if weights is True else Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"ImageNet weights for {self.name} not found at {path}. Download "
                f"{RESNETS[self.name][1].url} on a machine with internet access and place it there "
                "(or pass its path), or build the model without pretrained_backbone."
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        self.load_state_dict(state, strict=True)
        return path


def imagenet_weights_path(name: str) -> Path:
    """Where torchvision caches the ImageNet weights of backbone ``name`` (the file may not exist)."""
    _, weights = RESNETS[name]
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
