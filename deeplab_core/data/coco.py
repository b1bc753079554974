"""The COCO layout: ``annotations/<split>.json`` (or ``instances_<split>.json``) in COCO's instance format, as CVAT,
Label Studio, Roboflow and labelme2coco export it, with the images under ``images/`` (``file_name`` relative to it,
or to ``images/<split>/``).

Classes: background (0), then the categories in id order. Polygons and run-length encodings (compressed or not) are
rasterised with pycocotools. Overlaps: annotations are painted in the file's order, a later one over an earlier one
(the order the annotation tools draw in). ``iscrowd`` regions become the ignore label (255) where no ordinary
annotation covers them. Pixels no annotation covers are background.
"""

from __future__ import annotations

import json
import posixpath
import warnings

import numpy as np

from deeplab_core.classes import ClassList
from deeplab_core.data.layout import DatasetError, Layout, ListOptions, Sample, SyntheticScene
from deeplab_core.data.polygons import check_polygon, clip_polygon, pil_to_corner_coordinates
from deeplab_core.io import encode_jpeg, exists, join_uri, list_files, list_relative, read_text, write_bytes
from deeplab_core.labels import IGNORE_INDEX

IMAGE_DIR, ANNOTATION_DIR = "images", "annotations"
BACKGROUND = "background"


def annotation_uri(root: str, split: str) -> str:
    """``annotations/<split>.json``, else COCO's own ``annotations/instances_<split>.json``."""
    plain = join_uri(root, ANNOTATION_DIR, f"{split}.json")
    if exists(plain):
        return plain
    instances = join_uri(root, ANNOTATION_DIR, f"instances_{split}.json")
    return instances if exists(instances) else plain


def _detect(root: str) -> bool:
    folder = join_uri(root, ANNOTATION_DIR)
    return exists(join_uri(root, IMAGE_DIR)) and exists(folder) and bool(list_files(folder, {".json"}))


def _splits(root: str, options: ListOptions) -> list[str]:
    folder = join_uri(root, ANNOTATION_DIR)
    names = [posixpath.basename(uri)[: -len(".json")] for uri in list_files(folder, {".json"})]
    return sorted(name.removeprefix("instances_") for name in names)


def _load(uri: str) -> dict:
    try:
        document = json.loads(read_text(uri))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{uri}: not readable JSON ({err})") from None
    if not isinstance(document, dict) or not all(isinstance(document.get(k), list) for k in
                                                  ("images", "annotations", "categories")):
        raise DatasetError(f"{uri}: not a COCO instance file (needs the lists 'images', 'annotations', 'categories')")
    return document


def _class_list(document: dict) -> ClassList:
    names = [BACKGROUND] + [str(c["name"]) for c in sorted(document["categories"], key=lambda c: c["id"])]
    return ClassList(tuple(names))


def _class_ids(document: dict) -> dict[int, int]:
    """Category id -> class id (background is 0, the categories follow in id order)."""
    return {c["id"]: index + 1 for index, c in enumerate(sorted(document["categories"], key=lambda c: c["id"]))}


