"""Tune the dense CRF's parameters for a model on labelled images, as the paper did: cross-validation on Ray Data.

    python -m pipelines.tune_crf --data URI --checkpoint URI --output URI [--split val] [--num-images 100]

The model runs once over the images (actors, as in ``pipelines.evaluate``) and its low-resolution logits are kept;
then every CRF setting of a coarse grid (the paper's by default: w1 3-6, theta_alpha 30-100, theta_beta 3-6) runs
over every image as CPU tasks, then a finer grid around the best. Writes ``<output>/crf_params.yaml`` (the best
setting, for ``--crf-params`` of segment and evaluate), ``<output>/crf_settings.parquet`` (every setting's mIoU and
pixel accuracy) and ``<output>/crf_miou.png`` (mIoU over theta_alpha x w1 at the best theta_beta). A re-run into the
same output skips the settings already scored.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

from deeplab_core.checkpoint import Checkpoint, build_from_checkpoint, load_checkpoint
from deeplab_core.crf_params import CRFParams
from deeplab_core.crf_file import CRF_PARAMS_FILE, PAPER_SYMBOLS, dump_crf_params
from deeplab_core.crf_tuning import (
    PAPER_GRID, CRFGrid, best_setting, finer_grid, parse_grid_axis, with_paper_values,
)
from deeplab_core.data import MASK_DIR, ListOptions, open_dataset
from deeplab_core.inference_settings import InferenceSettings
from deeplab_core.io import join_uri, normalize_uri, write_bytes
from pipelines.common.charts import render_crf_grid
from pipelines.common.options import (
    HelpFormatter, add_dataset_options, add_model_options, inference_settings, model_resources,
    positive_int,
)
from pipelines.common.runtime import check_cluster_address, check_writable, refuse
from pipelines.tuning.scoring import RoundScorer
from pipelines.segmentation.model_pool import ModelResources
from pipelines.tuning.table import NO_CRF, TABLE_FILE, TuningTable, inputs_digest, setting_key

CHART_FILE = "crf_miou.png"


@dataclass(frozen=True)
class TuneConfig:
    """What one tuning does: ``run(config)`` is the command line's ``main`` without the parsing. ``inference.crf``
    is the base setting: its iterations and method, and the values of the parameters ``grid`` does not search."""

    data: str
    output: str
    checkpoint: str
    split: str = "val"
    num_images: int = 100  # the paper's: the first 100 of the split's list
    mask_folder: str = MASK_DIR
    layout: str | None = None  # detected when None
    val_fraction: float = 0.0
    grid: CRFGrid = PAPER_GRID
    refine: bool = True  # a second, finer round around the first's best
    inference: InferenceSettings = InferenceSettings()
    resources: ModelResources = ModelResources()
    allow_failures: bool = False

    def __post_init__(self) -> None:
        if self.inference.crf is None:
            raise ValueError("TuneConfig: inference.crf must be the base CRF setting, got None")


def grid_axis(text: str) -> tuple[str, tuple[float, ...]]:
    try:
        return parse_grid_axis(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parse_args(argv: list[str] | None = None) -> TuneConfig:
    parser = argparse.ArgumentParser(prog="python -m pipelines.tune_crf", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--data", required=True, type=normalize_uri, help="labelled dataset root, in any layout")
    add_dataset_options(parser, "the split to tune on")
    parser.add_argument("--num-images", type=positive_int, default=TuneConfig.num_images,
                        help="tune on the split's first N images (the paper used 100 val images)")
    parser.add_argument("--output", required=True, type=normalize_uri,
                        help=f"where {CRF_PARAMS_FILE}, {TABLE_FILE} and {CHART_FILE} go")
    parser.add_argument("--grid", type=grid_axis, action="append", metavar="NAME=VALUES",
                        help="a parameter to search and its values, repeated for each (the others stay at "
                             "--crf-params' or the paper's): NAME is w1, theta_alpha, theta_beta, w2 or theta_gamma; "
                             "VALUES are 3,4,5 or a MATLAB range start:step:stop. Default: the paper's first round, "
                             "--grid w1=3:1:6 --grid theta_alpha=30:10:100 --grid theta_beta=3:1:6")
    parser.add_argument("--refine", action=argparse.BooleanOptionalAction, default=TuneConfig.refine,
                        help="a second round around the first's best: each searched parameter at the best value and "
                             "half a step either side")
    parser.add_argument("--allow-failures", action="store_true",
                        help="exit 0 even when some images could not be read or scored (they are left out of every "
                             "setting's score either way)")
    add_model_options(parser, crf_default=None)
    args = parser.parse_args(argv)
    grid = CRFGrid(tuple(args.grid)) if args.grid else PAPER_GRID
    try:
        grid.settings()
    except ValueError as err:
        parser.error(str(err))
    return TuneConfig(args.data, args.output, args.checkpoint, args.split, args.num_images, args.mask_folder,
                      args.layout, args.val_fraction, grid, args.refine, inference_settings(args, parser),
                      model_resources(args), args.allow_failures)


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


def run(config: TuneConfig) -> int:
    """Tune the CRF for ``config.checkpoint`` on ``config.data``; the exit status (see the README's exit codes)."""
    try:
        checkpoint = load_checkpoint(config.checkpoint)
        build_from_checkpoint(checkpoint)
        data = open_dataset(config.data, config.split, config.layout, checkpoint.spec.num_classes,
                            ListOptions(config.mask_folder, config.val_fraction))
        samples = list(data.samples[: config.num_images])
        settings = config.inference
        inputs = inputs_digest(data=config.data, split=config.split, mask_folder=config.mask_folder,
                               ids=[sample.key for sample in samples],
                               scales=settings.scales, flip=settings.flip, precision=settings.precision,
                               max_side=settings.max_side, max_pixels=settings.max_pixels)
        table = TuningTable.load(config.output, checkpoint.digest, inputs, checkpoint.spec.class_names)
        check_writable(config.output)
        check_cluster_address()
    except Exception as err:  # noqa: BLE001 - a user's mistake is one line; anything else keeps its traceback
        return refuse(err)
    base = settings.crf
    print(f"[tune_crf] {len(samples)} images of {config.data} ({data.layout}, {config.split}) with model {checkpoint.digest}; "
          f"grid {config.grid.describe()}" + ("; then a finer round" if config.refine else ""), flush=True)
    scorer = RoundScorer(config.inference, config.resources, samples, checkpoint)

    rounds = [("paper", [with_paper_values(base)]), ("coarse", config.grid.settings(base))]
    if not scorer.score(table, rounds):
        return 1
    searched = [params for _, round_settings in rounds for params in round_settings]
    best, _ = best_setting([(params, table.score(params)) for params in searched])
    first_best = best
    if config.refine:
        fine = finer_grid(config.grid, best).settings(best)
        if not scorer.score(table, [("fine", fine)]):
            return 1
        best, _ = best_setting([(params, table.score(params)) for params in searched + fine])

    report(config, table, best, first_best, checkpoint)
    # Images that could not be scored: named when this run met them, counted from the table when an earlier run did.
    failed = len(samples) - table.rows[setting_key(best)]["images"]
    if failed and not config.allow_failures:
        first = ("first: {}: {}".format(*next(iter(scorer.failures.items()))) if scorer.failures
                 else "in the run that scored these settings")
        print(f"error: {failed} of {len(samples)} images could not be scored ({first}); the scores above leave them out; "
              "pass --allow-failures to accept that", file=sys.stderr)
        return 1
    return 0


def _theta_beta_slice(table: TuningTable, setting: CRFParams) -> list[tuple[float, float, float]]:
    """(theta_alpha, w1, mIoU) of every scored setting that shares ``setting``'s other parameters."""
    fixed = ("bilateral_rgb_std", "gaussian_weight", "gaussian_xy_std", "iterations")
    return [(row["bilateral_xy_std"], row["bilateral_weight"], row["miou"]) for row in table.rows.values()
            if row["round"] != NO_CRF and row["method"] == setting.method
            and all(math.isclose(row[name], getattr(setting, name)) for name in fixed)]


def report(config: TuneConfig, table: TuningTable, best: CRFParams, first_best: CRFParams,
           checkpoint: Checkpoint) -> None:
    """The parameter file, the chart (mIoU over theta_alpha x w1 at the best theta_beta, and at the first round's
    best when the finer round moved it) and the summary lines."""
    images = table.rows[setting_key(best)]["images"]
    paper = with_paper_values(config.inference.crf)
    best_score, paper_score, plain = table.score(best), table.score(paper), table.score(None)
    notes = {"model": checkpoint.digest, "checkpoint": checkpoint.uri, "data": config.data, "split": config.split,
             "images": images, "method": best.method, "miou": round(best_score.miou(), 6),
             "pixel_accuracy": round(best_score.pixel_accuracy(), 6), "paper_miou": round(paper_score.miou(), 6),
             "no_crf_miou": round(plain.miou(), 6), "settings_scored": len(table.rows) - 1}
    params_uri = join_uri(config.output, CRF_PARAMS_FILE)
    write_bytes(params_uri, dump_crf_params(best, notes))
    panels = [(f"at the best theta_beta, {best.bilateral_rgb_std:g}", _theta_beta_slice(table, best),
               (best.bilateral_xy_std, best.bilateral_weight))]
    if not math.isclose(first_best.bilateral_rgb_std, best.bilateral_rgb_std):  # the finer round moved theta_beta
        panels.insert(0, (f"at the first round's best theta_beta, {first_best.bilateral_rgb_std:g}",
                          _theta_beta_slice(table, first_best),
                          (first_best.bilateral_xy_std, first_best.bilateral_weight)))
    title = (f"CRF mIoU over theta_alpha x w1 on {images} images (the paper's setting {paper_score.miou():.4f}, "
             f"no CRF {plain.miou():.4f})")
    write_bytes(join_uri(config.output, CHART_FILE), render_crf_grid(panels, title))
    described = ", ".join(f"{PAPER_SYMBOLS[name]} {getattr(best, name):g}" for name in PAPER_SYMBOLS)
    print(f"[tune_crf] best: {described}: mIoU {best_score.miou():.4f} (pixel accuracy "
          f"{best_score.pixel_accuracy():.4f}); the paper's setting {paper_score.miou():.4f}; no CRF "
          f"{plain.miou():.4f}; {len(table.rows) - 1} settings on {images} images", flush=True)
    print(f"[tune_crf] wrote {params_uri}, {join_uri(config.output, TABLE_FILE)} and "
          f"{join_uri(config.output, CHART_FILE)}; use it: python -m pipelines.segment ... --crf-params {params_uri}",
          flush=True)


if __name__ == "__main__":
    sys.exit(main())
