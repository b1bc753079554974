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
    fine = [(alpha, weight, 0.6) for alpha in (40, 50, 60) for weight in (4, 5, 6)]
    one = render_crf_grid([("at theta_beta 3", coarse + [(60, 4, 0.8)], (60, 4))], "t")  # blank cells where unscored
    two = render_crf_grid([("first round", coarse, (70, 5)), ("finer round", fine, (50, 5))], "t")
    small = render_crf_grid([("t", coarse[:2], (30, 5))], "t")
    pixels = np.asarray(Image.open(io.BytesIO(one)).convert("RGB")).astype(int)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
    assert red.sum() > 50  # the best cell's outline
    assert _size(one)[0] > _size(small)[0] and _size(one)[1] > _size(small)[1]
    assert _size(two)[0] > 1.6 * _size(small)[0]  # two panels side by side
