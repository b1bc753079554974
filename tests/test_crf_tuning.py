"""CRF parameter tuning in deeplab_core (grids, scoring, the parameter file) and the drivers' --crf-params."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from deeplab_core.crf import PAPER_PARAMS, CRFParams, refine_low_res
from deeplab_core.crf_file import dump_crf_params, load_crf_params
from deeplab_core.crf_tuning import (
    PAPER_GRID, CRFGrid, best_setting, finer_grid, parse_grid_axis, score_crf_settings,
)
from deeplab_core.io import resize_labels
from deeplab_core.metrics import ConfusionMatrix
from benchmarks.scenarios import simulated_logits
from deeplab_core.synthetic import make_sample


def test_the_paper_grid_is_its_first_round():
    axes = dict(PAPER_GRID.axes)
    assert axes == {"bilateral_weight": (3, 4, 5, 6), "bilateral_xy_std": (30, 40, 50, 60, 70, 80, 90, 100),
                    "bilateral_rgb_std": (3, 4, 5, 6)}
    settings = PAPER_GRID.settings()
    assert len(settings) == 128 and len(set(settings)) == 128
    assert all(s.gaussian_weight == 3 and s.gaussian_xy_std == 1 and s.iterations == 10 for s in settings)


@pytest.mark.parametrize("text, expected", [
    ("w1=3:1:6", ("bilateral_weight", (3, 4, 5, 6))),
    ("theta_alpha=30:10:100", ("bilateral_xy_std", (30, 40, 50, 60, 70, 80, 90, 100))),
    ("theta_beta=3:5", ("bilateral_rgb_std", (3, 4, 5))),
    ("bilateral_rgb_std=6,3,6", ("bilateral_rgb_std", (3, 6))),
    ("theta_gamma=0.5:0.25:1", ("gaussian_xy_std", (0.5, 0.75, 1.0))),
])
def test_grid_axes_take_the_papers_symbols_and_matlab_ranges(text, expected):
    assert parse_grid_axis(text) == expected


@pytest.mark.parametrize("text, message", [
    ("theta_alpha=30:100:10", "empty range"),  # Python's order, not MATLAB's
    ("sigma=1,2", "NAME one of"),
    ("w1", "NAME one of"),
    ("theta_beta=0,3", "kernel widths > 0"),
    ("w1=a,b", "comma-separated numbers"),
    ("w1=", "no values"),
])
def test_bad_grid_axes_are_refused_with_the_reason(text, message):
    with pytest.raises(ValueError, match=message):
        parse_grid_axis(text)


def test_the_finer_round_halves_each_searched_step_around_the_best():
    grid = CRFGrid((("bilateral_weight", (3.0, 4.0, 5.0)), ("bilateral_xy_std", (30.0, 50.0)),
                    ("bilateral_rgb_std", (3.0,))))
    best = replace(PAPER_PARAMS, bilateral_weight=3.0, bilateral_xy_std=50.0, bilateral_rgb_std=3.0)
    finer = dict(finer_grid(grid, best).axes)
    assert finer == {"bilateral_weight": (2.5, 3.0, 3.5), "bilateral_xy_std": (40.0, 50.0, 60.0),
                     "bilateral_rgb_std": (3.0,)}
    assert len(finer_grid(grid, best).settings(best)) == 9


def test_each_setting_is_scored_as_evaluate_scores_one_image():
    rng = np.random.default_rng(4)
    image, mask = make_sample(rng, size=80, num_classes=4)
    logits = simulated_logits(mask, 4, rng, sharpness=6.0, noise=1.5, absent_margin=3.0)
    settings = [PAPER_PARAMS, replace(PAPER_PARAMS, bilateral_rgb_std=13.0, bilateral_weight=6.0)]
    matrices = score_crf_settings(image, logits, mask, 8, settings, 4)
    for params, matrix in zip(settings, matrices):
        labels = refine_low_res(image, logits, 8, params).astype(np.uint8)
        assert matrix == ConfusionMatrix(4).update(resize_labels(labels, mask.shape), mask)
    assert matrices[0] != matrices[1]  # the settings differ in what they do


def test_the_best_setting_wins_on_miou_and_ties_go_to_the_first_listed():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (20, 20))
    perfect = ConfusionMatrix(3).update(labels, labels)
    worse = ConfusionMatrix(3).update(np.zeros_like(labels), labels)
    a, b, c = PAPER_PARAMS, replace(PAPER_PARAMS, bilateral_weight=5.0), replace(PAPER_PARAMS, bilateral_weight=6.0)
    assert best_setting([(a, worse), (b, perfect), (c, perfect)])[0] == b
    with pytest.raises(ValueError):
        best_setting([])


def _noisy_camera_cases(rng: np.random.Generator, count: int) -> list:
    cases = []
    for _ in range(count):
        image, mask = make_sample(rng, size=96, num_classes=4, grain=30.0)
        cases.append((image, mask, simulated_logits(mask, 4, rng, sharpness=6.0, noise=1.5, absent_margin=3.0)))
    return cases


def _total(cases: list, settings: list[CRFParams]) -> list[ConfusionMatrix]:
    totals = [ConfusionMatrix(4) for _ in settings]
    for image, mask, logits in cases:
        totals = [total + matrix for total, matrix in
                  zip(totals, score_crf_settings(image, logits, mask, 8, settings, 4))]
    return totals


def test_on_noisy_colours_the_tuned_setting_beats_the_papers_on_held_out_images():
    """Colour noise of 30 (0-255) swamps the paper's theta_beta = 3: the bilateral kernel then sees every pixel as
    unlike its neighbours. Tuning on some images must find a wider theta_beta that also wins on others."""
    rng = np.random.default_rng(0)
    tuning, held_out = _noisy_camera_cases(rng, 5), _noisy_camera_cases(rng, 5)
    grid = CRFGrid((("bilateral_weight", (4.0, 6.0)), ("bilateral_rgb_std", (3.0, 6.0, 12.0, 24.0))))
    settings = [PAPER_PARAMS, *grid.settings()]
    best, _ = best_setting(list(zip(settings, _total(tuning, settings))))
    refined = finer_grid(grid, best).settings(best)
    best, _ = best_setting(list(zip([best, *refined], _total(tuning, [best, *refined]))))
    assert best.bilateral_rgb_std > PAPER_PARAMS.bilateral_rgb_std
    paper, tuned = _total(held_out, [PAPER_PARAMS, best])
    assert tuned.miou() > paper.miou() + 0.01, (best, paper.miou(), tuned.miou())


def test_a_parameter_file_round_trips_and_takes_the_papers_symbols(tmp_path):
    tuned = replace(PAPER_PARAMS, iterations=8, bilateral_weight=5.5, bilateral_xy_std=45.0, bilateral_rgb_std=7.0)
    path = tmp_path / "crf_params.yaml"
    path.write_bytes(dump_crf_params(tuned, {"miou": 0.5, "model": "abc"}))
    assert load_crf_params(str(path)) == tuned
    path.write_text("w1: 5\ntheta_alpha: 50\ntheta_beta: 4.5\n")
    assert load_crf_params(str(path)) == replace(PAPER_PARAMS, bilateral_weight=5.0, bilateral_xy_std=50.0,
                                                 bilateral_rgb_std=4.5)


@pytest.mark.parametrize("text, message", [
    ("sigma: 3\n", "unknown CRF parameter 'sigma'"),
    ("w1: four\n", "w1 must be a number"),
    ("theta_beta: 0\n", "bilateral_rgb_std is a kernel width"),
    ("w1: 4\nbilateral_weight: 5\n", "a second time"),
    ("iterations: 2.5\n", "whole number"),
    ("- 1\n- 2\n", "must hold a mapping"),
    ("w1: [\n", "not a YAML file"),
])
def test_a_bad_parameter_file_is_refused_naming_the_file(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as raised:
        load_crf_params(str(path))
    assert str(path) in str(raised.value)


def test_segment_and_evaluate_take_crf_params_and_refuse_them_with_the_crf_off(tmp_path, capsys):
    from pipelines import evaluate, segment

    path = tmp_path / "crf_params.yaml"
    tuned = replace(PAPER_PARAMS, bilateral_weight=5.5, bilateral_rgb_std=7.0)
    path.write_bytes(dump_crf_params(tuned))
    common = ["--output", str(tmp_path / "out"), "--checkpoint", "unused.pt", "--crf-params", str(path)]
    config = segment.parse_args(["--input", str(tmp_path), *common, "--crf-iterations", "5"])
    assert config.inference.crf == replace(tuned, iterations=5)
    assert evaluate.parse_args(["--data", str(tmp_path), *common, "--crf"]).inference.crf == tuned
    for parse, argv in ((segment.parse_args, ["--input", str(tmp_path), *common, "--no-crf"]),
                        (evaluate.parse_args, ["--data", str(tmp_path), *common]),
                        (segment.parse_args, ["--input", str(tmp_path), *common[:-1], str(tmp_path / "nope.yaml")])):
        with pytest.raises(SystemExit) as raised:
            parse(argv)
        assert raised.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert "the CRF is off" in errors[0] and "the CRF is off" in errors[1]
    assert "no such file" in errors[2] and "nope.yaml" in errors[2]
