"""What every dataset layout is: a small value that finds a split's samples under a root, reads a sample's label as
class ids, names the classes, and writes a synthetic dataset the way the layout's own tools do.

Each layout is one module (``voc``, ``cityscapes``, ``ade20k``, ``pairs``, ``coco``, ``labelme``) holding one
``Layout``; ``deeplab_core.data.datasets`` lists them and opens a root with the right one. A ``Sample`` is plain
strings, so Ray Data rows carry it and a read task turns it into pixels: the mapping of stored values to class ids
and the rasterising of polygons happen there, never in the training loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from deeplab_core.classes import ClassList

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DatasetError(ValueError):
    """A dataset is malformed: the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class Sample:
    """One labelled image: its URI, its label's URI (a mask, or the annotation file holding its polygons), the
    layout that reads the label, a key naming it within its dataset (its id, or its path without extension), and
    for layouts that keep every image's annotations in one file (COCO), this image's share of it as JSON."""

    image: str
    label: str
    layout: str
    key: str
    annotation: str = ""


@dataclass(frozen=True)
class ListOptions:
    """How a layout lists a split: the VOC mask folder; for layouts without split files, the share of samples held
    out as ``val`` (chosen with a fixed seed, so that training and evaluation agree on it)."""

    mask_folder: str = "SegmentationClass"
    val_fraction: float = 0.0


@dataclass(frozen=True)
class SyntheticScene:
    """One generated scene, as ``deeplab_core.synthetic`` draws it: the image, its class-id mask, and the shapes in
    drawing order (``(class id, kind, points)``: kind ``polygon`` with its vertices, or ``rectangle`` with two
    corners, in PIL's pixel-centre coordinates) for layouts that store polygons."""

    key: str
    image: np.ndarray
    mask: np.ndarray
    shapes: tuple[tuple[int, str, tuple[tuple[float, float], ...]], ...] = field(default=())


@dataclass(frozen=True)
class Layout:
    """A dataset layout.

    ``detect(root)``: whether ``root`` looks like this layout (a cheap look at its folders);
    ``list_split(root, split, options)``: the split's samples, checked for missing files without reading pixels;
    ``splits(root, options)``: the split names ``root`` offers;
    ``classes(root, samples)``: the dataset's classes (None: the layout names none and ``--num-classes`` decides);
    ``read_label(sample, image_shape)``: the label as an H x W uint8 array of class ids (255 = ignore);
    ``write(root, splits, classes)``: a synthetic dataset, the way the layout's tools write one.
    """

    name: str
    expects: str  # its folder tree in one line, for errors and help
    detect: Callable[[str], bool]
    list_split: Callable[[str, str, ListOptions], list[Sample]]
    splits: Callable[[str, ListOptions], list[str]]
    classes: Callable[[str, Sequence[Sample]], ClassList | None]
    read_label: Callable[[Sample, tuple[int, int]], np.ndarray]
    write: Callable[[str, dict[str, list[SyntheticScene]], ClassList], None]
