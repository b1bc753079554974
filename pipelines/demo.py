"""The whole product in one command, on a laptop: synthetic data -> Ray Train -> Ray Data evaluation and segmentation.

    python -m pipelines.demo [--output DIR]

Starts a local Ray in-process (or joins RAY_ADDRESS), writes a synthetic VOC-layout dataset (train / val / test),
trains DeepLab-v2 (ResNet-50, from scratch) briefly on Ray Train (val chooses the best checkpoint), evaluates the test
images, which nothing in training saw, with and without the dense CRF, and segments them into palette masks, overlays
and a Parquet manifest. Each run writes a fresh <output>/<time>/ folder (default output: ./demo-output).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from deeplab_core.data import image_uri, read_split
from deeplab_core.inference_settings import InferenceSettings
from deeplab_core.io import join_uri, write_bytes
from deeplab_core.synthetic import generate
from deeplab_core.training import FROM_SCRATCH_HEAD_LR_MULTIPLIER, FROM_SCRATCH_LR
from pipelines import evaluate, segment, train
from pipelines.training.config import TrainConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="demo-output", help="local folder for everything the demo writes")
    parser.add_argument("--iterations", type=int, default=200, help="training steps (default 200, ~2 min on 2 cores)")
    args = parser.parse_args(argv)
    output = join_uri(os.path.abspath(args.output), time.strftime("%Y%m%d-%H%M%S"))
    data, run, evaluation, masks = (join_uri(output, name) for name in ("data", "run", "evaluation", "segmentation"))
    started = time.monotonic()

    def step(message: str) -> None:
        print(f"\n[demo {time.monotonic() - started:5.0f}s] {message}", flush=True)

    step(f"1/4 writing a synthetic dataset (3 classes, 64 px; train, val and test splits) to {data}")
    generate(data, num_images=70, size=64, num_classes=3, seed=0, val_fraction=0.2, test_fraction=0.2)

    step(f"2/4 training DeepLab-v2/ResNet-50 from scratch for {args.iterations} steps on Ray Train -> {run}")
    status = train.run(TrainConfig(
        data=data, val_data=data, output=run, arch="deeplabv2", backbone="resnet50", output_stride=16, crop_size=64,
        batch_size=8, lr=FROM_SCRATCH_LR, head_lr_multiplier=FROM_SCRATCH_HEAD_LR_MULTIPLIER, iterations=args.iterations,
        val_every=max(args.iterations // 4, 1), log_every=20, keep_checkpoints=1).with_recipe())
    if status:
        return status
    keep_latest_checkpoint(run)

    step(f"3/4 evaluating on the held-out test images, without and with the dense CRF -> {evaluation}")
    status = evaluate.run(evaluate.EvaluateConfig(data, evaluation, run, split="test", inference=InferenceSettings()))
    if status:
        return status

    held_out = [image_uri(data, sample_id) for sample_id in read_split(data, "test")]
    listing = join_uri(output, "held_out.txt")
    write_bytes(listing, ("\n".join(held_out) + "\n").encode())
    step(f"4/4 segmenting the {len(held_out)} held-out images with the CRF -> {masks}")
    status = segment.run(segment.SegmentConfig(listing, masks, run, overlay=True))
    if status:
        return status

    step("done. Look at:")
    print(f"  evaluation report   {join_uri(evaluation, evaluate.REPORT_FILE)}\n"
          f"  confusion matrix    {join_uri(evaluation, evaluate.MATRIX_FILE)}\n"
          f"  masks               {join_uri(masks, 'masks')}\n"
          f"  overlays            {join_uri(masks, 'overlays')}\n"
          f"  manifest            {join_uri(masks, 'manifest')}\n"
          f"  trained model       {join_uri(run, train.BEST_MODEL_FILE)}\n"
          f"Next, the CRF's parameters for this model (README, pipelines.tune_crf):\n"
          f"  python -m pipelines.tune_crf --data {data} --checkpoint {run} --output {join_uri(output, 'crf')}",
          flush=True)
    return 0


def keep_latest_checkpoint(run: str) -> None:
    """Delete the run's Ray Train checkpoints but the latest (~180 MB each): Ray keeps the best one and the latest,
    and the best is already exported as best_model.pt. A demo run is not resumed; a real run keeps them all."""
    checkpoints = sorted(path for path in Path(run, train.RUN_NAME).glob("checkpoint_*") if path.is_dir())
    for folder in checkpoints[:-1]:
        shutil.rmtree(folder)


if __name__ == "__main__":
    sys.exit(main())
