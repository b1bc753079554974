"""Bilinear resizing and cell means of C x H x W score maps in numpy, with PyTorch's geometry (``F.interpolate``'s
``bilinear``, ``align_corners=False``; ``F.avg_pool2d``'s ``ceil_mode``).

The dense CRF's CPU workers need no more than this from torch: importing it (and torchvision with the models) cost
each worker ~4 s and ~800 MB before it refined its first image. The results equal torch's up to float32 rounding
(tests/test_resampling.py): the same taps and weights, the width pass first and then the height pass, as torch
sums them.
"""

from __future__ import annotations

import math

import numpy as np


def _linear_taps(input_size: int, output_size: int, scale: float | None) -> tuple[np.ndarray, np.ndarray,
                                                                                  np.ndarray, np.ndarray]:
    """For each output index, its two input indices and their weights, float32 as torch computes them on CPU:
    source = (index + 0.5) * step - 0.5, clamped at 0, step = 1 / ``scale`` or input / output size, in float32.
    Torch's x86 builds fuse that multiply-add (one rounding); float64 holds its exact value, rounded once here too."""
    step = np.float32(1.0 / scale) if scale else np.float32(input_size) / np.float32(output_size)
    fused = (np.arange(output_size, dtype=np.float64) + 0.5) * np.float64(step) - 0.5
    source = np.maximum(fused.astype(np.float32), np.float32(0.0))
    first = np.minimum(np.floor(source).astype(np.intp), input_size - 1)
    second_weight = np.clip(source - first.astype(np.float32), np.float32(0.0), np.float32(1.0))
    second = first + (first < input_size - 1)
    return first, second, np.float32(1.0) - second_weight, second_weight


def resize_bilinear(values: np.ndarray, size: tuple[int, int] | None = None, *, scale: float | None = None,
                    keep: tuple[int, int] | None = None) -> np.ndarray:
    """float32 C x H x W: ``values`` (C x h x w) bilinearly resized to ``size``, as ``F.interpolate(values[None],
    size=size, mode="bilinear", align_corners=False)[0]``; or by ``scale`` instead, as torch's
    ``scale_factor=scale`` (to floor(h * scale) x floor(w * scale), sampled every 1 / scale input pixels).

    ``keep``: compute only the first ``keep`` rows and columns of that result (a crop of it, for less work)."""
    if (size is None) == (scale is None):
        raise ValueError("resize_bilinear: give either size or scale")
    values = np.asarray(values, dtype=np.float32)
    if size is None:
        size = math.floor(values.shape[1] * scale), math.floor(values.shape[2] * scale)
    (height, width), (kept_height, kept_width) = size, keep or size
    row_taps = [taps[:kept_height] for taps in _linear_taps(values.shape[1], height, scale)]
    column_taps = [taps[:kept_width] for taps in _linear_taps(values.shape[2], width, scale)]
    left, right, left_weight, right_weight = column_taps
    across = np.take(values, left, axis=2) * left_weight
    across += np.take(values, right, axis=2) * right_weight
    top, bottom, top_weight, bottom_weight = row_taps
    resized = np.take(across, top, axis=1) * top_weight[:, None]
    resized += np.take(across, bottom, axis=1) * bottom_weight[:, None]
    return resized


def upsample_grid(low_res: np.ndarray, size: tuple[int, int], stride: int) -> np.ndarray:
    """float32 C x H x W: C x h x w logits on the stride grid of an H x W image, upsampled as
    ``deeplab_core.inference.upsample_logits`` does (to the grid's own h * stride x w * stride, cropped to the
    image)."""
    grid_h, grid_w = low_res.shape[1:]
    if grid_h * stride < size[0] or grid_w * stride < size[1]:
        raise ValueError(f"a {grid_h} x {grid_w} logits grid at stride {stride} does not cover {size[0]} x {size[1]}")
    return resize_bilinear(low_res, (grid_h * stride, grid_w * stride), keep=size)


def cell_means(values: np.ndarray, cell: int) -> np.ndarray:
    """float32 C x ceil(H / cell) x ceil(W / cell): the mean of ``values`` (C x H x W) over each ``cell`` x ``cell``
    cell, the last row and column of cells cut by the edge averaging what they hold (``F.avg_pool2d(..., cell,
    ceil_mode=True)``). Summed in float32, as torch sums: exactly for 8-bit inputs."""
    channels, height, width = values.shape
    rows, cols = -(-height // cell), -(-width // cell)
    if (rows * cell, cols * cell) == (height, width):
        padded = np.asarray(values, dtype=np.float32)
    else:
        padded = np.zeros((channels, rows * cell, cols * cell), dtype=np.float32)
        padded[:, :height, :width] = values
    # Adding strided slices, one offset inside the cell at a time: ~10x faster than numpy's reductions over the
    # reshaped cell axes.
    row_sums = padded[:, ::cell].copy()
    for offset in range(1, cell):
        row_sums += padded[:, offset::cell]
    sums = row_sums[:, :, ::cell].copy()
    for offset in range(1, cell):
        sums += row_sums[:, :, offset::cell]
    row_counts = np.minimum(cell, height - cell * np.arange(rows)).astype(np.float32)
    col_counts = np.minimum(cell, width - cell * np.arange(cols)).astype(np.float32)
    sums /= np.outer(row_counts, col_counts)
    return sums
