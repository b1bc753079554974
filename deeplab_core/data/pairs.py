"""The pairs layout: two folders, ``images/`` and ``masks/``, matched by relative path without extension.

    images/<any/nested/path>/<name>.<jpg|png|...>     masks/<any/nested/path>/<name>.png   (class ids, 255 = ignore)
    classes.txt                                       line i names class i (optionally ``name r g b``)
    splits/<name>.txt                                 optional: keys (relative paths without extension), one a line

Without ``splits/``, every pair is in ``train`` and ``--val-fraction`` holds a seeded share out as ``val``.
"""

from __future__ import annotations

import numpy as np

from deeplab_core.classes import CLASS_NAMES_FILE, ClassList, read_class_file
from deeplab_core.data.layout import IMAGE_EXTENSIONS, DatasetError, Layout, ListOptions, Sample, SyntheticScene
from deeplab_core.data.listing import SPLITS_DIR, check_paired, files_by_key, free_splits, split_keys
from deeplab_core.io import decode_mask, encode_jpeg, encode_palette_png, exists, join_uri, read_bytes, write_bytes

IMAGE_DIR, MASK_DIR = "images", "masks"


def _detect(root: str) -> bool:
    return exists(join_uri(root, IMAGE_DIR)) and exists(join_uri(root, MASK_DIR))


def _list_split(root: str, split: str, options: ListOptions) -> list[Sample]:
    image_folder, mask_folder = join_uri(root, IMAGE_DIR), join_uri(root, MASK_DIR)
    images = files_by_key(image_folder, IMAGE_EXTENSIONS)
    masks = files_by_key(mask_folder, (".png",))
    if not images:
        raise DatasetError(f"{image_folder}: no images found (extensions {', '.join(IMAGE_EXTENSIONS)})")
    check_paired(images, masks, "mask", lambda key: join_uri(mask_folder, key + ".png"),
                 lambda key: join_uri(image_folder, key) + ".<ext>")
    keys = split_keys(root, split, images, options, "pair")
    return [Sample(images[key], masks[key], PAIRS.name, key) for key in keys]


def _classes(root: str, samples) -> ClassList | None:
    return read_class_file(root)


def _read_label(sample: Sample, image_shape: tuple[int, int]) -> np.ndarray:
    return decode_mask(read_bytes(sample.label), sample.label)


def _write(root: str, splits: dict[str, list[SyntheticScene]], classes: ClassList) -> None:
    for split, scenes in splits.items():
        for scene in scenes:
            key = f"{split}/{scene.key}"  # nested folders, as users keep them
            write_bytes(join_uri(root, IMAGE_DIR, key + ".jpg"), encode_jpeg(scene.image, quality=95))
            write_bytes(join_uri(root, MASK_DIR, key + ".png"), encode_palette_png(scene.mask, classes.colours))
        write_bytes(join_uri(root, SPLITS_DIR, f"{split}.txt"),
                    "".join(f"{split}/{scene.key}\n" for scene in scenes).encode())
    lines = (f"{name} {r} {g} {b}" for name, (r, g, b) in zip(classes.names, classes.colours))
    write_bytes(join_uri(root, CLASS_NAMES_FILE), ("\n".join(lines) + "\n").encode())


PAIRS = Layout(
    name="pairs",
    expects="images/**/<name>.<ext> + masks/**/<name>.png (+ classes.txt, splits/<split>.txt)",
    detect=_detect, list_split=_list_split, splits=free_splits, classes=_classes, read_label=_read_label,
    write=_write,
)
