"""Paired (image, mask) transforms on numpy arrays that keep the two aligned pixel for pixel.

Images are uint8 H x W x 3, masks uint8 H x W (255 = ignore). Randomness comes from the ``rng`` passed
to each call (a ``numpy.random.Generator``), so a transform is reproducible and safe in parallel workers.
Normalisation is left to the model side (``deeplab_core.inference.normalize``): uint8 is 4x cheaper to ship.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deeplab_core.io.images import resize_image, resize_labels
from deeplab_core.labels import IGNORE_INDEX
from deeplab_core.normalization import IMAGENET_MEAN

# The ImageNet mean colour in uint8: padding with it becomes ~0 after normalisation.
MEAN_COLOUR = tuple(round(255 * channel) for channel in IMAGENET_MEAN)

Sample = tuple[np.ndarray, np.ndarray]


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng()


def resize_pair(image: np.ndarray, mask: np.ndarray, height: int, width: int) -> Sample:
    """Bilinear for the image, nearest neighbour for the mask."""
    return resize_image(image, (height, width)), resize_labels(mask, (height, width))


class Compose:
    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None) -> Sample:
        rng = _rng(rng)
        for transform in self.transforms:
            image, mask = transform(image, mask, rng)
        return image, mask


class RandomScale:
    """Resize both by one factor drawn uniformly from [min_scale, max_scale] (the paper: 0.5 to 2.0)."""

    def __init__(self, min_scale: float = 0.5, max_scale: float = 2.0) -> None:
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale = min_scale, max_scale

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None) -> Sample:
        scale = _rng(rng).uniform(self.min_scale, self.max_scale)
        height, width = mask.shape
        return resize_pair(image, mask, max(1, round(height * scale)), max(1, round(width * scale)))


class PadIfSmaller:
    """Pad bottom/right up to ``size`` with the mean colour (image) and the ignore label (mask)."""

    def __init__(self, size: int, fill: Sequence[int] = MEAN_COLOUR, ignore_index: int = IGNORE_INDEX) -> None:
        self.size, self.fill, self.ignore_index = size, tuple(fill), ignore_index

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None) -> Sample:
        height, width = mask.shape
        pad_h, pad_w = max(self.size - height, 0), max(self.size - width, 0)
        if pad_h == 0 and pad_w == 0:
            return image, mask
        padded_image = np.empty((height + pad_h, width + pad_w, 3), dtype=np.uint8)
        padded_image[...] = np.asarray(self.fill, dtype=np.uint8)
        padded_image[:height, :width] = image
        padded_mask = np.full((height + pad_h, width + pad_w), self.ignore_index, dtype=np.uint8)
        padded_mask[:height, :width] = mask
        return padded_image, padded_mask


class RandomCrop:
    """Cut the same ``size`` x ``size`` window from both (inputs must be at least that large)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None) -> Sample:
        height, width = mask.shape
        if height < self.size or width < self.size:
            raise ValueError(f"cannot crop {self.size} x {self.size} from {height} x {width}; pad first")
        rng = _rng(rng)
        top = int(rng.integers(0, height - self.size + 1))
        left = int(rng.integers(0, width - self.size + 1))
        window = (slice(top, top + self.size), slice(left, left + self.size))
        return image[window], mask[window]


class RandomHorizontalFlip:
    def __init__(self, probability: float = 0.5) -> None:
        self.probability = probability

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None) -> Sample:
        if _rng(rng).random() < self.probability:
            return image[:, ::-1], mask[:, ::-1]
        return image, mask


class Contiguous:
    """Materialise views (crops, flips) as compact arrays before they are shipped or stacked."""

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None) -> Sample:
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def train_transform(crop_size: int, min_scale: float = 0.5, max_scale: float = 2.0,
                    fill: Sequence[int] = MEAN_COLOUR) -> Compose:
    """The paper's augmentation: random scale, pad to the crop, random crop, random horizontal flip."""
    return Compose([
        RandomScale(min_scale, max_scale),
        PadIfSmaller(crop_size, fill),
        RandomCrop(crop_size),
        RandomHorizontalFlip(),
        Contiguous(),
    ])


def eval_transform() -> Compose:
    """Evaluation uses the full image as it is: no scaling or cropping (inference pads to the stride)."""
    return Compose([Contiguous()])
