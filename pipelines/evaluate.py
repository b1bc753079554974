"""Evaluate a DeepLab checkpoint on a labelled dataset (any layout) with Ray Data: mIoU with and without CRF.

    python -m pipelines.evaluate --data URI --checkpoint URI --output URI [--crf] [--scales ...] [--flip]

The same stages as ``pipelines.segment`` (decode -> model actors -> CRF tasks); with ``--crf`` the CRF stage scores
both the plain argmax and the CRF labels from the same low-resolution logits, so one model pass gives both numbers.
Every task returns confusion matrices, which are summed. Writes ``report.json`` and ``confusion_matrix.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

import numpy as np

from deeplab_core.checkpoint import build_from_checkpoint, load_checkpoint
from deeplab_core.data import MASK_DIR, LabelledData, ListOptions, open_dataset
from deeplab_core.inference_settings import InferenceSettings
from deeplab_core.io import join_uri, normalize_uri, write_bytes
from deeplab_core.metrics import ConfusionMatrix
from pipelines.common.charts import render_confusion_matrices
from pipelines.common.options import (
    HelpFormatter, add_dataset_options, add_model_options, inference_settings, model_resources,
)
from pipelines.common.runtime import check_cluster_address, check_writable, refuse
from pipelines.segmentation import columns
from pipelines.segmentation.scoring import PLAIN, REFINED, Scorer
from pipelines.common.usage import Usage
from pipelines.segmentation.model_pool import ModelResources
from pipelines.segmentation.sizing import crf_sizing_line

REPORT_FILE, MATRIX_FILE = "report.json", "confusion_matrix.png"


@dataclass(frozen=True)
class EvaluateConfig:
    """What one evaluation does: ``run(config)`` is the command line's ``main`` without the parsing. The model runs
    at ``inference.precision`` (auto: bf16 on GPUs that support it), which the report records; validation during
    training scores at fp32 instead (``pipelines.training.loop.evaluate_shard``)."""

    data: str
    output: str
    checkpoint: str
    split: str = "val"
    mask_folder: str = MASK_DIR
    layout: str | None = None  # detected when None
    val_fraction: float = 0.0
    inference: InferenceSettings = InferenceSettings(crf=None)
    resources: ModelResources = ModelResources()
    allow_failures: bool = False


def parse_args(argv: list[str] | None = None) -> EvaluateConfig:
    parser = argparse.ArgumentParser(prog="python -m pipelines.evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--data", required=True, type=normalize_uri, help="labelled dataset root, in any layout")
    add_dataset_options(parser, "the split to evaluate")
    parser.add_argument("--output", required=True, type=normalize_uri,
                        help="where report.json and confusion_matrix.png go")
    parser.add_argument("--allow-failures", action="store_true",
                        help="exit 0 even when some images could not be read or scored (they are listed in the "
                             "report either way)")
    add_model_options(parser, crf_default=False)
    args = parser.parse_args(argv)
    return EvaluateConfig(args.data, args.output, args.checkpoint, args.split, args.mask_folder, args.layout,
                          args.val_fraction, inference_settings(args, parser), model_resources(args),
                          args.allow_failures)


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


def run(config: EvaluateConfig) -> int:
    """Score ``config.checkpoint`` on ``config.data``'s split; the exit status (see the README's exit codes)."""
    crf = config.inference.crf is not None
    try:
        checkpoint = load_checkpoint(config.checkpoint)
        build_from_checkpoint(checkpoint)  # a config that does not fit the weights fails here, not in every actor
        data = open_dataset(config.data, config.split, config.layout, checkpoint.spec.num_classes,
                            ListOptions(config.mask_folder, config.val_fraction))
        check_writable(config.output)
        check_cluster_address()
    except Exception as err:  # noqa: BLE001 - a user's mistake is one line; anything else keeps its traceback
        return refuse(err)
    print(f"[evaluate] {len(data)} images of {config.data} ({data.layout}, {config.split}) with model "
          f"{checkpoint.digest}", flush=True)

    scores = run_pipeline(config, data, checkpoint)
    plain, refined, failures = scores.plain, scores.refined, scores.failures

    report = {
        "data": config.data, "layout": data.layout, "split": config.split, "model": checkpoint.digest, "checkpoint": checkpoint.uri,
        "scales": list(config.inference.scales), "flip": config.inference.flip, "precision": scores.precision,
        "images": len(data), "failed": failures,
        "without_crf": plain.summary(checkpoint.spec.class_names),
    }
    if crf:
        report["with_crf"] = refined.summary(checkpoint.spec.class_names)
    write_bytes(join_uri(config.output, REPORT_FILE), json.dumps(report, indent=2).encode())
    matrices = {"without CRF": plain, "with CRF": refined} if crf else {"without CRF": plain}
    write_bytes(join_uri(config.output, MATRIX_FILE),
                render_confusion_matrices(matrices, checkpoint.spec.class_names))
    line = f"[evaluate] mIoU without CRF {plain.miou():.4f} (pixel accuracy {plain.pixel_accuracy():.4f})"
    if crf:
        line += f"; with CRF {refined.miou():.4f} (pixel accuracy {refined.pixel_accuracy():.4f})"
    print(f"{line}; {len(failures)} images failed; report in {join_uri(config.output, REPORT_FILE)}", flush=True)
    print(f"[evaluate] used: {scores.usage.describe()}", flush=True)
    if crf:
        costs = scores.costs
        sizing = crf_sizing_line(costs[columns.SECONDS_CRF], costs[columns.CRF_LABELS], costs[columns.SECONDS_MODEL],
                                 scores.usage.peak_actors)
        if sizing:
            print(f"[evaluate] {sizing}", flush=True)
    if failures and not config.allow_failures:
        print(f"error: {len(failures)} of {len(data)} images failed (first: {failures[0]}); the scores above leave "
              "them out; pass --allow-failures to accept that", file=sys.stderr)
        return 1
    return 0


@dataclass(frozen=True)
class Scores:
    """What scoring a split gave: the confusion matrices without and with the CRF, the failures (``uri: error``),
    the precisions the model ran at, each image's costs (seconds_model, seconds_crf, crf_labels) and the cluster's
    use."""

    plain: ConfusionMatrix
    refined: ConfusionMatrix
    failures: list[str]
    precision: str
    costs: dict[str, list]
    usage: Usage


def run_pipeline(config: EvaluateConfig, data: LabelledData, checkpoint) -> Scores:
    from pipelines.common.runtime import init_ray
    from pipelines.segmentation.stages import add_model_stages, labelled_images, model_stage_usage, plan_model_stage

    init_ray()
    num_classes = checkpoint.spec.num_classes
    crf = config.inference.crf is not None
    pool = plan_model_stage(config.resources, "evaluate")
    dataset = add_model_stages(labelled_images(data.samples, config.inference.batch_size),
                               checkpoint, config.inference, config.resources, pool, plain=True, keep_image=False,
                               num_classes=num_classes)
    dataset = dataset.map_batches(Scorer(num_classes, crf), batch_size=16)
    plain, refined, failures, precisions = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes), [], set()
    costs: dict[str, list] = {columns.SECONDS_MODEL: [], columns.SECONDS_CRF: [], columns.CRF_LABELS: []}
    with model_stage_usage(pool) as sampler:
        for row in dataset.iter_rows():
            if row[columns.ERROR]:
                failures.append(str(row[columns.ERROR]))
                continue
            plain = plain + ConfusionMatrix(num_classes, np.asarray(row[PLAIN]).reshape(num_classes, num_classes))
            if crf:
                refined = refined + ConfusionMatrix(num_classes,
                                                    np.asarray(row[REFINED]).reshape(num_classes, num_classes))
            precisions.add(str(row[columns.PRECISION]))
            for column, values in costs.items():
                if column in row:
                    values.append(row[column].item() if hasattr(row[column], "item") else row[column])
    return Scores(plain, refined, failures, ",".join(sorted(precisions)), costs, sampler.usage)

if __name__ == "__main__":
    sys.exit(main())
