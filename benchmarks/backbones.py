"""The backbones side by side: images/s of DeepLab-v3 on each, on the same inputs, in one run.

    python -m benchmarks.backbones [--device cpu|cuda] [--size 512] [--batch-size 4] [--batches 6] [--precision auto]

Each model (random weights: speed does not depend on them) runs ``deeplab_core.runner.ModelRunner`` over the same
batches of random images after one warm-up call, at the backbone's VOC output stride (ResNets 8, MobileNetV3 16,
as torchvision's published models). Prints images/s for each and the ratio to ResNet-101's.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from deeplab_core.inference_settings import InferenceSettings
from deeplab_core.models import BACKBONES, build_model
from deeplab_core.runner import ModelRunner


def images_per_second(backbone: str, batches: list[list[np.ndarray]], device: str, precision: str) -> float:
    model = build_model("deeplabv3", backbone, BACKBONES[backbone].voc_output_stride, 21).eval()
    runner = ModelRunner(model, InferenceSettings(batch_size=len(batches[0]), precision=precision, crf=None), device)
    runner.labels(batches[0])  # warm-up: allocation, cuDNN's choice of kernels
    if runner.on_gpu:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for batch in batches:
        runner.labels(batch)
    if runner.on_gpu:
        torch.cuda.synchronize()
    return sum(len(batch) for batch in batches) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backbones", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    batches = [[rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8) for _ in range(args.batch_size)]
               for _ in range(args.batches)]
    rates = {backbone: images_per_second(backbone, batches, args.device, args.precision) for backbone in BACKBONES}
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"DeepLab-v3, {args.size}x{args.size}, batch {args.batch_size}, precision {args.precision}, on {name}")
    for backbone, rate in rates.items():
        print(f"{backbone:20s} stride {BACKBONES[backbone].voc_output_stride:2d}  {rate:8.2f} images/s  "
              f"{rate / rates['resnet101']:5.2f}x resnet101")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
