"""The labelme layout: images with labelme's own ``.json`` beside each (anywhere under the root).

Each JSON's ``imagePath`` names its image, relative to the JSON's folder; its ``shapes`` (``polygon``,
``rectangle``, ``circle``) are drawn in the file's order, a later shape over an earlier one, the way labelme's own
``labelme2voc`` draws them (PIL, pixel-centre coordinates). Classes: ``classes.txt`` (labelme's ``labels.txt``
convention: a first line ``__ignore__`` is skipped); without one, background (0) then every label found, sorted.
Shapes labelled ``__ignore__`` become the ignore label. Splits: ``splits/<name>.txt`` (keys: the JSON paths without
extension), else every image is in ``train`` and ``--val-fraction`` holds a seeded share out as ``val``.
"""

from __future__ import annotations

import json
import posixpath

import numpy as np
from PIL import Image, ImageDraw

from deeplab_core.classes import CLASS_NAMES_FILE, ClassList, read_class_file
from deeplab_core.data.layout import DatasetError, Layout, ListOptions, Sample, SyntheticScene
from deeplab_core.data.listing import SPLITS_DIR, free_splits, read_many, split_keys
from deeplab_core.data.polygons import check_points, clip_polygon
from deeplab_core.io import encode_jpeg, exists, join_uri, list_relative, write_bytes
from deeplab_core.labels import IGNORE_INDEX

IGNORE_LABEL, BACKGROUND = "__ignore__", "background"
SHAPE_TYPES = ("polygon", "rectangle", "circle")


def _annotation_files(root: str, listing: dict[str, str] | None = None) -> dict[str, str]:
    """``{path relative to root: URI}`` of the labelme JSONs under ``root`` (``listing``: its files, if known)."""
    listing = listing if listing is not None else (list_relative(root) if exists(root) else {})
    return {relative: uri for relative, uri in listing.items()
            if relative.lower().endswith(".json") and not relative.startswith(SPLITS_DIR + "/")}


def _detect(root: str) -> bool:
    files = list(_annotation_files(root).values())
    if not files:
        return False
    try:
        first = json.loads(read_many(files[:1])[files[0]])
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(first, dict) and "shapes" in first and "imagePath" in first


def _documents(root: str, listing: dict[str, str] | None = None) -> dict[str, dict]:
    """Every labelme JSON under ``root``, parsed, by URI (read concurrently on object stores)."""
    documents = {}
    for uri, data in read_many(list(_annotation_files(root, listing).values())).items():
        try:
            document = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DatasetError(f"{uri}: not readable JSON ({err})") from None
        if not isinstance(document, dict) or not isinstance(document.get("shapes"), list) or "imagePath" not in document:
            raise DatasetError(f"{uri}: not a labelme file (needs 'shapes' and 'imagePath')")
        documents[uri] = document
    if not documents:
        raise DatasetError(f"{root}: no labelme .json files found")
    return documents


def _class_list(root: str, documents: dict[str, dict]) -> ClassList:
    given = read_class_file(root)
    if given is not None:
        keep = [i for i, name in enumerate(given.names) if name != IGNORE_LABEL]
        return ClassList(tuple(given.names[i] for i in keep), tuple(given.colours[i] for i in keep))
    labels = {str(shape.get("label")) for document in documents.values() for shape in document["shapes"]}
    return ClassList((BACKGROUND, *sorted(labels - {IGNORE_LABEL, BACKGROUND})))


