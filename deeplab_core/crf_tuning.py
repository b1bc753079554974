"""Cross-validating the dense CRF's parameters, as DeepLab did: a coarse grid, then a finer one around its best.

The paper (Chen et al., TPAMI 2017, sec. 4.1) chose w1, theta_alpha and theta_beta on 100 val images, "coarse to
fine": first w1 in [3:6], theta_alpha in [30:10:100], theta_beta in [3:6] (MATLAB ranges), w2 = 3 and theta_gamma
fixed; then smaller steps around the first round's best values. ``PAPER_GRID`` is that first round;
``finer_grid`` the second: each searched axis at the best value and half a step either side.

Scoring one image under many settings shares the work that does not depend on them: settings with the same
bilateral kernel widths share its lattice (``score_crf_settings``). ``pipelines.tune_crf`` runs (images x settings)
on a cluster.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from deeplab_core.crf import PAPER_PARAMS, CRFParams, refine_low_res
from deeplab_core.crf_file import PAPER_SYMBOLS
from deeplab_core.io import resize_labels
from deeplab_core.metrics import ConfusionMatrix

TUNABLE = tuple(PAPER_SYMBOLS)  # the weights and kernel widths, by CRFParams field name
_WEIGHTS = ("bilateral_weight", "gaussian_weight")  # may be 0 (no such kernel); a width must be > 0


@dataclass(frozen=True)
class CRFGrid:
    """Values to try for some of the CRF's parameters (``TUNABLE`` field names); the others stay at the base
    setting's. Every combination is one setting."""

    axes: tuple[tuple[str, tuple[float, ...]], ...]

    def __post_init__(self) -> None:
        names = [name for name, _ in self.axes]
        for name, values in self.axes:
            if name not in TUNABLE:
                raise ValueError(f"CRFGrid: {name!r} is not a tunable CRF parameter; use one of "
                                 f"{', '.join(TUNABLE)} or {', '.join(PAPER_SYMBOLS.values())}")
            if not values:
                raise ValueError(f"CRFGrid: {name} has no values")
        if len(set(names)) != len(names):
            raise ValueError(f"CRFGrid: a parameter is given twice in {names}")

    def settings(self, base: CRFParams = PAPER_PARAMS) -> list[CRFParams]:
        """Every combination of the axes' values over ``base``, in a fixed order."""
        names = [name for name, _ in self.axes]
        combos = itertools.product(*(values for _, values in self.axes))
        return [replace(base, **dict(zip(names, combo))) for combo in combos]

    def describe(self) -> str:
        return ", ".join(f"{PAPER_SYMBOLS[name]} {'/'.join(f'{v:g}' for v in values)}" for name, values in self.axes)


def with_paper_values(base: CRFParams) -> CRFParams:
    """``base`` (its iterations, how it is computed) with the paper's weights and kernel widths: the setting every
    tuning scores beside its grid."""
    return replace(base, **{name: getattr(PAPER_PARAMS, name) for name in TUNABLE})


def _inclusive_range(start: float, step: float, stop: float) -> tuple[float, ...]:
    count = int(np.floor((stop - start) / step + 1e-9)) + 1
    return tuple(round(start + index * step, 10) for index in range(count))


PAPER_GRID = CRFGrid((("bilateral_weight", _inclusive_range(3, 1, 6)),
                      ("bilateral_xy_std", _inclusive_range(30, 10, 100)),
                      ("bilateral_rgb_std", _inclusive_range(3, 1, 6))))


def parse_grid_axis(text: str) -> tuple[str, tuple[float, ...]]:
    """``name=values``: a CRFParams field or the paper's symbol, and comma-separated numbers or a MATLAB range
    ``start:step:stop`` (the paper's notation; ``start:stop`` steps by 1), e.g. ``theta_alpha=30:10:100``."""
    by_symbol = {symbol: name for name, symbol in PAPER_SYMBOLS.items()}
    key, sep, spec = text.partition("=")
    name = by_symbol.get(key.strip(), key.strip())
    if not sep or name not in TUNABLE:
        raise ValueError(f"expected NAME=VALUES with NAME one of {', '.join(PAPER_SYMBOLS.values())}, got {text!r}")
    try:
        numbers = [float(part) for part in spec.replace(":", ",").split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers or start:step:stop in {text!r}") from None
    if ":" in spec:
        if len(numbers) not in (2, 3) or spec.count(":") != len(numbers) - 1:
            raise ValueError(f"expected start:step:stop (or start:stop, steps of 1) in {text!r}")
        start, step, stop = (numbers[0], 1.0, numbers[1]) if len(numbers) == 2 else numbers
        if step <= 0 or stop < start:
            raise ValueError(f"{text!r} is an empty range: the form is start:step:stop, e.g. 30:10:100")
        values = _inclusive_range(start, step, stop)
    else:
        values = tuple(numbers)
    if not values:
        raise ValueError(f"no values in {text!r}")
    if any(value < 0 or (value == 0 and name not in _WEIGHTS) for value in values):
        raise ValueError(f"{text!r}: weights must be >= 0 and kernel widths > 0")
    return name, tuple(sorted(set(values)))


def finer_grid(grid: CRFGrid, best: CRFParams) -> CRFGrid:
    """The second round: every axis of ``grid`` with more than one value at ``best``'s value and half the axis'
    step either side (kept where still valid: widths > 0, weights >= 0); single-valued axes stay as they are."""
    axes = []
    for name, values in grid.axes:
        centre = getattr(best, name)
        if len(values) < 2:
            axes.append((name, values))
            continue
        half_step = float(np.min(np.diff(sorted(values)))) / 2
        candidates = [round(centre + offset * half_step, 10) for offset in (-1, 0, 1)]
        axes.append((name, tuple(value for value in candidates if value > 0 or (value == 0 and name in _WEIGHTS))))
    return CRFGrid(tuple(axes))


def score_crf_settings(image: np.ndarray, low_res_logits: np.ndarray, label: np.ndarray, stride: int,
                       settings: Sequence[CRFParams], num_classes: int) -> list[ConfusionMatrix]:
    """One confusion matrix per setting: the CRF's labels on ``image`` (uint8 H x W x 3, the working size) from the
    model's ``low_res_logits`` (C x h x w on the stride grid), scored against ``label`` (the input's own size,
    ``IGNORE_INDEX`` ignored), exactly as ``pipelines.evaluate --crf`` scores one image (``refine_low_res``, then
    the labels at the ground truth's size). Settings that share the bilateral kernel's widths share its lattice
    (built once: ~30 % of a CRF's time)."""
    matrices: list[ConfusionMatrix | None] = [None] * len(settings)
    # Settings sharing the bilateral kernel's widths in a row: each lattice is built once (keep_kernels).
    for index in sorted(range(len(settings)), key=lambda i: (settings[i].bilateral_xy_std,
                                                             settings[i].bilateral_rgb_std)):
        labels = refine_low_res(image, low_res_logits, stride, settings[index], keep_kernels=True).astype(np.uint8)
        matrices[index] = ConfusionMatrix(num_classes).update(resize_labels(labels, label.shape), label)
    return matrices


def best_setting(scores: Sequence[tuple[CRFParams, ConfusionMatrix]]) -> tuple[CRFParams, ConfusionMatrix]:
    """The setting with the highest mIoU (then pixel accuracy; then the first given: list the paper's first)."""
    if not scores:
        raise ValueError("best_setting: no scored settings")
    ranked = sorted(enumerate(scores), key=lambda item: (-item[1][1].miou(), -item[1][1].pixel_accuracy(), item[0]))
    return ranked[0][1]
