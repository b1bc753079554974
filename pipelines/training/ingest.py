"""Ray Data ingest of labelled datasets in any layout: read, decode, map the labels to class ids (or rasterise
their polygons) and augment, in Ray Data's CPU workers.

The training loop receives ready uint8 crops; it never decodes an image.
"""

from __future__ import annotations

import numpy as np
import ray.data

from deeplab_core.data import Sample, read_labelled_sample, train_transform
from deeplab_core.data.transforms import Compose


def training_items(count: int, num_rows: int, seed: int) -> list[dict]:
    """``num_rows`` rows over ``count`` samples: their indices in a fresh seeded order each epoch, each with its own
    augmentation seed."""
    rng = np.random.default_rng(seed)
    items: list[dict] = []
    while len(items) < num_rows:
        for index in rng.permutation(count):
            items.append({"index": int(index), "seed": int(rng.integers(2**62))})
            if len(items) == num_rows:
                break
    return items


class TrainingSampleLoader:
    """``map_batches`` function: decode each (image, mask) pair, check it, and apply the paper's augmentation."""

    def __init__(self, samples: tuple[Sample, ...], crop_size: int, min_scale: float, max_scale: float,
                 num_classes: int) -> None:
        self.samples, self.num_classes = samples, num_classes
        self.transform: Compose = train_transform(crop_size, min_scale, max_scale)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images, masks = [], []
        for index, seed in zip(batch["index"], batch["seed"]):
            image, mask = read_labelled_sample(self.samples[int(index)], self.num_classes)
            image, mask = self.transform(image, mask, np.random.default_rng(int(seed)))
            images.append(image)
            masks.append(mask)
        return {"seed": batch["seed"], "image": np.stack(images), "mask": np.stack(masks)}


class EvalSampleLoader:
    """``map_batches`` function: decode each (image, mask) pair at its own size (rows may differ in size)."""

    def __init__(self, samples: tuple[Sample, ...], num_classes: int) -> None:
        self.samples, self.num_classes = samples, num_classes

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        images, masks = [], []
        for index in batch["index"]:
            image, mask = read_labelled_sample(self.samples[int(index)], self.num_classes)
            images.append(image)
            masks.append(mask)
        return {"index": list(batch["index"]), "image": images, "mask": masks}


def training_dataset(samples: tuple[Sample, ...], num_rows: int, crop_size: int, min_scale: float, max_scale: float,
                     num_classes: int, seed: int) -> ray.data.Dataset:
    items = training_items(len(samples), num_rows, seed)
    loader = TrainingSampleLoader(samples, crop_size, min_scale, max_scale, num_classes)
    return ray.data.from_items(items).map_batches(loader, batch_size=8)


def eval_dataset(samples: tuple[Sample, ...], num_classes: int) -> ray.data.Dataset:
    items = [{"index": index} for index in range(len(samples))]
    return ray.data.from_items(items).map_batches(EvalSampleLoader(samples, num_classes), batch_size=4)
