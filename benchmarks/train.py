"""pipelines.train (Ray Train + Ray Data ingest) against a bare training loop on the same device, at steady state.

    python -m benchmarks.train [--device cuda|cpu] [--iterations 60] [--crop-size 321]
        [--batch-size 10] [--backbone resnet101] [--amp] [--msc-only]

Both train DeepLab-v2 on the same synthetic VOC-layout dataset with the same recipe, transforms, batch size and
precision (bf16 autocast with ``--amp`` on GPUs; channels_last on GPUs). The bare loop is what a user writes by
hand: a torch DataLoader whose workers decode and augment, the model in one process. Steady state excludes the
first iterations (cuDNN autotuning, pipeline start). Prints images/s of each and the ratio; first, the step time of
one fixed batch with and without multi-scale inputs (``--msc``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deeplab_core.data import VOCSegmentation, train_transform
from deeplab_core.inference import normalize
from deeplab_core.io import read_bytes
from deeplab_core.models import build_model
from deeplab_core.synthetic import generate
from deeplab_core.training import build_optimizer, poly_lr_scheduler, segmentation_loss


class Crops(torch.utils.data.Dataset):
    def __init__(self, root: str, crop_size: int, length: int) -> None:
        self.samples = VOCSegmentation(root, "train")
        self.transform = train_transform(crop_size)
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.samples[index % len(self.samples)]
        image, mask = self.transform(image, mask, np.random.default_rng(index))
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(mask)).long()


def bare_loop(args: argparse.Namespace, data: str, classes: int) -> float:
    device = torch.device(args.device)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = build_model("deeplabv2", args.backbone, args.output_stride, classes).to(device, memory_format=memory_format)
    optimizer = build_optimizer(model, 2.5e-4, 5e-4)
    scheduler = poly_lr_scheduler(optimizer, args.iterations)
    loader = torch.utils.data.DataLoader(Crops(data, args.crop_size, args.iterations * args.batch_size),
                                         batch_size=args.batch_size, num_workers=args.loader_workers, drop_last=True,
                                         pin_memory=device.type == "cuda")
    warmup = min(5, args.iterations // 4)
    model.train()
    for iteration, (images, masks) in enumerate(loader):
        if iteration == warmup:
            _synchronize(device)
            started = time.perf_counter()
        images = normalize(images.to(device, non_blocking=True)).contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp and device.type == "cuda"):
            loss = segmentation_loss(model(images), masks.to(device, non_blocking=True))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
    _synchronize(device)
    return (args.iterations - warmup) * args.batch_size / (time.perf_counter() - started)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def pipeline(args: argparse.Namespace, data: str, output: str) -> float:
    from pipelines import train

    argv = ["--data", data, "--output", output, "--arch", "deeplabv2", "--backbone", args.backbone,
            "--output-stride", str(args.output_stride), "--crop-size", str(args.crop_size), "--batch-size",
            str(args.batch_size), "--iterations", str(args.iterations), "--workers", "1",
            "--val-every", str(args.iterations), "--keep-checkpoints", "1",
            "--cpus-per-worker", str(max(1, (os.cpu_count() or 2) // 2))]
    if args.device == "cuda":
        argv += ["--use-gpu"] + (["--amp"] if args.amp else [])
    assert train.main(argv) == 0
    return json.loads(read_bytes(f"{output}/workers/rank_0.json"))["steady_images_per_second"]


def msc_step_seconds(args: argparse.Namespace, repeats: int = 5) -> tuple[float, float]:
    """Seconds per training step (forward, backward, SGD) on one fixed batch, single-scale and with MSC
    (``deeplab_core.msc``, scales 1, 0.75, 0.5), taking turns so both see the same machine; fastest of ``repeats``."""
    from deeplab_core.msc import MSC_SCALES, msc_losses

    device = torch.device(args.device)
    model = build_model("deeplabv2", args.backbone, args.output_stride, args.classes).to(device).train()
    optimizer = build_optimizer(model, lr=1e-4, weight_decay=5e-4)
    images = torch.randn(args.batch_size, 3, args.crop_size, args.crop_size, device=device)
    target = torch.randint(0, args.classes, (args.batch_size, args.crop_size, args.crop_size), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp)

    def step(msc: bool) -> float:
        started = time.perf_counter()
        with autocast:
            loss = (torch.stack(msc_losses(model, images, target, MSC_SCALES)).sum() if msc
                    else segmentation_loss(model(images), target))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    step(False), step(True)  # warm-up (cuDNN, allocator)
    plain, msc = zip(*[(step(False), step(True)) for _ in range(repeats)])
    return min(plain), min(msc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--crop-size", type=int, default=321)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--backbone", default="resnet101")
    parser.add_argument("--output-stride", type=int, default=8)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (GPUs)")
    parser.add_argument("--loader-workers", type=int, default=min(8, max(1, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--msc-only", action="store_true", help="only the step time with and without --msc")
    args = parser.parse_args(argv)
    plain, msc = msc_step_seconds(args)
    print(f"one training step, batch {args.batch_size} crop {args.crop_size}: {plain:.3f} s single-scale, "
          f"{msc:.3f} s with --msc (scales 1, 0.75, 0.5): {msc / plain:.2f}x")
    if args.msc_only:
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    data = str(work / "data")
    generate(data, num_images=64, size=max(args.crop_size, 128), num_classes=args.classes, seed=0)
    print(f"DeepLab-v2/{args.backbone} stride {args.output_stride}, crop {args.crop_size}, batch {args.batch_size}, "
          f"{args.iterations} iterations, device {args.device}, {'bf16' if args.amp else 'fp32'}")
    bare = bare_loop(args, data, args.classes)
    print(f"bare loop        {bare:8.2f} images/s (steady state)")
    ours = pipeline(args, data, str(work / "run"))
    print(f"pipelines.train  {ours:8.2f} images/s (steady state)  ratio {ours / bare:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
