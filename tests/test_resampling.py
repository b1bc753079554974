"""deeplab_core.resampling against the torch operations it stands in for, on the sizes the CRF meets."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from deeplab_core.inference import upsample_logits
from deeplab_core.resampling import cell_means, resize_bilinear, upsample_grid


def _scores(channels: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((channels, height, width)) * 4).astype(np.float32)


@pytest.mark.parametrize(("grid", "size"), [((9, 13), (65, 97)), ((65, 65), (513, 513)), ((7, 5), (7, 5)),
                                            ((33, 20), (17, 11)), ((1, 4), (3, 30))])
def test_resizing_to_a_size_is_torchs_bilinear(grid, size):
    values = _scores(3, *grid)
    expected = F.interpolate(torch.from_numpy(values)[None], size=size, mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(resize_bilinear(values, size), expected.numpy(), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize(("grid", "scale"), [((9, 13), 4.0), ((65, 33), 2.0), ((10, 7), 2.5)])
def test_resizing_by_a_scale_is_torchs_bilinear_and_keep_crops_it(grid, scale):
    values = _scores(2, *grid, seed=1)
    expected = F.interpolate(torch.from_numpy(values)[None], scale_factor=scale, mode="bilinear",
                             align_corners=False)[0].numpy()
    resized = resize_bilinear(values, scale=scale)
    assert resized.shape == expected.shape
    np.testing.assert_allclose(resized, expected, rtol=1e-6, atol=1e-5)
    keep = (resized.shape[1] - 3, resized.shape[2] - 1)
    assert (resize_bilinear(values, scale=scale, keep=keep) == resized[:, : keep[0], : keep[1]]).all()


def test_upsampling_stride_grid_logits_as_inference_does():
    low = _scores(4, 9, 6, seed=2)
    expected = upsample_logits(torch.from_numpy(low), (70, 41), 8).numpy()
    np.testing.assert_allclose(upsample_grid(low, (70, 41), 8), expected, rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="does not cover"):
        upsample_grid(low, (73, 41), 8)


@pytest.mark.parametrize(("size", "cell"), [((64, 64), 8), ((67, 45), 8), ((5, 3), 4), ((17, 16), 16)])
def test_cell_means_are_torchs_ceil_mode_average_pooling(size, cell):
    values = _scores(3, *size, seed=3)
    expected = F.avg_pool2d(torch.from_numpy(values)[None], cell, ceil_mode=True)[0].numpy()
    np.testing.assert_allclose(cell_means(values, cell), expected, rtol=1e-5, atol=1e-6)
    image = np.random.default_rng(4).integers(0, 256, (3, *size), dtype=np.uint8)
    pooled = F.avg_pool2d(torch.from_numpy(image)[None].float(), cell, ceil_mode=True)[0].numpy()
    assert (cell_means(image, cell) == pooled).all()  # integer sums are exact: the same float32 means