def _list_split(root: str, split: str, options: ListOptions) -> list[Sample]:
    listing = list_relative(root)
    relative_of = {uri: relative for relative, uri in listing.items()}
    documents = _documents(root, listing)
    classes = _class_list(root, documents)
    class_ids = {name: index for index, name in enumerate(classes.names)} | {IGNORE_LABEL: IGNORE_INDEX}
    by_key: dict[str, Sample] = {}
    for uri, document in documents.items():
        image_path = posixpath.normpath(posixpath.join(posixpath.dirname(relative_of[uri]),
                                                       str(document["imagePath"]).replace("\\", "/")))
        if image_path not in listing:
            raise DatasetError(f"{uri}: its imagePath {document['imagePath']!r} names {join_uri(root, image_path)}, "
                               "which does not exist")
        image = listing[image_path]
        width, height = int(document.get("imageWidth", 0)), int(document.get("imageHeight", 0))
        shapes = []
        for number, shape in enumerate(document["shapes"]):
            where = f"{uri}: shape {number} ({shape.get('label')!r})"
            kind = shape.get("shape_type") or "polygon"
            if kind not in SHAPE_TYPES:
                raise DatasetError(f"{where} is a {kind}; segmentation reads {', '.join(SHAPE_TYPES)}")
            label = str(shape.get("label"))
            if label not in class_ids:
                raise DatasetError(f"{where}: label {label!r} is not among the classes of "
                                   f"{join_uri(root, CLASS_NAMES_FILE)} ({', '.join(classes.names)})")
            points = shape.get("points") or []
            if len(points) < {"polygon": 3, "rectangle": 2, "circle": 2}[kind]:
                raise DatasetError(f"{where}: a {kind} with {len(points)} points")
            check_points(points, width, height, where)
            shapes.append({"class": class_ids[label], "kind": kind, "points": points})
        key = relative_of[uri][: -len(".json")]
        annotation = json.dumps({"width": width, "height": height, "shapes": shapes}, separators=(",", ":"))
        by_key[key] = Sample(image, uri, LABELME.name, key, annotation)
    return [by_key[key] for key in split_keys(root, split, by_key, options, "labelme JSON")]


def _classes(root: str, samples) -> ClassList:
    given = read_class_file(root)
    return _class_list(root, {} if given is not None else _documents(root))


def _read_label(sample: Sample, image_shape: tuple[int, int]) -> np.ndarray:
    record = json.loads(sample.annotation)
    if (record["height"], record["width"]) != tuple(image_shape[:2]):
        raise DatasetError(f"{sample.label}: {sample.image} is {image_shape[0]} x {image_shape[1]} but the JSON says "
                           f"{record['height']} x {record['width']}")
    canvas = Image.new("L", (record["width"], record["height"]), 0)
    draw = ImageDraw.Draw(canvas)
    for shape in record["shapes"]:
        value, points = shape["class"], [tuple(point) for point in shape["points"]]
        if shape["kind"] == "polygon":
            draw.polygon(points, outline=value, fill=value)
        elif shape["kind"] == "rectangle":
            (x0, y0), (x1, y1) = points[:2]
            draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=value, fill=value)
        else:  # circle: the centre, then a point on the rim
            (cx, cy), (px, py) = points[:2]
            radius = float(np.hypot(px - cx, py - cy))
            draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=value, fill=value)
    return np.asarray(canvas, dtype=np.uint8).copy()


def _write(root: str, splits: dict[str, list[SyntheticScene]], classes: ClassList) -> None:
    for split, scenes in splits.items():
        for scene in scenes:
            height, width = scene.mask.shape
            shapes = []
            for class_id, kind, points in scene.shapes:
                if kind == "rectangle":
                    corners = [[min(max(v, 0.0), limit - 1.0) for v, limit in zip(p, (width, height))] for p in points]
                    shapes.append({"label": classes.names[class_id], "points": corners, "shape_type": "rectangle",
                                   "group_id": None, "flags": {}})
                    continue
                polygon = clip_polygon(points, width, height, origin=-0.5)
                if len(polygon) >= 3:
                    shapes.append({"label": classes.names[class_id],
                                   "points": [[round(x, 2), round(y, 2)] for x, y in polygon],
                                   "shape_type": "polygon", "group_id": None, "flags": {}})
            document = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": f"{scene.key}.jpg",
                        "imageData": None, "imageHeight": height, "imageWidth": width}
            write_bytes(join_uri(root, f"{scene.key}.jpg"), encode_jpeg(scene.image, quality=95))
            write_bytes(join_uri(root, f"{scene.key}.json"), json.dumps(document, indent=1).encode())
        write_bytes(join_uri(root, SPLITS_DIR, f"{split}.txt"), "".join(f"{s.key}\n" for s in scenes).encode())


LABELME = Layout(
    name="labelme",
    expects="<name>.json (labelme: shapes + imagePath) beside each image (+ classes.txt, splits/<split>.txt)",
    detect=_detect, list_split=_list_split, splits=free_splits, classes=_classes, read_label=_read_label,
    write=_write,
)
