"""Train DeepLab on Ray Train (DDP), with Ray Data ingest, checkpoints to any URI, and resume.

    python -m pipelines.train --data URI [--val-data URI] --output URI [options]
    ray job submit --working-dir . -- python -m pipelines.train --data s3://bucket/voc --output s3://bucket/runs/a

The paper's recipe is the default (SGD momentum 0.9, poly LR power 0.9, 10x LR on the head, weight decay 5e-4 for
v2 / 1e-4 for v3, crop 321 / 513, random scale 0.5-2.0, cross-entropy ignoring 255); every value can be changed by
a flag or a YAML ``--config`` whose keys are the flag names. Flags given on the command line win over the YAML.

``--output`` is Ray Train's storage: checkpoints go to ``<output>/train/checkpoint_*/checkpoint.pt``; at the end the
best one (by validation mIoU, else the last) is exported as ``<output>/best_model.pt``, an inference checkpoint.

This module is the driver: options, checks, datasets, the trainer, the export. The loop each worker runs is
``pipelines.common.train_loop``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import traceback

import yaml

from deeplab_core.checkpoint import (
    BEST_MODEL_FILE, build_from_checkpoint, load_checkpoint, model_config, save_checkpoint,
)
from deeplab_core.data import VOCSegmentation, dataset_classes, read_sample
from deeplab_core.io import exists, join_uri
from deeplab_core.models import ARCHS, BACKBONES, build_model
from deeplab_core.training import RECIPES
from pipelines.common.options import positive_float, positive_int
from pipelines.common.train_loop import train_loop_per_worker

RUN_NAME = "train"


DEFAULTS = {
    "val_data": None, "arch": "deeplabv2", "backbone": "resnet101", "output_stride": 8, "num_classes": None,
    "crop_size": None, "batch_size": 10, "iterations": 20000, "lr": None, "momentum": 0.9, "weight_decay": None,
    "lr_power": 0.9, "head_lr_multiplier": 10.0, "min_scale": 0.5, "max_scale": 2.0, "accumulation": 1,
    "workers": 1, "cpus_per_worker": 1.0, "use_gpu": False, "amp": False, "sync_bn": False, "freeze_bn": False,
    "pretrained_backbone": None, "resume": False, "val_every": 1000, "log_every": 20, "keep_checkpoints": 3,
    "max_failures": 0, "seed": 0, "train_split": "train", "val_split": "val",
}


POSITIVE_OPTIONS = ("num_classes", "crop_size", "batch_size", "accumulation", "iterations", "workers", "val_every",
                    "log_every", "keep_checkpoints", "lr", "cpus_per_worker")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     argument_default=argparse.SUPPRESS)
    parser.add_argument("--data",
                        help="(required) VOC-layout training dataset root (local path, s3://, any fsspec URI)")
    parser.add_argument("--val-data", help="VOC-layout validation root (its val split); validation is skipped without")
    parser.add_argument("--output", help="(required) run folder: checkpoints and the exported best_model.pt")
    parser.add_argument("--config", help="YAML file of options (keys are flag names); flags override it")
    parser.add_argument("--arch", choices=ARCHS, help="default deeplabv2")
    parser.add_argument("--backbone", choices=BACKBONES, help="default resnet101")
    parser.add_argument("--output-stride", type=int, choices=(8, 16), help="default 8")
    parser.add_argument("--num-classes", type=positive_int, help="default: the dataset's classes.txt, else 21 (PASCAL VOC's class names)")
    parser.add_argument("--crop-size", type=positive_int, help="default 321 (v2) / 513 (v3)")
    parser.add_argument("--batch-size", type=positive_int, help="images per worker per step (default 10)")
    parser.add_argument("--accumulation", type=positive_int,
                        help="micro-batches per optimizer step, for small GPUs (default 1)")
    parser.add_argument("--iterations", type=positive_int, help="optimizer steps (default 20000)")
    parser.add_argument("--lr", type=positive_float, help="base LR (default 2.5e-4 v2 / 7e-3 v3); the head gets 10x")
    parser.add_argument("--momentum", type=float, help="default 0.9")
    parser.add_argument("--weight-decay", type=float, help="default 5e-4 (v2) / 1e-4 (v3)")
    parser.add_argument("--lr-power", type=float, help="poly LR power (default 0.9)")
    parser.add_argument("--head-lr-multiplier", type=float, help="default 10")
    parser.add_argument("--min-scale", type=float, help="random scale lower bound (default 0.5)")
    parser.add_argument("--max-scale", type=float, help="random scale upper bound (default 2.0)")
    parser.add_argument("--workers", type=positive_int, help="Ray Train workers (DDP processes; default 1)")
    parser.add_argument("--cpus-per-worker", type=positive_float, help="CPUs reserved per worker (default 1)")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker, NCCL")
    parser.add_argument("--amp", action="store_true", help="bf16 (or fp16) autocast on GPUs")
    parser.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across workers")
    parser.add_argument("--freeze-bn", action="store_true", help="freeze BatchNorm statistics and affine (the paper)")
    parser.add_argument("--pretrained-backbone", help="ImageNet ResNet weights: a local .pth path, or 'cache' for the "
                                                      "torch hub cache; never downloaded")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output from its latest checkpoint")
    parser.add_argument("--val-every", type=positive_int,
                        help="validate and checkpoint every N iterations (default 1000)")
    parser.add_argument("--log-every", type=positive_int, help="progress line every N iterations (default 20)")
    parser.add_argument("--keep-checkpoints", type=positive_int, help="best checkpoints kept (default 3)")
    parser.add_argument("--max-failures", type=int, help="restarts after a worker dies (default 0; -1: no limit)")
    parser.add_argument("--seed", type=int, help="data order and augmentation seed (default 0)")
    args = parser.parse_args(argv)

    options = dict(DEFAULTS)
    if getattr(args, "config", None):
        options.update(load_yaml_options(args.config))
    options.update({key: value for key, value in vars(args).items() if key != "config"})
    for required in ("data", "output"):
        if not options.get(required):
            parser.error(f"--{required} is required (on the command line or in --config)")
    for key in POSITIVE_OPTIONS:  # YAML values too, not only the flags' own types
        value = options.get(key)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0):
            parser.error(f"--{key.replace('_', '-')} must be a number greater than 0, got {value!r}")
    recipe = RECIPES[options["arch"]]
    for key in ("lr", "weight_decay", "crop_size"):
        if options[key] is None:
            options[key] = getattr(recipe, key)
    return argparse.Namespace(**options)


def load_yaml_options(path: str) -> dict:
    from deeplab_core.io import read_text

    loaded = yaml.safe_load(read_text(path)) or {}
    if not isinstance(loaded, dict):
        raise SystemExit(f"error: {path} must hold a mapping of option names to values")
    options = {key.replace("-", "_"): value for key, value in loaded.items()}
    unknown = sorted(set(options) - set(DEFAULTS) - {"data", "output"})
    if unknown:
        raise SystemExit(f"error: {path} has unknown options {unknown}; known: {sorted(DEFAULTS)}")
    return options


def check_dataset(root: str, split: str, num_classes: int) -> VOCSegmentation:
    """Cheap checks before any worker starts: every listed file exists, and a few samples decode and fit."""
    dataset = VOCSegmentation(root, split, num_classes=num_classes)
    for sample_id in dataset.ids[:2]:
        read_sample(root, sample_id, num_classes)
    return dataset


def main(argv: list[str] | None = None) -> int:
    import ray.train
    from ray.train.torch import TorchTrainer

    from pipelines.common.runtime import init_ray, pyarrow_storage
    from pipelines.common.voc_ingest import eval_dataset, training_dataset

    args = parse_args(argv)
    if args.sync_bn and not args.use_gpu:
        print("error: --sync-bn needs --use-gpu (PyTorch's SyncBatchNorm runs on GPUs only); on CPUs raise "
              "--batch-size or use --freeze-bn with pretrained weights", file=sys.stderr)
        return 2
    class_names = dataset_classes(args.data, args.num_classes)
    num_classes = len(class_names)
    try:
        train_set = check_dataset(args.data, args.train_split, num_classes)
        val_set = check_dataset(args.val_data, args.val_split, num_classes) if args.val_data else None
    except (ValueError, FileNotFoundError, PermissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run_exists = exists(join_uri(args.output, RUN_NAME))
    if run_exists and not args.resume:
        print(f"error: {args.output} already holds a training run; pass --resume to continue it, or choose a new "
              "--output", file=sys.stderr)
        return 2

    init_ray()
    global_batch = args.batch_size * args.accumulation * args.workers
    datasets = {"train": training_dataset(args.data, train_set.ids, args.iterations * global_batch, args.crop_size,
                                          args.min_scale, args.max_scale, num_classes, args.seed)}
    if val_set is not None:
        datasets["val"] = eval_dataset(args.val_data, val_set.ids, num_classes)

    model = build_model(args.arch, args.backbone, args.output_stride, num_classes)
    config = {**vars(args), "num_classes": num_classes, "has_val": val_set is not None,
              "model_config": model_config(model, class_names), "val_every": min(args.val_every, args.iterations)}
    del model
    storage_path, storage_filesystem = pyarrow_storage(args.output)
    scoring = {"checkpoint_score_attribute": "val_miou", "checkpoint_score_order": "max"} if val_set else {}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=args.workers, use_gpu=args.use_gpu,
                                               resources_per_worker={"CPU": args.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=RUN_NAME, storage_path=storage_path, storage_filesystem=storage_filesystem,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=args.keep_checkpoints, **scoring),
            failure_config=ray.train.FailureConfig(max_failures=args.max_failures)),
        datasets=datasets,
    )
    print(f"[train] {args.arch}/{args.backbone} stride {args.output_stride}, {num_classes} classes, "
          f"{len(train_set)} training images, {args.workers} worker(s) x {args.batch_size} images, "
          f"{args.iterations} iterations -> {args.output}", flush=True)
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as err:
        cause = dataset_error_in(err)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        if not run_exists:
            remove_run_without_checkpoints(args.output)  # so that fixing the data and re-running just works
        return 2

    try:
        best = export_best_model(result, args.output, bool(val_set))
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"[train] done: best model ({best}) exported to {join_uri(args.output, BEST_MODEL_FILE)}", flush=True)
    return 0


def dataset_error_in(error: BaseException) -> str | None:
    """The first ``DatasetError`` message (a bad mask, say, found while a worker read its data) inside a training
    failure, so that the user sees one line naming the file instead of Ray's tracebacks."""
    failures = list(getattr(error, "worker_failures", {}).values()) or [error]
    for failure in failures:
        text = "".join(traceback.format_exception(failure))
        found = re.search(r"DatasetError: (.+)", text)
        if found:
            return found.group(1).strip()
    return None


