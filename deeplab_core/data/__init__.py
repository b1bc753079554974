"""VOC-layout datasets and paired image/mask transforms."""

from deeplab_core.data.transforms import (
    Compose, PadIfSmaller, RandomCrop, RandomHorizontalFlip, RandomScale, eval_transform, resize_pair, train_transform,
)
from deeplab_core.data.voc import (
    MASK_DIR, VOC_CLASSES, DatasetError, VOCSegmentation, check_files, check_mask, dataset_classes, image_uri, mask_uri,
    read_class_names, read_sample, read_split,
)

__all__ = [
    "Compose", "DatasetError", "MASK_DIR", "PadIfSmaller", "RandomCrop", "RandomHorizontalFlip", "RandomScale", "VOCSegmentation",
    "VOC_CLASSES", "check_files", "check_mask", "dataset_classes", "eval_transform", "image_uri", "mask_uri",
    "read_class_names",
    "read_sample", "read_split", "resize_pair", "train_transform",
]
