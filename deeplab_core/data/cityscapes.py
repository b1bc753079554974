"""The Cityscapes layout: ``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` with
``gtFine/<split>/<city>/<name>_gtFine_labelIds.png``, as the dataset ships.

The label files hold Cityscapes' label ids; training uses its 19 train ids (road ... bicycle), every other id
(0-6 unlabeled ... ground, parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer, and the
license plate's -1) becoming the ignore label, as the official ``cityscapesscripts/helpers/labels.py`` table says.
The files beside the labels (``_color.png``, ``_instanceIds.png``, ``_polygons.json``) are not read.
"""

from __future__ import annotations

import numpy as np

from deeplab_core.classes import ClassList, lookup_table
from deeplab_core.data.layout import DatasetError, Layout, ListOptions, Sample, SyntheticScene
from deeplab_core.data.listing import check_paired, files_by_key
from deeplab_core.io import decode_mask, encode_png, exists, join_uri, list_files, read_bytes, write_bytes

IMAGE_DIR, LABEL_DIR = "leftImg8bit", "gtFine"
IMAGE_SUFFIX, LABEL_SUFFIX = "_leftImg8bit", "_gtFine_labelIds"

# (label id, train id, name, colour) of the 19 classes Cityscapes trains and evaluates on.
TRAIN_CLASSES = (
    (7, 0, "road", (128, 64, 128)),
    (8, 1, "sidewalk", (244, 35, 232)),
    (11, 2, "building", (70, 70, 70)),
    (12, 3, "wall", (102, 102, 156)),
    (13, 4, "fence", (190, 153, 153)),
    (17, 5, "pole", (153, 153, 153)),
    (19, 6, "traffic light", (250, 170, 30)),
    (20, 7, "traffic sign", (220, 220, 0)),
    (21, 8, "vegetation", (107, 142, 35)),
    (22, 9, "terrain", (152, 251, 152)),
    (23, 10, "sky", (70, 130, 180)),
    (24, 11, "person", (220, 20, 60)),
    (25, 12, "rider", (255, 0, 0)),
    (26, 13, "car", (0, 0, 142)),
    (27, 14, "truck", (0, 0, 70)),
    (28, 15, "bus", (0, 60, 100)),
    (31, 16, "train", (0, 80, 100)),
    (32, 17, "motorcycle", (0, 0, 230)),
    (33, 18, "bicycle", (119, 11, 32)),
)
CITYSCAPES_CLASSES = ClassList(tuple(name for _, _, name, _ in TRAIN_CLASSES),
                               tuple(colour for _, _, _, colour in TRAIN_CLASSES))
LABEL_TO_TRAIN_ID = lookup_table({label_id: train_id for label_id, train_id, _, _ in TRAIN_CLASSES})
MAX_LABEL_ID = 33  # bicycle; the table's ids run 0..33 (and -1, the licence plate, which no label file stores)
TRAIN_TO_LABEL_ID = np.array([label_id for label_id, _, _, _ in TRAIN_CLASSES], np.uint8)


def _detect(root: str) -> bool:
    return exists(join_uri(root, IMAGE_DIR)) and exists(join_uri(root, LABEL_DIR))


def _splits(root: str, options: ListOptions) -> list[str]:
    folder = join_uri(root, IMAGE_DIR)
    return sorted({uri[len(folder) + 1:].split("/", 1)[0] for uri in list_files(folder, {".png"})})


def _list_split(root: str, split: str, options: ListOptions) -> list[Sample]:
    image_folder, label_folder = join_uri(root, IMAGE_DIR, split), join_uri(root, LABEL_DIR, split)
    if not exists(image_folder):
        raise DatasetError(f"{image_folder} not found (available splits: {_splits(root, options) or 'none'})")
    images = files_by_key(image_folder, (".png",), IMAGE_SUFFIX)
    labels = files_by_key(label_folder, (".png",), LABEL_SUFFIX)
    if not images:
        raise DatasetError(f"{image_folder}: no *{IMAGE_SUFFIX}.png images found")
    check_paired(images, labels, "label", lambda key: join_uri(label_folder, key + LABEL_SUFFIX + ".png"),
                 lambda key: join_uri(image_folder, key + IMAGE_SUFFIX + ".png"))
    return [Sample(images[key], labels[key], CITYSCAPES.name, key) for key in sorted(images)]


def _read_label(sample: Sample, image_shape: tuple[int, int]) -> np.ndarray:
    label_ids = decode_mask(read_bytes(sample.label), sample.label)
    if label_ids.max(initial=0) > MAX_LABEL_ID:
        unknown = np.unique(label_ids[label_ids > MAX_LABEL_ID])
        raise DatasetError(f"{sample.label}: holds values {unknown.tolist()[:5]}, which are no Cityscapes label ids "
                           f"(0..{MAX_LABEL_ID}); is it a *{LABEL_SUFFIX}.png file?")
    return np.take(LABEL_TO_TRAIN_ID, label_ids)


def _write(root: str, splits: dict[str, list[SyntheticScene]], classes: ClassList) -> None:
    for split, scenes in splits.items():
        for scene in scenes:
            name = f"synthetic/synthetic_000000_{int(scene.key.rsplit('_', 1)[-1]):06d}"
            write_bytes(join_uri(root, IMAGE_DIR, split, name + IMAGE_SUFFIX + ".png"), encode_png(scene.image))
            write_bytes(join_uri(root, LABEL_DIR, split, name + LABEL_SUFFIX + ".png"),
                        encode_png(TRAIN_TO_LABEL_ID[scene.mask]))


CITYSCAPES = Layout(
    name="cityscapes",
    expects="leftImg8bit/<split>/<city>/*_leftImg8bit.png + gtFine/<split>/<city>/*_gtFine_labelIds.png",
    detect=_detect, list_split=_list_split, splits=_splits, classes=lambda root, samples: CITYSCAPES_CLASSES,
    read_label=_read_label, write=_write,
)