def remove_run_without_checkpoints(output: str) -> None:
    from deeplab_core.io import filesystem

    fs, run = filesystem(join_uri(output, RUN_NAME))
    if fs.exists(run) and not any("checkpoint_" in path for path in fs.find(run)):
        fs.rm(run, recursive=True)


def export_best_model(result, output: str, by_miou: bool) -> str:
    """Write the best checkpoint's model (without optimizer state) to ``<output>/best_model.pt``."""
    candidates = result.best_checkpoints or ([(result.checkpoint, result.metrics)] if result.checkpoint else [])
    if not candidates:
        raise RuntimeError(f"training under {output} reported no checkpoint (did its data run out before the first "
                           "--val-every iteration?)")
    if by_miou:
        checkpoint, metrics = max(candidates, key=lambda pair: pair[1].get("val_miou", -math.inf))
    else:
        checkpoint, metrics = max(candidates, key=lambda pair: pair[1].get("iteration", -1))
    with checkpoint.as_directory() as folder:
        best = load_checkpoint(folder)
    # Rebuilt and re-saved without the optimizer state: an inference checkpoint, its weights checked by a strict load.
    model = build_from_checkpoint(best)
    save_checkpoint(join_uri(output, BEST_MODEL_FILE), model, best.config, iteration=best.state["iteration"],
                    metrics=best.state["metrics"])
    described = f"iteration {metrics.get('iteration')}"
    if "val_miou" in metrics:
        described += f", validation mIoU {metrics['val_miou']:.4f}"
    return described


if __name__ == "__main__":
    sys.exit(main())
