"""The PASCAL VOC layout at any URI (local folder, s3://, any fsspec protocol).

Layout: ``JPEGImages/<id>.<ext>`` (any common image extension; VOC's own are .jpg), ``SegmentationClass/<id>.png``
(palette or grayscale PNG, values are class ids, 255 = ignore) and ``ImageSets/Segmentation/<split>.txt`` listing
one id per line; an optional ``classes.txt``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from deeplab_core.classes import CLASS_NAMES_FILE, ClassList, read_class_file
from deeplab_core.data.layout import IMAGE_EXTENSIONS, DatasetError, Layout, ListOptions, Sample, SyntheticScene
from deeplab_core.data.listing import files_by_key
from deeplab_core.io import (
    decode_image, decode_mask, encode_jpeg, encode_palette_png, exists, join_uri, list_files, read_bytes, read_text,
    write_bytes,
)
from deeplab_core.labels import IGNORE_INDEX

IMAGE_DIR, MASK_DIR, SPLIT_DIR = "JPEGImages", "SegmentationClass", "ImageSets/Segmentation"
IMAGE_SUFFIX, MASK_SUFFIX = ".jpg", ".png"

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


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
    classes = read_class_file(root)
    return list(classes.names) if classes else None


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
        values = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))  # np.unique's sort costs 4x more
        bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
        if bad.size:
            raise DatasetError(f"{uri}: mask holds class ids {bad.tolist()} but num_classes is {num_classes} "
                               f"(valid: 0..{num_classes - 1}, and {IGNORE_INDEX} = ignore)")


def _images_by_id(root: str) -> dict[str, str]:
    return files_by_key(join_uri(root, IMAGE_DIR), IMAGE_EXTENSIONS)


def check_files(root: str, ids: list[str], mask_folder: str = MASK_DIR) -> dict[str, str]:
    """Cheap check before any pixel is read: every listed id has its image and its mask. Returns each id's image URI
    (whatever its extension)."""
    images = _images_by_id(root)
    if not images:
        raise DatasetError(f"{join_uri(root, IMAGE_DIR)}: no images found")
    masks_folder = join_uri(root, mask_folder)
    masks = {uri.rsplit("/", 1)[-1] for uri in list_files(masks_folder)} if exists(masks_folder) else set()
    if not masks:
        raise DatasetError(f"{masks_folder}: no masks found (is the mask folder's name right?)")
    for sample_id in ids:
        if sample_id not in images:
            raise DatasetError(f"{image_uri(root, sample_id)}: image listed in the split but missing")
        if sample_id + MASK_SUFFIX not in masks:
            raise DatasetError(f"{mask_uri(root, sample_id, mask_folder)}: mask missing for listed image {sample_id}")
    return {sample_id: images[sample_id] for sample_id in ids}


def read_sample(root: str, sample_id: str, num_classes: int | None = None,
                mask_folder: str = MASK_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Decode one (image, mask) pair, checking that they fit together."""
    image_file = image_uri(root, sample_id)
    try:
        data = read_bytes(image_file)
    except FileNotFoundError:  # not VOC's own .jpg: whichever image extension the id has
        image_file = _images_by_id(root).get(sample_id, image_file)
        data = read_bytes(image_file)
    image = decode_image(data, image_file)
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


def _detect(root: str) -> bool:
    return exists(join_uri(root, SPLIT_DIR)) or exists(join_uri(root, IMAGE_DIR))


def _list_split(root: str, split: str, options: ListOptions) -> list[Sample]:
    ids = read_split(root, split)
    images = check_files(root, ids, options.mask_folder)
    return [Sample(images[i], mask_uri(root, i, options.mask_folder), VOC.name, i) for i in ids]


def _splits(root: str, options: ListOptions) -> list[str]:
    listing = join_uri(root, SPLIT_DIR)
    return [u.rsplit("/", 1)[-1][:-4] for u in list_files(listing, {".txt"})] if exists(listing) else []


def _classes(root: str, samples) -> ClassList | None:
    return read_class_file(root)


def _read_label(sample: Sample, image_shape: tuple[int, int]) -> np.ndarray:
    try:
        data = read_bytes(sample.label)
    except FileNotFoundError:
        raise DatasetError(f"{sample.label}: mask missing for listed image {sample.key}") from None
    return decode_mask(data, sample.label)


def _write(root: str, splits: dict[str, list[SyntheticScene]], classes: ClassList) -> None:
    for scenes in splits.values():
        for scene in scenes:
            write_bytes(image_uri(root, scene.key), encode_jpeg(scene.image, quality=95))
            write_bytes(mask_uri(root, scene.key), encode_palette_png(scene.mask, classes.colours))
    for split, scenes in splits.items():
        write_bytes(join_uri(root, SPLIT_DIR, f"{split}.txt"), ("\n".join(s.key for s in scenes) + "\n").encode())
    write_bytes(join_uri(root, CLASS_NAMES_FILE), ("\n".join(classes.names) + "\n").encode())


VOC = Layout(
    name="voc",
    expects="JPEGImages/<id>.jpg + SegmentationClass/<id>.png + ImageSets/Segmentation/<split>.txt",
    detect=_detect, list_split=_list_split, splits=_splits, classes=_classes, read_label=_read_label, write=_write,
)
