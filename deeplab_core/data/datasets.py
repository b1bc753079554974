"""Open a labelled dataset as it lies: detect its layout (or take the one named), list a split's samples, name its
classes; and read one sample as (image, class-id mask), checked.

    data = open_dataset("s3://bucket/cityscapes", "train")        # layout detected: cityscapes
    image, mask = read_sample(data.samples[0], len(data.classes))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deeplab_core.data.ade20k import ADE20K
from deeplab_core.data.cityscapes import CITYSCAPES
from deeplab_core.classes import ClassList
from deeplab_core.data.coco import COCO
from deeplab_core.data.labelme import LABELME
from deeplab_core.data.layout import DatasetError, Layout, ListOptions, Sample
from deeplab_core.data.pairs import PAIRS
from deeplab_core.data.voc import VOC, VOC_CLASSES, check_mask
from deeplab_core.io import decode_image, exists, read_bytes

# In the order detection tries them: layouts told by their folders first, labelme (any .json files) last.
LAYOUTS: tuple[Layout, ...] = (VOC, CITYSCAPES, ADE20K, PAIRS, COCO, LABELME)
LAYOUT_NAMES = tuple(layout.name for layout in LAYOUTS)


def layout_named(name: str) -> Layout:
    for layout in LAYOUTS:
        if layout.name == name:
            return layout
    raise ValueError(f"unknown dataset layout {name!r}; known: {', '.join(LAYOUT_NAMES)}")


def layouts_help() -> str:
    """One line: each layout and what it expects."""
    return "; ".join(f"{layout.name}: {layout.expects}" for layout in LAYOUTS)


def detect_layout(root: str) -> Layout:
    """The one layout ``root`` looks like; a ``DatasetError`` naming what each expects when none or several fit."""
    if not exists(root):
        raise DatasetError(f"{root}: no such folder or prefix")
    found = [layout for layout in LAYOUTS if layout is not LABELME and layout.detect(root)]
    if not found and LABELME.detect(root):
        found = [LABELME]
    if len(found) == 1:
        return found[0]
    if not found:
        raise DatasetError(f"{root}: no dataset layout recognised; pass --layout, one of: {layouts_help()}")
    raise DatasetError(f"{root} looks like several layouts ({', '.join(layout.name for layout in found)}); pass "
                       f"--layout to say which")


@dataclass(frozen=True)
class LabelledData:
    """One split of a dataset: its root, layout, samples and classes (``len(classes)`` is the class count)."""

    root: str
    layout: str
    split: str
    samples: tuple[Sample, ...]
    classes: ClassList

    def __len__(self) -> int:
        return len(self.samples)


def open_dataset(root: str, split: str, layout: str | None = None, num_classes: int | None = None,
                 options: ListOptions = ListOptions()) -> LabelledData:
    """List ``split`` of the dataset at ``root`` (``layout`` detected when None) without reading a pixel.

    Classes: the dataset's own (Cityscapes', ADE20K's, a ``classes.txt``, COCO's categories, labelme's labels).
    A dataset naming none takes ``num_classes`` (PASCAL VOC's names for 21, else the ids; 21 without it). A VOC
    dataset whose ``classes.txt`` does not fit ``num_classes`` takes the ids, as before; any other refuses."""
    chosen = layout_named(layout) if layout else detect_layout(root)
    if layout and not chosen.detect(root):
        raise DatasetError(f"{root} is not laid out as --layout {layout} expects: {chosen.expects}")
    samples = chosen.list_split(root, split, options)
    if not samples:
        raise DatasetError(f"{root}: split {split!r} holds no samples")
    classes = chosen.classes(root, samples)
    if classes is None:
        count = num_classes or len(VOC_CLASSES)
        classes = ClassList(VOC_CLASSES) if count == len(VOC_CLASSES) else ClassList.numbered(count)
    elif num_classes is not None and num_classes != len(classes):
        if chosen is not VOC:
            raise DatasetError(f"{root} ({chosen.name}) has {len(classes)} classes ({', '.join(classes.names[:5])}"
                               f"{', ...' if len(classes) > 5 else ''}) but {num_classes} are expected (the model's "
                               f"or --num-classes)")
        classes = ClassList.numbered(num_classes)
    return LabelledData(root, chosen.name, split, tuple(samples), classes)


def read_label(sample: Sample, image_shape: tuple[int, ...], num_classes: int | None = None) -> np.ndarray:
    """A sample's label as class ids (255 = ignore), checked against its image's size and the class count."""
    try:
        mask = layout_named(sample.layout).read_label(sample, tuple(image_shape[:2]))
    except FileNotFoundError:
        raise DatasetError(f"{sample.label}: label missing for image {sample.image}") from None
    check_mask(mask, image_shape, num_classes, sample.label)
    return mask


def read_sample(sample: Sample, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode one sample's image and label, checking that they fit together and the class count."""
    try:
        data = read_bytes(sample.image)
    except FileNotFoundError:
        raise DatasetError(f"{sample.image}: image missing (listed by {sample.label})") from None
    image = decode_image(data, sample.image)
    return image, read_label(sample, image.shape, num_classes)
