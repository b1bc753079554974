"""Preprocessing, multi-scale + flip inference, and logits -> full-resolution probabilities or labels.

Geometry used throughout: an image of H x W is padded (bottom/right) to a multiple of the output stride
``s``, giving a grid of ``ceil(H/s) x ceil(W/s)`` low-resolution logits; grid cell ``(i, j)`` covers input
pixels ``[i*s, (i+1)*s) x [j*s, (j+1)*s)``. ``upsample_logits`` inverts that exactly, so low-resolution logits
are all a pipeline needs to ship between machines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from deeplab_core.models.deeplab import unwrap
from deeplab_core.normalization import IMAGENET_MEAN, IMAGENET_STD

FUSIONS = ("max", "mean")


def as_tensor(array: np.ndarray | torch.Tensor, dtype: np.dtype | None = None) -> torch.Tensor:
    """A tensor sharing ``array``'s memory where it can; read-only arrays (PIL's, Ray Data's zero-copy ones) are
    copied, since torch cannot wrap read-only memory."""
    if isinstance(array, torch.Tensor):
        return array
    array = np.asarray(array, dtype=dtype)
    return torch.from_numpy(np.require(array, requirements=["C_CONTIGUOUS", "WRITEABLE"]))


def normalize(images: np.ndarray | torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 H x W x 3 (or N x H x W x 3) RGB -> float32 3 x H x W (or N x 3 x H x W), ImageNet-normalised."""
    tensor = as_tensor(images)
    if tensor.dtype != torch.uint8 or tensor.shape[-1] != 3 or tensor.ndim not in (3, 4):
        raise ValueError(f"expected uint8 H x W x 3 or N x H x W x 3 images, got {tuple(tensor.shape)} {tensor.dtype}")
    tensor = tensor.movedim(-1, -3).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=tensor.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=tensor.device).view(3, 1, 1)
    return tensor.sub_(mean_t).div_(std_t)


def low_res_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """The logits grid of an H x W image at output stride ``stride``."""
    return math.ceil(height / stride), math.ceil(width / stride)


def pad_to_multiple(images: torch.Tensor, multiple: int, value: float = 0.0) -> torch.Tensor:
    """Pad N x C x H x W bottom/right to multiples of ``multiple`` (0 = the mean colour after normalising)."""
    height, width = images.shape[-2:]
    pad_h = -height % multiple
    pad_w = -width % multiple
    if pad_h == 0 and pad_w == 0:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h), value=value)


def upsample_logits(low_res: torch.Tensor, size: tuple[int, int], stride: int) -> torch.Tensor:
    """Bilinearly upsample N x C x h x w (or C x h x w) grid logits to the H x W image they came from (the CRF's
    numpy twin: ``deeplab_core.resampling.upsample_grid``)."""
    squeeze = low_res.ndim == 3
    if squeeze:
        low_res = low_res.unsqueeze(0)
    grid_h, grid_w = low_res.shape[-2:]
    if grid_h * stride < size[0] or grid_w * stride < size[1]:
        raise ValueError(f"a {grid_h} x {grid_w} logits grid at stride {stride} does not cover {size[0]} x {size[1]}")
    full = F.interpolate(low_res.float(), size=(grid_h * stride, grid_w * stride), mode="bilinear",
                         align_corners=False)[..., : size[0], : size[1]]
    return full[0] if squeeze else full


def _scaled_grid(grid: int, scale: float) -> int:
    return max(1, round(grid * scale))


@torch.inference_mode()
def predict_low_res(model: nn.Module, images: torch.Tensor, scales: Sequence[float] = (1.0,), flip: bool = False,
                    fuse: str = "max") -> torch.Tensor:
    """Low-resolution logits N x C x ceil(H/s) x ceil(W/s) of normalised images N x 3 x H x W.

    Multi-scale inference (the paper's MSC): the stride-padded batch is resized so that its logits grid
    is ``round(grid * scale)`` cells, the model runs at each scale (and on the mirrored batch with
    ``flip``, whose logits are mirrored back and averaged with the unmirrored ones), every scale's logits
    are resized onto the scale-1 grid, and the scales are fused by element-wise ``max`` (the paper) or
    ``mean``. Quantising each scale to whole grid cells keeps the grids exactly aligned.
    """
    fused = multi_scale_logits(model, images, scales, flip, fuse).fused
    stride = unwrap(model).output_stride
    return fused[..., : math.ceil(images.shape[-2] / stride), : math.ceil(images.shape[-1] / stride)]


class MultiScaleLogits(NamedTuple):
    """Each scale's logits on its own grid (in ``scales`` order) and their fusion on the scale-1 grid of the
    stride-padded batch."""

    per_scale: list[torch.Tensor]
    fused: torch.Tensor


def multi_scale_logits(model: nn.Module, images: torch.Tensor, scales: Sequence[float] = (1.0,),
                       flip: bool = False, fuse: str = "max") -> MultiScaleLogits:
    """``predict_low_res``'s computation with gradients: what multi-scale training (``deeplab_core.msc``) takes its
    losses from. ``model`` may be wrapped in DistributedDataParallel: it is called, not its methods."""
    if fuse not in FUSIONS:
        raise ValueError(f"fuse must be one of {FUSIONS}, got {fuse!r}")
    if not scales or any(scale <= 0 for scale in scales):
        raise ValueError(f"scales must be positive numbers, got {scales!r}")
    stride = unwrap(model).output_stride
    padded = pad_to_multiple(images, stride)
    grid = (padded.shape[-2] // stride, padded.shape[-1] // stride)
    per_scale, fused = [], None
    for scale in scales:
        scaled_grid = (_scaled_grid(grid[0], scale), _scaled_grid(grid[1], scale))
        scaled = padded
        if scaled_grid != grid:
            scaled = F.interpolate(padded, size=(scaled_grid[0] * stride, scaled_grid[1] * stride),
                                   mode="bilinear", align_corners=False)
        logits = model(scaled, low_res=True)
        if flip:
            logits = (logits + model(scaled.flip(-1), low_res=True).flip(-1)) / 2
        per_scale.append(logits)
        if scaled_grid != grid:
            logits = F.interpolate(logits, size=grid, mode="bilinear", align_corners=False)
        if fused is None:
            fused = logits
        elif fuse == "max":
            fused = torch.maximum(fused, logits)
        else:
            fused = fused + logits
    if fuse == "mean":
        fused = fused / len(scales)
    return MultiScaleLogits(per_scale, fused)


def predict_logits(model: nn.Module, images: torch.Tensor, scales: Sequence[float] = (1.0,), flip: bool = False,
                   fuse: str = "max") -> torch.Tensor:
    """Full-resolution N x C x H x W logits: ``predict_low_res`` upsampled with ``upsample_logits``."""
    low_res = predict_low_res(model, images, scales, flip, fuse)
    return upsample_logits(low_res, tuple(images.shape[-2:]), model.output_stride)


# Low-resolution logits travel between machines in this dtype: half the bytes of float32, and class scores need
# no more precision. ``segment_image`` applies the same rounding, so in-process results equal a pipeline's.
TRANSPORT_DTYPE = np.float16
