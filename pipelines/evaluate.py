"""Evaluate a DeepLab checkpoint on a labelled VOC-layout dataset with Ray Data: mIoU with and without CRF.

    python -m pipelines.evaluate --data URI --checkpoint URI --output URI [--crf] [--scales ...] [--flip]

The same stages as ``pipelines.segment`` (decode -> model actors -> CRF tasks); with ``--crf`` the CRF stage scores
both the plain argmax and the CRF labels from the same low-resolution logits, so one model pass gives both numbers.
Every task returns confusion matrices, which are summed. Writes ``report.json`` and ``confusion_matrix.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from deeplab_core.checkpoint import build_from_checkpoint, load_checkpoint
from deeplab_core.data import image_uri, mask_uri, read_split
from deeplab_core.io import join_uri, normalize_uri, resize_labels, write_bytes
from deeplab_core.metrics import ConfusionMatrix
from pipelines.common.charts import render_confusion_matrices
from pipelines.common.options import HelpFormatter, add_model_options, model_actor_count
from pipelines.common.runtime import check_cluster_address, check_writable, explain, is_user_error
from pipelines.common.sizing import crf_sizing_line

REPORT_FILE, MATRIX_FILE = "report.json", "confusion_matrix.png"


class Scorer:
    """CPU task: confusion matrices (flattened) of each row's labels against its ground truth."""

    def __init__(self, num_classes: int, with_crf: bool) -> None:
        self.num_classes, self.with_crf = num_classes, with_crf

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        plain, refined = ConfusionMatrix(self.num_classes), ConfusionMatrix(self.num_classes)
        errors, precisions = [], sorted({str(p) for p in batch["precision"]})
        costs = {"seconds_model": [], "seconds_crf": [], "crf_labels": []}
        for row in range(len(batch["uri"])):
            if batch["error"][row]:
                errors.append(str(batch["error"][row]))
                continue
            label = batch["label"][row]
            plain.update(resize_labels(batch["labels"][row], label.shape), label)
            if self.with_crf:
                refined.update(resize_labels(batch["labels_crf"][row], label.shape), label)
            for column, values in costs.items():
                if column in batch:
                    values.append(batch[column][row].item())
        return {"plain": [plain.counts.ravel()], "crf": [refined.counts.ravel()], "errors": [json.dumps(errors)],
                "precisions": [json.dumps(precisions)], "costs": [json.dumps(costs)]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--data", required=True, type=normalize_uri, help="VOC-layout dataset root")
    parser.add_argument("--split", default="val", help="which ImageSets/Segmentation/<split>.txt to evaluate")
    parser.add_argument("--output", required=True, type=normalize_uri,
                        help="where report.json and confusion_matrix.png go")
    parser.add_argument("--allow-failures", action="store_true",
                        help="exit 0 even when some images could not be read or scored (they are listed in the "
                             "report either way)")
    add_model_options(parser, crf_default=False)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        checkpoint = load_checkpoint(args.checkpoint)
        build_from_checkpoint(checkpoint)  # a config that does not fit the weights fails here, not in every actor
        ids = read_split(args.data, args.split)
        check_writable(args.output)
        check_cluster_address()
    except Exception as err:  # noqa: BLE001 - a user's mistake is one line; anything else keeps its traceback
        if not is_user_error(err):
            raise
        print(f"error: {explain(err)}", file=sys.stderr)
        return 2
    config = checkpoint.config
    print(f"[evaluate] {len(ids)} images of {args.data} ({args.split}) with model {checkpoint.digest}", flush=True)

    plain, refined, failures, precision, costs = run_pipeline(args, ids, checkpoint)

    report = {
        "data": args.data, "split": args.split, "model": checkpoint.digest, "checkpoint": checkpoint.uri,
        "scales": list(args.scales), "flip": args.flip, "precision": precision, "images": len(ids), "failed": failures,
        "without_crf": plain.summary(config["class_names"]),
    }
    if args.crf:
        report["with_crf"] = refined.summary(config["class_names"])
    write_bytes(join_uri(args.output, REPORT_FILE), json.dumps(report, indent=2).encode())
    matrices = {"without CRF": plain, "with CRF": refined} if args.crf else {"without CRF": plain}
    write_bytes(join_uri(args.output, MATRIX_FILE), render_confusion_matrices(matrices, config["class_names"]))
    line = f"[evaluate] mIoU without CRF {plain.miou():.4f} (pixel accuracy {plain.pixel_accuracy():.4f})"
    if args.crf:
        line += f"; with CRF {refined.miou():.4f} (pixel accuracy {refined.pixel_accuracy():.4f})"
    print(f"{line}; {len(failures)} images failed; report in {join_uri(args.output, REPORT_FILE)}", flush=True)
    if args.crf:
        sizing = crf_sizing_line(costs["seconds_crf"], costs["crf_labels"], costs["seconds_model"],
                                 model_actor_count(args)[0])
        if sizing:
            print(f"[evaluate] {sizing}", flush=True)
    if failures and not args.allow_failures:
        print(f"error: {len(failures)} of {len(ids)} images failed (first: {failures[0]}); the scores above leave "
              "them out; pass --allow-failures to accept that", file=sys.stderr)
        return 1
    return 0


def run_pipeline(args: argparse.Namespace, ids: list[str],
                 checkpoint) -> tuple[ConfusionMatrix, ConfusionMatrix, list, str, dict[str, list]]:
    import ray.data

    from pipelines.common.runtime import init_ray
    from pipelines.common.stages import add_model_stages, default_rows_per_block

    init_ray()
    num_classes = checkpoint.config["num_classes"]
    items = [{"uri": image_uri(args.data, i), "label_uri": mask_uri(args.data, i), "error": ""} for i in ids]
    blocks = math.ceil(len(items) / default_rows_per_block(len(items), args.batch_size))
    dataset = add_model_stages(ray.data.from_items(items, override_num_blocks=blocks), args, checkpoint, crf=args.crf,
                               plain=True, keep_image=False, num_classes=num_classes)
    dataset = dataset.map_batches(Scorer(num_classes, args.crf), batch_size=16)
    plain, refined, failures, precisions = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes), [], set()
    costs: dict[str, list] = {"seconds_model": [], "seconds_crf": [], "crf_labels": []}
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for counts in batch["plain"]:
            plain = plain + ConfusionMatrix(num_classes, np.asarray(counts).reshape(num_classes, num_classes))
        for counts in batch["crf"]:
            refined = refined + ConfusionMatrix(num_classes, np.asarray(counts).reshape(num_classes, num_classes))
        for errors in batch["errors"]:
            failures.extend(json.loads(str(errors)))
        for names in batch["precisions"]:
            precisions.update(json.loads(str(names)))
        for block_costs in batch["costs"]:
            for column, values in json.loads(str(block_costs)).items():
                costs[column].extend(values)
    return plain, refined, failures, ",".join(sorted(precisions)), costs


if __name__ == "__main__":
    sys.exit(main())
