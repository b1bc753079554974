"""The segmentation pipeline against a bare in-process loop, measured side by side in one run on the same images.

    ../shared/bin/loopback python -m benchmarks.segment [--images 24] [--size 256] [--checkpoint URI] [--cpus 2]

Prints: images/s of ``pipelines.segment`` on a local Ray vs a plain loop of the same model and CRF in this process
(ratio, with and without CRF); bytes per image that the model stage ships to the CRF stage as low-resolution
float16 logits vs full-resolution float32 probabilities (ratio); and the CRF stage's images/s with 1 and 2 CPUs.
Without ``--checkpoint`` a randomly initialised DeepLab-v2/ResNet-50 (21 classes) stands in: speed does not
depend on the weights.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deeplab_core.checkpoint import load_model, save_checkpoint
from deeplab_core.inference import low_res_size
from deeplab_core.runner import segment_image
from deeplab_core.io import decode_image, encode_jpeg, read_bytes, write_bytes
from deeplab_core.models import build_model
from deeplab_core.synthetic import make_sample


def bare_loop(model, uris: list[str], crf: bool) -> float:
    started = time.perf_counter()
    for uri in uris:
        segment_image(model, decode_image(read_bytes(uri), uri), crf=crf)
    return len(uris) / (time.perf_counter() - started)


def pipeline(inputs: str, output: str, checkpoint: str, crf: bool, count: int) -> float:
    from pipelines import segment

    argv = ["--input", inputs, "--output", output, "--checkpoint", checkpoint, "--batch-size", "4"]
    started = time.perf_counter()
    assert segment.main(argv + (["--no-crf"] if not crf else [])) == 0
    return count / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.segment", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--checkpoint")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-segment-"))
    checkpoint = args.checkpoint or str(work / "model.pt")
    if not args.checkpoint:
        save_checkpoint(checkpoint, build_model("deeplabv2", "resnet50", 8, 21))
    model, loaded = load_model(checkpoint)
    classes, stride = loaded.config["num_classes"], model.output_stride
    rng = np.random.default_rng(0)
    uris = []
    for index in range(args.images):
        image, _ = make_sample(rng, size=args.size, num_classes=min(classes, 5))
        uris.append(str(work / "images" / f"img_{index:04d}.jpg"))
        write_bytes(uris[-1], encode_jpeg(image))

    grid = low_res_size(args.size, args.size, stride)
    image_bytes = args.size * args.size * 3
    low_res_bytes = classes * grid[0] * grid[1] * 2
    full_bytes = classes * args.size * args.size * 4
    print(f"{args.images} images {args.size}x{args.size}, {loaded.config['arch']}/{loaded.config['backbone']} "
          f"stride {stride}, {classes} classes, local Ray with {args.cpus} CPUs")
    print(f"bytes/image shipped model -> CRF: low-res float16 logits {low_res_bytes:,} + image {image_bytes:,} = "
          f"{low_res_bytes + image_bytes:,}; full-res float32 probabilities {full_bytes:,} + image = "
          f"{full_bytes + image_bytes:,}; ratio {(full_bytes + image_bytes) / (low_res_bytes + image_bytes):.1f}x "
          f"(logits alone {full_bytes / low_res_bytes:.0f}x)")

    torch.set_num_threads(args.cpus)
    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    try:
        for crf in (False, True):
            bare = bare_loop(model, uris, crf)
            ours = pipeline(str(work / "images"), str(work / f"out-crf-{crf}"), checkpoint, crf, len(uris))
            label = "with CRF   " if crf else "without CRF"
            print(f"{label}: pipeline {ours:.2f} images/s, bare in-process loop {bare:.2f} images/s, "
                  f"ratio {ours / bare:.2f}")
    finally:
        ray.shutdown()

    from benchmarks.crf import crf_stage_throughput, make_cases

    cases = make_cases(8, args.size, classes, 1, None)
    one, two = crf_stage_throughput(cases, 1), crf_stage_throughput(cases, 2)
    print(f"CRF stage: 1 CPU {one:.2f} images/s, 2 CPUs {two:.2f} images/s, scaling {two / one:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
