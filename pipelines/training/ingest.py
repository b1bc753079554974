"""Ray Data ingest of VOC-layout datasets: read, decode and augment in Ray Data's CPU workers.

The training loop receives ready uint8 crops; it never decodes an image.
"""

from __future__ import annotations

import numpy as np
import ray.data

from deeplab_core.data import MASK_DIR, read_sample, train_transform
from deeplab_core.data.transforms import Compose


def training_items(ids: list[str], num_rows: int, seed: int) -> list[dict]:
    """``num_rows`` samples: the ids in a fresh seeded order each epoch, each with its own augmentation seed."""
    rng = np.random.default_rng(seed)
    items: list[dict] = []
    while len(items) < num_rows:
        for index in rng.permutation(len(ids)):
            items.append({"index": int(index), "seed": int(rng.integers(2**62))})
            if len(items) == num_rows:
                break
    return items


class TrainingSampleLoader:
    """``map_batches`` function: decode each (image, mask) pair, check it, and apply the paper's augmentation."""

    def __init__(self, root: str, ids: list[str], crop_size: int, min_scale: float, max_scale: float,
                 num_classes: int, mask_folder: str = MASK_DIR) -> None:
        self.root, self.ids, self.num_classes, self.mask_folder = root, ids, num_classes, mask_folder
        self.transform: Compose = train_transform(crop_size, min_scale, max_scale)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images, masks = [], []
        for index, seed in zip(batch["index"], batch["seed"]):
            image, mask = read_sample(self.root, self.ids[int(index)], self.num_classes, self.mask_folder)
            image, mask = self.transform(image, mask, np.random.default_rng(int(seed)))
            images.append(image)
            masks.append(mask)
        return {"seed": batch["seed"], "image": np.stack(images), "mask": np.stack(masks)}


class EvalSampleLoader:
    """``map_batches`` function: decode each (image, mask) pair at its own size (rows may differ in size)."""

    def __init__(self, root: str, ids: list[str], num_classes: int, mask_folder: str = MASK_DIR) -> None:
        self.root, self.ids, self.num_classes, self.mask_folder = root, ids, num_classes, mask_folder

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        images, masks = [], []
        for index in batch["index"]:
            image, mask = read_sample(self.root, self.ids[int(index)], self.num_classes, self.mask_folder)
            images.append(image)
            masks.append(mask)
        return {"index": list(batch["index"]), "image": images, "mask": masks}


def training_dataset(root: str, ids: list[str], num_rows: int, crop_size: int, min_scale: float, max_scale: float,
                     num_classes: int, seed: int, mask_folder: str = MASK_DIR) -> ray.data.Dataset:
    items = training_items(ids, num_rows, seed)
    loader = TrainingSampleLoader(root, ids, crop_size, min_scale, max_scale, num_classes, mask_folder)
    return ray.data.from_items(items).map_batches(loader, batch_size=8)


def eval_dataset(root: str, ids: list[str], num_classes: int, mask_folder: str = MASK_DIR) -> ray.data.Dataset:
    items = [{"index": index} for index in range(len(ids))]
    return ray.data.from_items(items).map_batches(EvalSampleLoader(root, ids, num_classes, mask_folder), batch_size=4)
