"""What a segmentation job writes per input, one class per format: a new output format is one more class, handed to
``ManifestWriter``. A writer's ``write`` returns the manifest columns it fills (``columns``, each in
``pipelines.segmentation.manifest.SCHEMA``): a file writer its file's URI (``<output>/<folder>/<name>``, ``name``:
the input's output name, ``pipelines.segmentation.inputs``), the RLE writer the encodings themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from deeplab_core.data.coco import decode_rle as coco_rle_pixels
from deeplab_core.io import encode_palette_png, encode_png, overlay, write_bytes
from pipelines.segmentation.inputs import output_uri

# Class names an overlay leaves undrawn: the scene behind the objects (VOC's, COCO's, labelme's own spellings).
BACKGROUND_NAMES = ("background", "_background_")

MASKS_DIR, OVERLAYS_DIR = "masks", "overlays"
OUTPUT_FORMATS = ("png", "rle", "both")  # --output-format: the mask as a PNG file, as RLE in the manifest, or both


class OutputWriter(Protocol):
    columns: tuple[str, ...]

    def write(self, output: str, name: str, image: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
        """Write one input's output; returns the manifest columns it fills. ``image`` and ``labels``: at the working
        size; ``mask``: the labels at the input's own size."""


class MaskWriter:
    """The mask: a palette PNG of class ids at the input's own size (the manifest's ``mask_uri``), each class in its
    colour (the checkpoint's: the dataset's own palette)."""

    folder, columns = MASKS_DIR, ("mask_uri",)

    def __init__(self, colours: Sequence[tuple[int, int, int]] = ()) -> None:
        self.colours = tuple(colours)

    def write(self, output: str, name: str, image: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
        uri = output_uri(output, self.folder, name)
        write_bytes(uri, encode_palette_png(mask, self.colours or None))
        return {"mask_uri": uri}


class OverlayWriter:
    """The image with its labels blended in the classes' colours, at the working size (``--overlay``); background
    classes (``BACKGROUND_NAMES``) stay undrawn."""

    folder, columns = OVERLAYS_DIR, ("overlay_uri",)

    def __init__(self, colours: Sequence[tuple[int, int, int]] = (), class_names: Sequence[str] = ()) -> None:
        self.colours = tuple(colours)
        named = tuple(i for i, name in enumerate(class_names) if name.lower() in BACKGROUND_NAMES)
        self.unblended = named if class_names else (0,)

    def write(self, output: str, name: str, image: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
        uri = output_uri(output, self.folder, name)
        write_bytes(uri, encode_png(overlay(image, labels, colours=self.colours or None, unblended=self.unblended)))
        return {"overlay_uri": uri}


class RLEWriter:
    """The mask as COCO run-length encodings, one per class present, in the manifest's ``rle`` column: pycocotools'
    compressed ``counts`` strings; with ``size`` = [height, width] (the row's own) ``pycocotools.mask.decode`` gives
    the class's pixels back (``decode_rle``)."""

    columns = ("rle",)

    def write(self, output: str, name: str, image: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
        from pycocotools import mask as coco_mask

        present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
        encodings = coco_mask.encode(np.asfortranarray(mask[..., None] == present.astype(mask.dtype)))
        return {"rle": [{"class_id": int(class_id), "counts": encoding["counts"].decode("ascii")}
                        for class_id, encoding in zip(present, encodings)]}


def decode_rle(rle: Sequence[dict], height: int, width: int) -> np.ndarray:
    """A manifest row's ``rle`` back to the H x W mask of class ids."""
    mask = np.zeros((height, width), np.uint8)
    for entry in rle:
        mask[coco_rle_pixels({"size": [height, width], "counts": entry["counts"]})] = entry["class_id"]
    return mask


def mask_writers(output_format: str, colours: Sequence[tuple[int, int, int]] = ()) -> list[OutputWriter]:
    """The writers of ``--output-format``: ``png`` the palette PNG, ``rle`` the manifest's encodings, ``both``."""
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    return ([MaskWriter(colours)] if output_format in ("png", "both") else []) + (
        [RLEWriter()] if output_format in ("rle", "both") else [])
