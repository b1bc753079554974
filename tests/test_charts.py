"""The pictures: PNGs that decode, one panel per confusion matrix, curves with and without values yet."""

import io

import numpy as np
from PIL import Image

from deeplab_core.metrics import ConfusionMatrix
from pipelines.common.charts import render_confusion_matrices, render_curves


def _size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def test_confusion_matrices_are_drawn_side_by_side_with_full_class_names():
    names = ["background", "a rather long class name", "bird"]
    matrix = ConfusionMatrix(3, np.array([[90, 5, 5], [10, 80, 10], [0, 0, 100]]))
    one = _size(render_confusion_matrices({"without CRF": matrix}, names))
    two = _size(render_confusion_matrices({"without CRF": matrix, "with CRF": matrix}, names))
    assert two[0] > 1.6 * one[0] and abs(two[1] - one[1]) < 0.2 * one[1]


def test_curves_render_before_and_after_validation():
    empty = render_curves([])
    rows = [{"iteration": i, "loss": 20 * 0.9 ** i + 0.5} for i in range(0, 100, 10)]
    rows[-1]["val_miou"] = 0.6
    for png in (empty, render_curves(rows)):
        width, height = _size(png)
        assert width > 2 * height > 300