def _list_split(root: str, split: str, options: ListOptions) -> list[Sample]:
    uri = annotation_uri(root, split)
    if not exists(uri):
        raise DatasetError(f"{uri} not found (available splits: {_splits(root, options) or 'none'})")
    document = _load(uri)
    class_ids = _class_ids(document)
    image_folder = join_uri(root, IMAGE_DIR)
    on_disk = list_relative(image_folder) if exists(image_folder) else {}
    images: dict = {}
    for entry in document["images"]:
        name = str(entry.get("file_name", ""))
        relative = name if name in on_disk else f"{split}/{name}"
        if relative not in on_disk:
            raise DatasetError(f"{uri}: image {entry.get('id')} names {name!r}, which is not under {image_folder}")
        images[entry["id"]] = {"uri": on_disk[relative], "key": posixpath.splitext(relative)[0], "width": int(entry["width"]), "height": int(entry["height"]),
                               "annotations": []}
    for annotation in document["annotations"]:
        where = f"{uri}: annotation {annotation.get('id')}"
        image = images.get(annotation.get("image_id"))
        if image is None:
            raise DatasetError(f"{where} names image {annotation.get('image_id')}, which the file does not list")
        if annotation.get("category_id") not in class_ids:
            raise DatasetError(f"{where} names category {annotation.get('category_id')}, which the file does not list")
        segmentation = annotation.get("segmentation")
        if isinstance(segmentation, list):
            for polygon in segmentation:
                check_polygon(polygon, image["width"], image["height"], where)
        elif isinstance(segmentation, dict):
            if list(segmentation.get("size", [])) != [image["height"], image["width"]]:
                raise DatasetError(f"{where}: its run-length encoding is {segmentation.get('size')} (height, width) "
                                   f"but its image is {image['height']} x {image['width']}")
        else:
            raise DatasetError(f"{where} has no polygon or run-length 'segmentation'")
        image["annotations"].append({"class": class_ids[annotation["category_id"]],
                                     "crowd": bool(annotation.get("iscrowd", 0)), "segmentation": segmentation})
    if not images:
        raise DatasetError(f"{uri} lists no images")
    samples = []
    for image in sorted(images.values(), key=lambda image: image["uri"]):
        annotation = json.dumps({k: image[k] for k in ("width", "height", "annotations")}, separators=(",", ":"))
        samples.append(Sample(image["uri"], uri, COCO.name, image["key"], annotation))
    return samples


def _classes(root: str, samples) -> ClassList | None:
    return _class_list(_load(samples[0].label)) if samples else None


def _read_label(sample: Sample, image_shape: tuple[int, int]) -> np.ndarray:
    from pycocotools import mask as coco_mask

    record = json.loads(sample.annotation)
    height, width = record["height"], record["width"]
    if (height, width) != tuple(image_shape[:2]):
        raise DatasetError(f"{sample.label}: {sample.image} is {image_shape[0]} x {image_shape[1]} but the annotations "
                           f"say {height} x {width}")
    label = np.zeros((height, width), np.uint8)
    ordered = [a for a in record["annotations"] if a["crowd"]] + [a for a in record["annotations"] if not a["crowd"]]
    for annotation in ordered:
        segmentation = annotation["segmentation"]
        if isinstance(segmentation, list):
            rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation["counts"], list):
            rle = coco_mask.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
        covered = decode_rle(rle)
        label[covered] = IGNORE_INDEX if annotation["crowd"] else annotation["class"]
    return label


def decode_rle(rle: dict) -> np.ndarray:
    """A COCO run-length encoding (``size`` and compressed ``counts``) as an H x W boolean mask, by pycocotools."""
    from pycocotools import mask as coco_mask

    with warnings.catch_warnings():  # pycocotools 2.0's decode warns of NumPy 2's copy keyword, harmlessly
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode(rle).astype(bool)


def _write(root: str, splits: dict[str, list[SyntheticScene]], classes: ClassList) -> None:
    categories = [{"id": index, "name": name, "supercategory": ""} for index, name in enumerate(classes.names)
                  if index > 0]
    next_id = 1
    for split, scenes in splits.items():
        images, annotations = [], []
        for number, scene in enumerate(scenes, start=1):
            height, width = scene.mask.shape
            name = f"{scene.key}.jpg"
            write_bytes(join_uri(root, IMAGE_DIR, name), encode_jpeg(scene.image, quality=95))
            images.append({"id": number, "file_name": name, "width": width, "height": height})
            for class_id, kind, points in scene.shapes:
                polygon = clip_polygon(pil_to_corner_coordinates(kind, points), width, height)
                if len(polygon) < 3 or class_id == 0:
                    continue
                flat = [round(v, 2) for point in polygon for v in point]
                xs, ys = flat[0::2], flat[1::2]
                annotations.append({"id": next_id, "image_id": number, "category_id": class_id, "iscrowd": 0,
                                    "segmentation": [flat], "area": 0.0,
                                    "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]})
                next_id += 1
        document = {"images": images, "annotations": annotations, "categories": categories}
        write_bytes(join_uri(root, ANNOTATION_DIR, f"{split}.json"), json.dumps(document).encode())


COCO = Layout(
    name="coco",
    expects="annotations/<split>.json (COCO instances) + images/<file_name>",
    detect=_detect, list_split=_list_split, splits=_splits, classes=_classes, read_label=_read_label, write=_write,
)
