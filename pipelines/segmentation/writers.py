"""The files a segmentation job writes per input, one class per format: a new output format is one more class with
a ``folder`` and a ``write``, handed to ``ManifestWriter``.

Each writes ``<output>/<folder>/<name>`` (``name``: the input's output name, ``pipelines.segmentation.inputs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from deeplab_core.io import encode_palette_png, encode_png, overlay, write_bytes
from pipelines.segmentation.inputs import output_uri

# Class names an overlay leaves undrawn: the scene behind the objects (VOC's, COCO's, labelme's own spellings).
BACKGROUND_NAMES = ("background", "_background_")

MASKS_DIR, OVERLAYS_DIR = "masks", "overlays"


class OutputWriter(Protocol):
    folder: str

    def write(self, output: str, name: str, image: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> str:
        """Write one input's file under ``<output>/<folder>/``; returns its URI. ``image`` and ``labels``: at the
        working size; ``mask``: the labels at the input's own size."""


class MaskWriter:
    """The mask: a palette PNG of class ids at the input's own size (the manifest's ``mask_uri``), each class in its
    colour (the checkpoint's: the dataset's own palette)."""

    folder = MASKS_DIR

    def __init__(self, colours: Sequence[tuple[int, int, int]] = ()) -> None:
        self.colours = tuple(colours)

    def write(self, output: str, name: str, image: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> str:
        uri = output_uri(output, self.folder, name)
        write_bytes(uri, encode_palette_png(mask, self.colours or None))
        return uri


class OverlayWriter:
    """The image with its labels blended in the classes' colours, at the working size (``--overlay``); background
    classes (``BACKGROUND_NAMES``) stay undrawn."""

    folder = OVERLAYS_DIR

    def __init__(self, colours: Sequence[tuple[int, int, int]] = (), class_names: Sequence[str] = ()) -> None:
        self.colours = tuple(colours)
        named = tuple(i for i, name in enumerate(class_names) if name.lower() in BACKGROUND_NAMES)
        self.unblended = named if class_names else (0,)

    def write(self, output: str, name: str, image: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> str:
        uri = output_uri(output, self.folder, name)
        write_bytes(uri, encode_png(overlay(image, labels, colours=self.colours or None, unblended=self.unblended)))
        return uri
