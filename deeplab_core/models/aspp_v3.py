"""DeepLab-v3 head: ASPP with a 1x1 branch, three 3x3 atrous branches and image pooling, with BatchNorm.

The module layout mirrors torchvision's ``models/segmentation/deeplabv3.py`` exactly, so torchvision's
``deeplabv3_resnet50/101`` weight files load into our model with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

V3_RATES_AT_STRIDE_16 = (6, 12, 18)
ASPP_CHANNELS = 256


def v3_rates(output_stride: int, at_stride_16: Sequence[int] = V3_RATES_AT_STRIDE_16) -> tuple[int, ...]:
    """The atrous rates for output stride 16 (the paper's by default), doubled at output stride 8."""
    return tuple(rate * 16 // output_stride for rate in at_stride_16)


class ASPPConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, dilation: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class ASPPPooling(nn.Sequential):
    """Image-level features: global average pool, 1x1 conv, BatchNorm, broadcast back to the feature map."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        for module in self:
            x = module(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(self, in_channels: int, rates: Sequence[int], out_channels: int = ASPP_CHANNELS) -> None:
        super().__init__()
        branches: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU())
        ]
        branches += [ASPPConv(in_channels, out_channels, rate) for rate in rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Dropout(0.5),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabV3Head(nn.Sequential):
    """ASPP, then a 3x3 conv + BatchNorm + ReLU, then the 1x1 classifier (torchvision's ``DeepLabHead``)."""

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int]) -> None:
        super().__init__(
            ASPP(in_channels, rates),
            nn.Conv2d(ASPP_CHANNELS, ASPP_CHANNELS, 3, padding=1, bias=False),
            nn.BatchNorm2d(ASPP_CHANNELS),
            nn.ReLU(),
            nn.Conv2d(ASPP_CHANNELS, num_classes, 1),
        )
