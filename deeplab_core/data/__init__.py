"""Labelled datasets as they lie (VOC, Cityscapes, ADE20K, image/mask pairs, COCO, labelme) and paired image/mask
transforms."""

from deeplab_core.classes import ClassList, parse_class_file
from deeplab_core.data.datasets import (
    LAYOUT_NAMES, LAYOUTS, LabelledData, detect_layout, layout_named, layouts_help, open_dataset, read_label,
)
from deeplab_core.data.datasets import read_sample as read_labelled_sample
from deeplab_core.data.layout import DatasetError, Layout, ListOptions, Sample
from deeplab_core.data.transforms import (
    Compose, PadIfSmaller, RandomCrop, RandomHorizontalFlip, RandomScale, eval_transform, resize_pair, train_transform,
)
from deeplab_core.data.voc import (
    MASK_DIR, VOC_CLASSES, VOCSegmentation, check_files, check_mask, dataset_classes, image_uri, mask_uri,
    read_class_names, read_sample, read_split,
)

__all__ = [
    "ClassList", "Compose", "DatasetError", "LAYOUTS", "LAYOUT_NAMES", "LabelledData", "Layout", "ListOptions",
    "MASK_DIR", "PadIfSmaller", "RandomCrop", "RandomHorizontalFlip", "RandomScale", "Sample", "VOCSegmentation",
    "VOC_CLASSES", "check_files", "check_mask", "dataset_classes", "detect_layout", "eval_transform", "image_uri",
    "layout_named", "layouts_help", "mask_uri", "open_dataset", "parse_class_file", "read_class_names",
    "read_label", "read_labelled_sample", "read_sample", "read_split", "resize_pair", "train_transform",
]
