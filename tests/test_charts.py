"""The pictures: PNGs that decode, one panel per confusion matrix, curves with and without values yet, the CRF
tuning's map with cells not scored."""

import io

import numpy as np
from PIL import Image

from deeplab_core.metrics import ConfusionMatrix
from pipelines.common.charts import render_confusion_matrices, render_crf_grid, render_curves


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


def test_the_crf_tuning_map_has_a_cell_per_value_and_outlines_the_best():
    coarse = [(alpha, weight, 0.5 + alpha / 1000 + weight / 100) for alpha in (30, 50, 70) for weight in (3, 5)]
    wide = render_crf_grid(coarse + [(60, 4, 0.8)], best=(60, 4), title="t")  # a finer-round point: cells left blank
    narrow = render_crf_grid(coarse[:2], best=(30, 5), title="t")
    pixels = np.asarray(Image.open(io.BytesIO(wide)).convert("RGB")).astype(int)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
    assert red.sum() > 50  # the best cell's outline
    assert _size(wide)[0] > _size(narrow)[0] and _size(wide)[1] > _size(narrow)[1]
