"""The files a segmentation job writes per input, one class per format: a new output format is one more class with
a ``folder`` and a ``write``, handed to ``ManifestWriter``.

Each writes ``<output>/<folder>/<name>`` (``name``: the input's output name, ``pipelines.segmentation.inputs``).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from deeplab_core.io import encode_palette_png, encode_png, overlay, write_bytes
from pipelines.segmentation.inputs import output_uri

MASKS_DIR, OVERLAYS_DIR = "masks", "overlays"


class OutputWriter(Protocol):
    folder: str

    def write(self, output: str, name: str, image: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> str:
        """Write one input's file under ``<output>/<folder>/``; returns its URI. ``image`` and ``labels``: at the
        working size; ``mask``: the labels at the input's own size."""


class MaskWriter:
    """The mask: a palette PNG of class ids at the input's own size (the manifest's ``mask_uri``)."""

    folder = MASKS_DIR

    def write(self, output: str, name: str, image: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> str:
        uri = output_uri(output, self.folder, name)
        write_bytes(uri, encode_palette_png(mask))
        return uri


class OverlayWriter:
    """The image with its labels blended in colour, at the working size (``--overlay``)."""

    folder = OVERLAYS_DIR

    def write(self, output: str, name: str, image: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> str:
        uri = output_uri(output, self.folder, name)
        write_bytes(uri, encode_png(overlay(image, labels)))
        return uri
