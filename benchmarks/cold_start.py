"""Where a model actor's start-up goes, and what cuDNN autotuning costs and buys, each measured in a fresh process.

    python -m benchmarks.cold_start [--device cuda|cpu] [--backbone resnet101] [--size 512] [--batches 24]

A model actor starts cold: it imports torch, loads the checkpoint, moves the model to its device (creating the CUDA
context), and its first call of each input shape pays cuDNN's autotuning when ``torch.backends.cudnn.benchmark`` is
on. For fixed-size inputs and for a mix of 16 sizes (a real bucket's images differ), with autotuning on and off,
prints: seconds to import torch, load, reach the device, the first pass over every shape, and the steady images/s
after it. The ratio "on / off" of steady images/s is what autotuning buys; the first pass is what it costs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIXED_SHAPES = 16


def child(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    import numpy as np
    import torch

    imported = time.perf_counter()
    from deeplab_core.checkpoint import load_model
    from deeplab_core.inference_settings import InferenceSettings
    from deeplab_core.runner import ModelRunner

    model, _ = load_model(args.checkpoint)
    loaded = time.perf_counter()
    runner = ModelRunner(model, InferenceSettings(batch_size=args.batch_size), args.device,
                         autotune_after=0 if args.autotune else sys.maxsize)
    if runner.on_gpu:
        torch.cuda.synchronize()
    on_device = time.perf_counter()
    rng = np.random.default_rng(0)
    if args.mixed:
        sides = rng.integers(args.size * 3 // 4, args.size * 5 // 4, size=(MIXED_SHAPES, 2))
        shapes = [(int(h), int(w)) for h, w in sides]
    else:
        shapes = [(args.size, args.size)]
    batches = {shape: [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(args.batch_size)]
               for shape in shapes}
    for shape in shapes:  # the first call of every shape: autotuning, if on
        runner.labels(batches[shape])
    first_pass = time.perf_counter()
    calls = [runner.submit(batches[shapes[i % len(shapes)]], labels=True) for i in range(args.batches)]
    for call in calls:
        call.result()
    steady = args.batches * args.batch_size / (time.perf_counter() - first_pass)
    print(json.dumps({"import": imported - started, "load": loaded - imported, "device": on_device - loaded,
                      "first_pass": first_pass - on_device, "steady": steady}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cold_start", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backbone", default="resnet101")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=24, help="model calls timed after the first pass")
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mixed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--autotune", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0

    import torch

    from deeplab_core.checkpoint import save_checkpoint
    from deeplab_core.models import build_model

    checkpoint = str(Path(tempfile.mkdtemp(prefix="bench-cold-")) / "model.pt")
    torch.manual_seed(0)
    save_checkpoint(checkpoint, build_model("deeplabv2", args.backbone, 8, 21))
    print(f"DeepLab-v2/{args.backbone} stride 8, batch {args.batch_size}, device {args.device}, each row a fresh "
          f"process; mixed = {MIXED_SHAPES} sizes within 0.75-1.25 x {args.size}")
    print("| inputs | autotune | import torch s | load s | to device s | first pass s | steady images/s |")
    print("|---|---|---|---|---|---|---|")
    steady = {}
    for mixed in (False, True):
        for autotune in (True, False):
            command = [sys.executable, "-m", "benchmarks.cold_start", "--child", "--checkpoint", checkpoint,
                       "--device", args.device, "--size", str(args.size), "--batch-size", str(args.batch_size),
                       "--batches", str(args.batches)] + (["--mixed"] if mixed else []) + (
                          ["--autotune"] if autotune else [])
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            times = json.loads(result.stdout.strip().splitlines()[-1])
            steady[mixed, autotune] = times["steady"]
            print(f"| {'mixed' if mixed else f'{args.size}x{args.size}'} | {'on' if autotune else 'off'} | "
                  f"{times['import']:.1f} | {times['load']:.1f} | {times['device']:.1f} | {times['first_pass']:.1f} | "
                  f"{times['steady']:.1f} |", flush=True)
    for mixed in (False, True):
        print(f"autotuning on / off, steady images/s, {'mixed' if mixed else 'fixed'} sizes: "
              f"{steady[mixed, True] / steady[mixed, False]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
