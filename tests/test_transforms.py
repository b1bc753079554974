import numpy as np
import pytest

from deeplab_core.data.transforms import (
    MEAN_COLOUR, PadIfSmaller, RandomCrop, RandomHorizontalFlip, RandomScale, eval_transform, train_transform,
)


def _coordinate_pair(height=120, width=150, axis=1):
    """An image whose red channel is the column (or row) index, and a mask holding the same index."""
    ramp = np.arange(width if axis == 1 else height, dtype=np.uint8)
    grid = np.broadcast_to(ramp[None, :] if axis == 1 else ramp[:, None], (height, width))
    image = np.stack([grid, np.full_like(grid, 7), np.full_like(grid, 9)], axis=-1).copy()
    return image, grid.copy()


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("seed", range(6))
def test_train_transform_keeps_image_and_mask_aligned_pixel_wise(axis, seed):
    image, mask = _coordinate_pair(axis=axis)
    out_image, out_mask = train_transform(crop_size=97)(image, mask, np.random.default_rng(seed))
    assert out_image.shape == (97, 97, 3) and out_mask.shape == (97, 97)
    assert out_image.flags.c_contiguous and out_mask.flags.c_contiguous
    padded = out_mask == 255
    assert np.all(out_image[padded] == MEAN_COLOUR)
    # Inside the picture, the interpolated coordinate in the image agrees with the mask's nearest coordinate.
    # The outermost rim is left out: there bilinear sampling clamps at the picture's edge.
    inner = ~padded
    inner[1:-1, 1:-1] &= ~(padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:])
    inner[[0, -1], :] = False
    inner[:, [0, -1]] = False
    difference = np.abs(out_image[..., 0].astype(int) - out_mask.astype(int))[inner]
    assert difference.size > 0 and difference.max() <= 2, difference.max()


def test_misalignment_would_be_detected():
    image, mask = _coordinate_pair()
    shifted = np.roll(mask, 3, axis=1)
    assert np.abs(image[..., 0].astype(int) - shifted.astype(int))[:, 5:-5].min() >= 3


def test_flip_and_crop_move_both_identically():
    image, mask = _coordinate_pair()
    flipped_image, flipped_mask = RandomHorizontalFlip(probability=1.0)(image, mask)
    assert np.array_equal(flipped_image[..., 0], flipped_mask) and flipped_mask[0, 0] == 149
    cropped_image, cropped_mask = RandomCrop(50)(image, mask, np.random.default_rng(3))
    assert np.array_equal(cropped_image[..., 0], cropped_mask)


def test_pad_uses_mean_colour_and_ignore_label():
    image, mask = np.zeros((10, 20, 3), np.uint8), np.ones((10, 20), np.uint8)
    padded_image, padded_mask = PadIfSmaller(32)(image, mask)
    assert padded_image.shape == (32, 32, 3)
    assert np.all(padded_mask[10:] == 255) and np.all(padded_mask[:, 20:] == 255)
    assert np.all(padded_mask[:10, :20] == 1)
    assert tuple(padded_image[31, 31]) == MEAN_COLOUR


def test_random_scale_stays_in_range_and_is_reproducible():
    image, mask = _coordinate_pair(100, 100)
    sizes = {RandomScale(0.5, 2.0)(image, mask, np.random.default_rng(s))[1].shape[0] for s in range(30)}
    assert min(sizes) >= 50 and max(sizes) <= 200 and len(sizes) > 10
    first = train_transform(64)(image, mask, np.random.default_rng(5))
    second = train_transform(64)(image, mask, np.random.default_rng(5))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    with pytest.raises(ValueError):
        RandomScale(2.0, 0.5)


def test_crop_larger_than_input_is_an_error_and_eval_is_identity():
    image, mask = _coordinate_pair(30, 30)
    with pytest.raises(ValueError, match="pad first"):
        RandomCrop(40)(image, mask)
    out_image, out_mask = eval_transform()(image, mask)
    assert np.array_equal(out_image, image) and np.array_equal(out_mask, mask)
