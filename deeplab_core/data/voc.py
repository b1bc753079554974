"""PASCAL VOC-layout segmentation datasets at any URI (local folder, s3://, any fsspec protocol).

Layout: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette or grayscale PNG, values are class
ids, 255 = ignore) and ``ImageSets/Segmentation/<split>.txt`` listing one id per line.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from deeplab_core.io import decode_image, decode_mask, exists, join_uri, list_files, read_bytes, read_text
from deeplab_core.labels import IGNORE_INDEX

IMAGE_DIR, MASK_DIR, SPLIT_DIR = "JPEGImages", "SegmentationClass", "ImageSets/Segmentation"
IMAGE_SUFFIX, MASK_SUFFIX = ".jpg", ".png"
CLASS_NAMES_FILE = "classes.txt"

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


class DatasetError(ValueError):
    """A dataset is malformed: the message names the file and what is wrong with it."""


def image_uri(root: str, sample_id: str) -> str:
    return join_uri(root, IMAGE_DIR, sample_id + IMAGE_SUFFIX)


def mask_uri(root: str, sample_id: str, mask_folder: str = MASK_DIR) -> str:
    """``<root>/<mask_folder>/<id>.png``: ``SegmentationClass`` for VOC, ``SegmentationClassAug`` for its SBD-augmented
    train_aug set."""
    return join_uri(root, mask_folder, sample_id + MASK_SUFFIX)


def read_split(root: str, split: str) -> list[str]:
    """The ids listed in ``ImageSets/Segmentation/<split>.txt``."""
    uri = join_uri(root, SPLIT_DIR, f"{split}.txt")
    if not exists(uri):
        listing = join_uri(root, SPLIT_DIR)
        available = [u.rsplit("/", 1)[-1][:-4] for u in list_files(listing, {".txt"})] if exists(listing) else []
        raise DatasetError(f"{uri} not found (available splits: {available or 'none'}); is {root} a VOC-layout root?")
    ids = [line.strip() for line in read_text(uri).splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"{uri} lists no images")
    return ids


def read_class_names(root: str) -> list[str] | None:
    """Class names from ``<root>/classes.txt`` (one per line, in class-id order) when the dataset has one."""
    uri = join_uri(root, CLASS_NAMES_FILE)
    if not exists(uri):
        return None
    return [line.strip() for line in read_text(uri).splitlines() if line.strip()]


def dataset_classes(root: str, num_classes: int | None = None) -> list[str]:
    """A dataset's class names, in class-id order: its ``classes.txt`` (whose length is the class count when
    ``num_classes`` is None); without one, or when its count differs from ``num_classes``, PASCAL VOC's names for 21
    classes (a VOC-layout dataset without a class list is VOC itself), else the class ids."""
    names = read_class_names(root)
    count = num_classes or (len(names) if names else len(VOC_CLASSES))
    if names and len(names) == count:
        return names
    if count == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    return [str(index) for index in range(count)]


def check_mask(mask: np.ndarray, image_shape: tuple[int, ...], num_classes: int | None, uri: str) -> None:
    """Raise ``DatasetError`` naming ``uri`` when the mask does not fit its image or the class count."""
    if mask.shape != tuple(image_shape[:2]):
        raise DatasetError(f"{uri}: mask is {mask.shape[0]} x {mask.shape[1]} but its image is "
                           f"{image_shape[0]} x {image_shape[1]}")
    if num_classes is not None:
        values = np.unique(mask)
        bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
        if bad.size:
            raise DatasetError(f"{uri}: mask holds class ids {bad.tolist()} but num_classes is {num_classes} "
                               f"(valid: 0..{num_classes - 1}, and {IGNORE_INDEX} = ignore)")


def _file_names(folder: str) -> set[str]:
    return {uri.rsplit("/", 1)[-1] for uri in list_files(folder)} if exists(folder) else set()


def check_files(root: str, ids: list[str], mask_folder: str = MASK_DIR) -> None:
    """Cheap check before any pixel is read: every listed id has its image and its mask."""
    images = _file_names(join_uri(root, IMAGE_DIR))
    if not images:
        raise DatasetError(f"{join_uri(root, IMAGE_DIR)}: no images found")
    masks = _file_names(join_uri(root, mask_folder))
    if not masks:
        raise DatasetError(f"{join_uri(root, mask_folder)}: no masks found (is the mask folder's name right?)")
    for sample_id in ids:
        if sample_id + IMAGE_SUFFIX not in images:
            raise DatasetError(f"{image_uri(root, sample_id)}: image listed in the split but missing")
        if sample_id + MASK_SUFFIX not in masks:
            raise DatasetError(f"{mask_uri(root, sample_id, mask_folder)}: mask missing for listed image {sample_id}")


def read_sample(root: str, sample_id: str, num_classes: int | None = None,
                mask_folder: str = MASK_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Decode one (image, mask) pair, checking that they fit together."""
    image = decode_image(read_bytes(image_uri(root, sample_id)), image_uri(root, sample_id))
    uri = mask_uri(root, sample_id, mask_folder)
    if not exists(uri):
        raise DatasetError(f"{uri}: mask missing for listed image {sample_id}")
    mask = decode_mask(read_bytes(uri), uri)
    check_mask(mask, image.shape, num_classes, uri)
    return image, mask


class VOCSegmentation:
    """Map-style dataset of (image, mask) numpy pairs, usable with a torch ``DataLoader`` or directly."""

    def __init__(self, root: str, split: str = "train", transform: Callable | None = None,
                 num_classes: int | None = None, check: bool = True, mask_folder: str = MASK_DIR) -> None:
        self.root = root
        self.split = split
        self.transform = transform
        self.num_classes = num_classes
        self.mask_folder = mask_folder
        self.ids = read_split(root, split)
        if check:
            check_files(root, self.ids, mask_folder)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, mask = read_sample(self.root, self.ids[index], self.num_classes, self.mask_folder)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask
