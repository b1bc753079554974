"""Multi-scale inputs in training (the paper's MSC): the network sees each crop at scales 1, 0.75 and 0.5, every
scale's output and their element-wise max (on the scale-1 grid) each get a cross-entropy, and the losses are summed.

The outputs are those of ``deeplab_core.inference.multi_scale_logits``, so the fused output a model is trained on is
exactly what ``predict_low_res(..., scales, fuse="max")`` computes at inference. Losses are taken on each output's
own grid (1/output-stride of its input) against the labels resized there by nearest neighbour, as the paper does;
the fused term trains the scales to agree where they are fused, the per-scale terms keep each scale useful alone.
Summed, not averaged: with 3 scales the gradient is ~4x a single-scale step's, which the paper's learning rates
(tuned with MSC) already account for.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from deeplab_core.inference import multi_scale_logits
from deeplab_core.labels import IGNORE_INDEX
from deeplab_core.models import unwrap
from deeplab_core.training import segmentation_loss

MSC_SCALES = (1.0, 0.75, 0.5)


def labels_on_grid(target: torch.Tensor, size: tuple[int, int], stride: int) -> torch.Tensor:
    """N x H x W labels, padded with the ignore label to the stride grid's extent, resized by nearest neighbour to
    ``size`` (an output grid)."""
    height, width = target.shape[-2:]
    padded = F.pad(target.long(), (0, -width % stride, 0, -height % stride), value=IGNORE_INDEX)
    return F.interpolate(padded[:, None].float(), size=size, mode="nearest")[:, 0].long()


def msc_losses(model: nn.Module, images: torch.Tensor, target: torch.Tensor,
               scales: Sequence[float] = MSC_SCALES) -> list[torch.Tensor]:
    """One cross-entropy per scale's output, then the fused output's (normalised images N x 3 x H x W, labels
    N x H x W); sum them for the step's loss."""
    stride = unwrap(model).output_stride
    outputs = multi_scale_logits(model, images, scales, fuse="max")
    return [segmentation_loss(logits, labels_on_grid(target, tuple(logits.shape[-2:]), stride))
            for logits in [*outputs.per_scale, outputs.fused]]
