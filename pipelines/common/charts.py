"""The pictures the drivers write for people: training curves, confusion matrices and the CRF tuning's mIoU map,
drawn with matplotlib.

Each renders to PNG bytes (the callers write them to any URI) with matplotlib's non-interactive Agg canvas, so no
display and no global pyplot state are involved.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import LogLocator

from deeplab_core.metrics import ConfusionMatrix


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    points = [(row["iteration"], row[key]) for row in rows
              if isinstance(row.get(key), (int, float)) and math.isfinite(row[key])]
    return [x for x, _ in points], [y for _, y in points]


def render_curves(rows: list[dict]) -> bytes:
    """Training loss on a log axis (it falls by orders of magnitude, most of it early) and validation mIoU beside it,
    against iterations, from ``TrainingLog`` rows."""
    figure = Figure(figsize=(11, 4))
    loss_axes, miou_axes = figure.subplots(1, 2)
    iterations, losses = _series(rows, "loss")
    if iterations:
        loss_axes.plot(iterations, losses, color="tab:red", linewidth=1.2)
        if min(losses) > 0:
            loss_axes.set_yscale("log")
            loss_axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            loss_axes.yaxis.set_major_formatter("{x:g}")
    else:
        loss_axes.text(0.5, 0.5, "no values yet", ha="center", transform=loss_axes.transAxes, color="gray")
    loss_axes.set(title="training loss", xlabel="iteration", ylabel="cross-entropy (log scale)")
    iterations, mious = _series(rows, "val_miou")
    if iterations:
        miou_axes.plot(iterations, mious, color="tab:blue", marker="o", linewidth=1.2)
        best = int(np.argmax(mious))
        miou_axes.annotate(f"best {mious[best]:.3f}", (iterations[best], mious[best]), textcoords="offset points",
                           xytext=(0, 8), ha="center")
        miou_axes.set_ylim(0, 1)
    else:
        miou_axes.text(0.5, 0.5, "not validated yet", ha="center", transform=miou_axes.transAxes, color="gray")
    miou_axes.set(title="validation mIoU", xlabel="iteration", ylabel="mIoU")
    for axes in (loss_axes, miou_axes):
        axes.grid(True, which="major", alpha=0.3)
    return _png(figure)


def render_confusion_matrices(matrices: dict[str, ConfusionMatrix], class_names: list[str]) -> bytes:
    """One panel per matrix (e.g. ``{"without CRF": ..., "with CRF": ...}``), side by side: each row normalised to
    the share of that label's pixels predicted as each class, the values in the cells, one colour scale."""
    count = len(matrices)
    classes = len(class_names)
    side = max(4.0, 0.45 * classes + 2.0)
    figure = Figure(figsize=(side * count + 1.0, side), layout="constrained")
    panels = np.atleast_1d(figure.subplots(1, count))
    image = None
    for axes, (title, matrix) in zip(panels, matrices.items()):
        counts = matrix.counts.astype(np.float64)
        shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        if classes <= 30:  # values in cells stay legible up to about 30 classes
            for row in range(classes):
                for column in range(classes):
                    value = shares[row, column]
                    axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                              color="white" if value > 0.5 else "black")
        axes.set_xticks(range(classes), class_names, rotation=90)
        axes.set_yticks(range(classes), class_names)
        axes.set(xlabel="predicted class", ylabel="true class",
                 title=f"{title}: mIoU {matrix.miou():.3f}, pixel accuracy {matrix.pixel_accuracy():.3f}")
    figure.colorbar(image, ax=list(panels), shrink=0.8, label="share of the true class's pixels")
    return _png(figure)


def render_crf_grid(panels: Sequence[tuple[str, list[tuple[float, float, float]], tuple[float, float]]],
                    title: str) -> bytes:
    """mIoU over theta_alpha (x) and w1 (y) as heat maps side by side, one per ``(subtitle, points, best)`` panel:
    a cell per scored (theta_alpha, w1, mIoU) point (cells not scored stay blank), values in the cells, the panel's
    best setting (theta_alpha, w1) outlined; one colour scale for all."""
    grids = []
    for _, points, _ in panels:
        alphas = sorted({alpha for alpha, _, _ in points})
        weights = sorted({weight for _, weight, _ in points})
        grid = np.full((len(weights), len(alphas)), np.nan)
        for alpha, weight, miou in points:
            grid[weights.index(weight), alphas.index(alpha)] = miou
        grids.append((alphas, weights, grid))
    finite = np.concatenate([grid[np.isfinite(grid)] for _, _, grid in grids])
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    width = sum(max(4.0, 0.75 * len(alphas) + 1.5) for alphas, _, _ in grids) + 1.5
    height = max(3.0, 0.5 * max(len(weights) for _, weights, _ in grids) + 2.0)
    figure = Figure(figsize=(width, height), layout="constrained")
    axes_list = np.atleast_1d(figure.subplots(1, len(panels)))
    image = None
    for axes, (subtitle, _, best), (alphas, weights, grid) in zip(axes_list, panels, grids):
        image = axes.imshow(grid, cmap="viridis", origin="lower", aspect="auto", vmin=low, vmax=high)
        for row, column in zip(*np.nonzero(np.isfinite(grid))):
            value = grid[row, column]
            axes.text(column, row, f"{value:.4f}", ha="center", va="center", fontsize=7,
                      color="black" if value > (low + high) / 2 else "white")
        best_column, best_row = alphas.index(best[0]), weights.index(best[1])
        axes.add_patch(Rectangle((best_column - 0.5, best_row - 0.5), 1, 1, fill=False, edgecolor="red",
                                 linewidth=2))
        axes.set_xticks(range(len(alphas)), [f"{alpha:g}" for alpha in alphas])
        axes.set_yticks(range(len(weights)), [f"{weight:g}" for weight in weights])
        axes.set(xlabel="theta_alpha (bilateral kernel's spatial width, px)", ylabel="w1 (bilateral weight)",
                 title=subtitle)
    figure.colorbar(image, ax=list(axes_list), label="mIoU")
    figure.suptitle(title)
    return _png(figure)
