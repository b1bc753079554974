"""Train DeepLab on Ray Train (DDP), with Ray Data ingest, checkpoints to any URI, and resume.

    python -m pipelines.train --data URI [--val-data URI] --output URI [options]
    ray job submit --working-dir . -- python -m pipelines.train --data s3://bucket/voc --output s3://bucket/runs/a

The paper's recipe is the default (SGD momentum 0.9, poly LR power 0.9, 10x LR on the head, weight decay 5e-4 for
v2 / 1e-4 for v3, crop 321 / 513, random scale 0.5-2.0, cross-entropy ignoring 255); every value can be changed by
a flag or a YAML ``--config`` whose keys are the flag names. Flags given on the command line win over the YAML.

``--output`` is Ray Train's storage: checkpoints go to ``<output>/train/checkpoint_*/checkpoint.pt``; at the end the
best one (by validation mIoU, else the last) is exported as ``<output>/best_model.pt``, an inference checkpoint.

This module is the driver: options, checks, datasets, the trainer, the export. The loop each worker runs is
``pipelines.training.loop``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
import re
import sys
import traceback

import yaml

from deeplab_core.checkpoint import (
    BEST_MODEL_FILE, build_from_checkpoint, load_checkpoint, save_checkpoint,
)
from deeplab_core.data import LabelledData, ListOptions, open_dataset, read_labelled_sample
from deeplab_core.io import exists, join_uri
from deeplab_core.models import BACKBONES, ModelSpec
from pipelines.training.config import TrainConfig, add_train_options, config_from, known_keys, yaml_unknown_keys
from pipelines.training.loop import WorkerPlan, train_loop_per_worker

RUN_NAME = "train"


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The run's ``TrainConfig``: flags over a YAML ``--config`` over the defaults, the recipe filling the rest."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.train", description=__doc__.split("\n\n")[0],
        # --data and --output are required, but may come from --config: argparse would print them as optional.
        usage="python -m pipelines.train --data URI --output URI [--val-data URI] [--config FILE.yaml] [options]")
    parser.add_argument("--config", default=argparse.SUPPRESS,
                        help="YAML file of options (keys are the flag names); flags override it")
    add_train_options(parser)
    given = vars(parser.parse_args(argv))
    path = given.pop("config", None)
    return config_from(given, load_yaml_options(path) if path else {}, parser.error)


def load_yaml_options(path: str) -> dict:
    from deeplab_core.io import read_text

    loaded = yaml.safe_load(read_text(path)) or {}
    if not isinstance(loaded, dict):
        raise SystemExit(f"error: {path} must hold a mapping of option names to values")
    options = {key.replace("-", "_"): value for key, value in loaded.items()}
    unknown = yaml_unknown_keys(options)
    if unknown:
        raise SystemExit(f"error: {path} has unknown options {unknown}; known: {known_keys()}")
    return options


def check_dataset(config: TrainConfig, root: str, split: str) -> LabelledData:
    """Cheap checks before any worker starts: the layout is known, every listed file exists, and a few samples decode
    and fit."""
    dataset = open_dataset(root, split, config.layout, config.num_classes,
                           ListOptions(config.mask_folder, config.val_fraction))
    for sample in dataset.samples[:2]:
        read_labelled_sample(sample, len(dataset.classes))
    return dataset


def check_datasets(config: TrainConfig) -> tuple[LabelledData, LabelledData | None]:
    """The training split and the validation split (None without ``--val-data``), which must name the same
    classes."""
    train_set = check_dataset(config, config.data, config.train_split)
    if not config.val_data:
        return train_set, None
    val_set = check_dataset(config, config.val_data, config.val_split)
    if val_set.classes.names != train_set.classes.names:
        raise ValueError(f"{config.val_data} names other classes ({', '.join(val_set.classes.names)}) than "
                         f"{config.data} ({', '.join(train_set.classes.names)})")
    return train_set, val_set


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


def run(config: TrainConfig) -> int:
    """Train as ``config`` says; the exit status (see the README's exit codes)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from pipelines.common.runtime import check_cluster_address, init_ray, pyarrow_storage
    from pipelines.training.ingest import eval_dataset, training_dataset

    if config.sync_bn and not config.use_gpu:
        print("error: --sync-bn needs --use-gpu (PyTorch's SyncBatchNorm runs on GPUs only); on CPUs raise "
              "--batch-size or use --freeze-bn with pretrained weights", file=sys.stderr)
        return 2
    try:
        train_set, val_set = check_datasets(config)
        classes = train_set.classes
        stride = config.output_stride or BACKBONES[config.backbone].default_output_stride
        spec = ModelSpec(config.arch, config.backbone, stride, len(classes), classes.names,
                         class_colours=classes.colours)
        check_cluster_address()
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run_exists = exists(join_uri(config.output, RUN_NAME))
    if run_exists and not config.resume:
        print(f"error: {config.output} already holds a training run; pass --resume to continue it, or choose a new "
              "--output", file=sys.stderr)
        return 2

    init_ray()
    num_classes = len(classes)
    # Rows for the largest world an elastic run may grow to: each worker takes batch_size x accumulation per step.
    global_batch = config.batch_size * config.accumulation * config.workers.maximum
    datasets = {"train": training_dataset(train_set.samples, config.iterations * global_batch, config.crop_size,
                                          config.min_scale, config.max_scale, num_classes, config.seed)}
    if val_set is not None:
        datasets["val"] = eval_dataset(val_set.samples, num_classes)

    plan = WorkerPlan(replace(config, num_classes=num_classes, val_every=min(config.val_every, config.iterations)),
                      spec, has_val=val_set is not None)
    storage_path, storage_filesystem = pyarrow_storage(config.output)
    scoring = {"checkpoint_score_attribute": "val_miou", "checkpoint_score_order": "max"} if val_set else {}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"plan": plan},
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.workers.minimum if config.workers.fixed else (config.workers.minimum,
                                                                             config.workers.maximum),
            elastic_resize_monitor_interval_s=config.resize_interval, use_gpu=config.use_gpu,
            resources_per_worker={"CPU": config.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=RUN_NAME, storage_path=storage_path, storage_filesystem=storage_filesystem,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.keep_checkpoints, **scoring),
            failure_config=ray.train.FailureConfig(max_failures=config.restarts)),
        datasets=datasets,
    )
    print(f"[train] {config.arch}/{config.backbone} stride {spec.output_stride}, {num_classes} classes "
          f"({_described(classes.names)}), {len(train_set)} training images ({train_set.layout} layout), {config.workers} worker(s) x {config.batch_size} images, "
          f"{config.iterations} iterations -> {config.output}", flush=True)
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as err:
        cause = dataset_error_in(err)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        if not run_exists:
            remove_run_without_checkpoints(config.output)  # so that fixing the data and re-running just works
        return 2

    try:
        best = export_best_model(result, config.output, bool(val_set))
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"[train] done: best model ({best}) exported to {join_uri(config.output, BEST_MODEL_FILE)}", flush=True)
    return 0


def _described(names: tuple[str, ...]) -> str:
    return ", ".join(names) if len(names) <= 6 else ", ".join(names[:5]) + f", ... {names[-1]}"


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
    save_checkpoint(join_uri(output, BEST_MODEL_FILE), model, best.spec, iteration=best.state["iteration"],
                    metrics=best.state["metrics"])
    described = f"iteration {metrics.get('iteration')}"
    if "val_miou" in metrics:
        described += f", validation mIoU {metrics['val_miou']:.4f}"
    return described


if __name__ == "__main__":
    sys.exit(main())
