"""The ADE20K layout (the SceneParsing benchmark's release): ``ADEChallengeData2016/images/{training,validation}/
*.jpg`` with ``annotations/{training,validation}/*.png``; the root may be ``ADEChallengeData2016`` itself or the
folder holding it. Splits ``train`` and ``val`` name ``training`` and ``validation``.

Annotation value 0 is "other" and becomes the ignore label; values 1-150 are the 150 classes, shifted down by one.
"""

from __future__ import annotations

import numpy as np

from deeplab_core.classes import ClassList, lookup_table
from deeplab_core.data.layout import IMAGE_EXTENSIONS, DatasetError, Layout, ListOptions, Sample, SyntheticScene
from deeplab_core.data.listing import check_paired, files_by_key
from deeplab_core.io import decode_mask, encode_jpeg, encode_png, exists, join_uri, read_bytes, write_bytes

RELEASE_DIR, IMAGE_DIR, LABEL_DIR = "ADEChallengeData2016", "images", "annotations"
SPLIT_FOLDERS = {"train": "training", "val": "validation"}

ADE20K_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)
# The benchmark's colours, as its toolkits (mmsegmentation among them) draw the classes.
ADE20K_COLOURS = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80), (140, 140, 140),
    (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70),
    (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3), (0, 102, 200),
    (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220),
    (255, 9, 92), (112, 9, 255), (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10),
    (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140),
    (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0), (0, 0, 255),
    (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255), (11, 200, 200), (255, 82, 0), (0, 255, 245),
    (0, 61, 255), (0, 255, 112), (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0),
    (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0),
    (0, 255, 153), (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194), (0, 255, 82),
    (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255), (0, 255, 163), (255, 153, 0),
    (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170),
    (133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112),
    (92, 255, 0), (0, 224, 255), (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0),
    (255, 0, 163), (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255), (255, 255, 0),
    (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255),
    (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255), (184, 255, 0), (0, 133, 255), (255, 214, 0),
    (25, 194, 194), (102, 255, 0), (92, 0, 255),
)
ADE20K_CLASSES = ClassList(ADE20K_NAMES, ADE20K_COLOURS)
ANNOTATION_TO_CLASS = lookup_table({value: value - 1 for value in range(1, len(ADE20K_NAMES) + 1)})


def release_root(root: str) -> str:
    """``root`` itself, or its ``ADEChallengeData2016`` folder when it holds one."""
    nested = join_uri(root, RELEASE_DIR)
    return nested if exists(nested) else root


def _folder(split: str) -> str:
    return SPLIT_FOLDERS.get(split, split)


def _detect(root: str) -> bool:
    base = release_root(root)
    return any(exists(join_uri(base, IMAGE_DIR, folder)) and exists(join_uri(base, LABEL_DIR, folder))
               for folder in SPLIT_FOLDERS.values())


def _splits(root: str, options: ListOptions) -> list[str]:
    base = release_root(root)
    return [split for split, folder in SPLIT_FOLDERS.items() if exists(join_uri(base, IMAGE_DIR, folder))]


def _list_split(root: str, split: str, options: ListOptions) -> list[Sample]:
    base = release_root(root)
    image_folder, label_folder = join_uri(base, IMAGE_DIR, _folder(split)), join_uri(base, LABEL_DIR, _folder(split))
    if not exists(image_folder):
        raise DatasetError(f"{image_folder} not found (available splits: {_splits(root, options) or 'none'})")
    images = files_by_key(image_folder, IMAGE_EXTENSIONS)
    labels = files_by_key(label_folder, (".png",))
    if not images:
        raise DatasetError(f"{image_folder}: no images found")
    check_paired(images, labels, "annotation", lambda key: join_uri(label_folder, key + ".png"),
                 lambda key: join_uri(image_folder, key) + ".jpg")
    return [Sample(images[key], labels[key], ADE20K.name, key) for key in sorted(images)]


def _read_label(sample: Sample, image_shape: tuple[int, int]) -> np.ndarray:
    annotation = decode_mask(read_bytes(sample.label), sample.label)
    if annotation.max(initial=0) > len(ADE20K_NAMES):
        unknown = np.unique(annotation[annotation > len(ADE20K_NAMES)])
        raise DatasetError(f"{sample.label}: holds values {unknown.tolist()[:5]}, which are no ADE20K classes "
                           f"(0 = other, 1..{len(ADE20K_NAMES)})")
    return np.take(ANNOTATION_TO_CLASS, annotation)


def _write(root: str, splits: dict[str, list[SyntheticScene]], classes: ClassList) -> None:
    base = join_uri(root, RELEASE_DIR)
    for split, scenes in splits.items():
        for scene in scenes:
            name = f"ADE_{split}_{int(scene.key.rsplit('_', 1)[-1]):08d}"
            write_bytes(join_uri(base, IMAGE_DIR, _folder(split), name + ".jpg"), encode_jpeg(scene.image, quality=95))
            write_bytes(join_uri(base, LABEL_DIR, _folder(split), name + ".png"),
                        encode_png((scene.mask.astype(np.uint16) + 1).astype(np.uint8)))


ADE20K = Layout(
    name="ade20k",
    expects="[ADEChallengeData2016/]images/{training,validation}/*.jpg + annotations/{training,validation}/*.png",
    detect=_detect, list_split=_list_split, splits=_splits, classes=lambda root, samples: ADE20K_CLASSES,
    read_label=_read_label, write=_write,
)
