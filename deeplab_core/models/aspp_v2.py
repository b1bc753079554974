"""DeepLab-v2 head: ASPP-L, four parallel 3x3 atrous convolutions that each predict class scores, summed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

V2_RATES = (6, 12, 18, 24)


class ASPPv2(nn.Module):
    """Atrous spatial pyramid pooling as in DeepLab-v2 (ResNet-101 variant, "ASPP-L").

    Each branch maps the backbone features straight to class scores; the branch outputs are summed.
    The rates are the paper's (6, 12, 18, 24), which it uses at output stride 8.
    """

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int] = V2_RATES) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=rate, dilation=rate, bias=True)
            for rate in rates
        )
        for branch in self.branches:
            # The released model initialises the classifier with N(0, 0.01) and zero bias.
            nn.init.normal_(branch.weight, mean=0.0, std=0.01)
            nn.init.zeros_(branch.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(branch(x) for branch in self.branches)
