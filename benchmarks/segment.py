"""The segmentation and evaluation pipelines against a hand-written loop on the SAME device and precision, measured
side by side in one run on the same images.

    python -m benchmarks.segment [--device cuda|cpu] [--precision auto] [--images 256]
        [--distinct 128] [--size 512] [--backbone resnet101] [--output-stride 8] [--checkpoint URI] [--crf-images N]
        [--no-evaluate]

Prints images/s of: the model alone (batches already on the device); ``ModelRunner`` alone (decoded images in, labels
out); a bare loop (a torch DataLoader whose workers decode JPEGs to uint8, the model on the device with device-side
normalisation and argmax, uint8 labels back to the host: what a user writes by hand, timed with the model already
loaded and tuned); ``pipelines.segment --no-crf`` on a local Ray, at steady state (from the masks' write times) and
end to end with its start-up (Ray, actors, model load) reported apart; and ``pipelines.evaluate`` against a bare
scoring loop, end to end. Ratios pipeline / bare loop and pipeline / model alone; the model stage's busy fraction
(its summed seconds over the run's wall time); and the pixel agreement of bf16 masks with fp32 masks. Without
``--checkpoint`` a randomly initialised DeepLab-v2 stands in (speed does not depend on the weights; agreement does:
give a trained checkpoint for a meaningful agreement figure).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.crf import labels_kept
from deeplab_core.checkpoint import load_model, save_checkpoint
from deeplab_core.inference_settings import InferenceSettings
from deeplab_core.io import decode_image, read_bytes
from deeplab_core.metrics import ConfusionMatrix
from deeplab_core.models import build_model
from deeplab_core.runner import ModelRunner
from deeplab_core.synthetic import generate


class DecodedImages(torch.utils.data.Dataset):
    def __init__(self, uris: list[str]) -> None:
        self.uris = uris

    def __len__(self) -> int:
        return len(self.uris)

    def __getitem__(self, index: int) -> np.ndarray:
        return decode_image(read_bytes(self.uris[index]), self.uris[index])


def bare_loop(runner: ModelRunner, uris: list[str], batch_size: int, workers: int) -> tuple[float, list]:
    """images/s and labels of a hand-written DataLoader loop over ``uris`` (same-size images)."""
    loader = torch.utils.data.DataLoader(DecodedImages(uris), batch_size=batch_size, num_workers=workers,
                                         collate_fn=list, prefetch_factor=4 if workers else None)
    started = time.perf_counter()
    labels = [label for images in loader for label in runner.labels(images)]
    return len(uris) / (time.perf_counter() - started), labels


def copies(sources: list[Path], folder: Path, count: int) -> list[str]:
    """``count`` JPEG files in ``folder``, copies of ``sources`` in turn (generating each one costs far more)."""
    folder.mkdir(parents=True)
    uris = []
    for index in range(count):
        uri = folder / f"{index:06d}.jpg"
        shutil.copyfile(sources[index % len(sources)], uri)
        uris.append(str(uri))
    return uris


def grow_val_split(data: str, count: int, split: str) -> None:
    """A split ``split`` of ``count`` samples: copies of the dataset's val image/mask pairs."""
    from deeplab_core.data import image_uri, mask_uri, read_split
    from deeplab_core.data.voc import SPLIT_DIR

    originals = read_split(data, "val")
    ids = []
    for index in range(count):
        source, copy = originals[index % len(originals)], f"{split}_{index:06d}"
        shutil.copyfile(image_uri(data, source), image_uri(data, copy))
        shutil.copyfile(mask_uri(data, source), mask_uri(data, copy))
        ids.append(copy)
    Path(data, SPLIT_DIR, f"{split}.txt").write_text("\n".join(ids) + "\n")


def cold_bare_loop(listing: Path, checkpoint: str, args: argparse.Namespace) -> float:
    """images/s of the bare loop run as a user runs a script: a fresh process that imports torch, loads the model,
    creates the CUDA context before its first batch (the pipeline pays the same, plus Ray's)."""
    command = [sys.executable, "-m", "benchmarks.segment", "--bare-child", str(listing), "--checkpoint", checkpoint,
               "--device", args.device, "--precision", args.precision, "--batch-size", str(args.batch_size),
               "--workers", str(args.workers)]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return len(listing.read_text().split()) / (time.perf_counter() - started)


def model_alone(runner: ModelRunner, image: np.ndarray, batch_size: int, repeats: int) -> float:
    batch = runner.normalised_batch([image] * batch_size)
    with torch.inference_mode(), torch.autocast(runner.device.type, dtype=torch.bfloat16,
                                                enabled=runner.precision == "bf16"):
        runner.model.low_res_logits(batch)  # warm-up in the timed precision
        _synchronize(runner.device)
        started = time.perf_counter()
        for _ in range(repeats):
            runner.model.low_res_logits(batch)
        _synchronize(runner.device)
    return repeats * batch_size / (time.perf_counter() - started)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def runner_alone(runner: ModelRunner, images: list[np.ndarray], batch_size: int, repeats: int) -> float:
    """images/s of ``ModelRunner`` on decoded images: stacking, copies, model, argmax, labels back to the host, with
    ``repeats`` calls queued back to back as the pipeline's model actor queues them."""
    batch = images[:batch_size]
    runner.labels(batch)
    started = time.perf_counter()
    for call in [runner.submit(batch, labels=True) for _ in range(repeats)]:
        call.result()
    return repeats * len(batch) / (time.perf_counter() - started)


@dataclass
class PipelineRun:
    images_per_second: float  # end to end: from the command's start to its last manifest row
    steady_images_per_second: float  # while masks were being written: from the first block's to the last
    start_up_seconds: float  # from the command's start to its first mask (Ray, actors, model load, cuDNN tuning)
    model_busy: float  # the model stage's summed seconds over the end-to-end time
    crf_seconds: float  # the CRF's mean seconds per image inside its tasks (0 without the CRF)
    crf_cpus: float  # the CPUs left to CRF tasks: the machine's less the model actor's


def run_segment(inputs: str, output: str, checkpoint: str, args: argparse.Namespace, crf: bool) -> PipelineRun:
    from pipelines import segment
    from pipelines.segmentation.manifest import read_manifest

    argv = ["--input", inputs, "--output", output, "--checkpoint", checkpoint, "--batch-size", str(args.batch_size),
            "--precision", args.precision] + ([] if crf else ["--no-crf"])
    started, started_clock = time.perf_counter(), time.time()
    assert segment.main(argv) == 0
    elapsed = time.perf_counter() - started
    table = read_manifest(output)
    assert set(table.column("status").to_pylist()) == {"ok"}
    written = np.sort([os.stat(uri).st_mtime for uri in table.column("mask_uri").to_pylist()])
    # Masks are written a block at a time: the steady rate counts what was written after the first block.
    after_first = written[written > written[0] + 0.05]
    steady = len(after_first) / (after_first[-1] - written[0]) if len(after_first) > 1 else float("nan")
    return PipelineRun(table.num_rows / elapsed, steady, written[0] - started_clock,
                       sum(table.column("seconds_model").to_pylist()) / elapsed,
                       float(np.mean(table.column("seconds_crf").to_pylist())),
                       (os.cpu_count() or 1) - segment.parse_args(argv).resources.cpus_per_actor)


def run_evaluate(data: str, split: str, output: str, checkpoint: str, args: argparse.Namespace) -> tuple[float, float]:
    """(seconds, mIoU without CRF) of ``pipelines.evaluate`` on ``split``."""
    import json

    from pipelines import evaluate

    started = time.perf_counter()
    assert evaluate.main(["--data", data, "--split", split, "--checkpoint", checkpoint, "--output", output,
                          "--batch-size", str(args.batch_size), "--precision", args.precision]) == 0
    elapsed = time.perf_counter() - started
    return elapsed, json.loads(Path(output, "report.json").read_text())["without_crf"]["miou"]


def bare_evaluate(runner: ModelRunner, data: str, split: str, num_classes: int,
                  args: argparse.Namespace) -> tuple[float, float]:
    from deeplab_core.data import image_uri, mask_uri, read_split
    from deeplab_core.io import decode_mask

    ids = read_split(data, split)
    started = time.perf_counter()
    rate, labels = bare_loop(runner, [image_uri(data, i) for i in ids], args.batch_size, args.workers)
    matrix = ConfusionMatrix(num_classes)
    for sample_id, predicted in zip(ids, labels):
        matrix.update(predicted, decode_mask(read_bytes(mask_uri(data, sample_id))))
    return len(ids) / (time.perf_counter() - started), matrix.miou()


def compare_evaluate(runner: ModelRunner, data: str, checkpoint: str, classes: int, work: Path,
                     args: argparse.Namespace) -> None:
    """``pipelines.evaluate`` on N and on 3N images against the bare scoring loop on 3N: end to end, and at steady
    state from the difference of the two runs (the start-up cancels out; Ray is up and warmed by a first run)."""
    count = args.eval_images or args.distinct
    grow_val_split(data, count, "bench")
    grow_val_split(data, 3 * count, "bench3")
    bare_rate, bare_miou = bare_evaluate(runner, data, "bench3", classes, args)
    from pipelines.common.runtime import init_ray

    init_ray()  # before the runs: Ray's own start is paid once, and would otherwise count against the first
    # A first run warms what later runs reuse (Ray's worker processes, with torch imported): not timed.
    run_evaluate(data, "bench", str(work / "evaluation-warm-up"), checkpoint, args)
    short, _ = run_evaluate(data, "bench", str(work / "evaluation"), checkpoint, args)
    long, miou = run_evaluate(data, "bench3", str(work / "evaluation3"), checkpoint, args)
    steady = 2 * count / (long - short)
    print(f"pipelines.evaluate     {steady:8.2f} images/s steady state (runs of {count} and {3 * count} images): "
          f"ratio {steady / bare_rate:.2f} of the bare scoring loop ({bare_rate:.2f} images/s)")
    print(f"  end to end           {3 * count / long:8.2f} images/s ({3 * count} images, Ray already up): ratio "
          f"{3 * count / long / bare_rate:.2f}; mIoU {miou:.4f} vs the bare loop's {bare_miou:.4f}")


def compare_segment(runner: ModelRunner, model, uris: list[str], checkpoint: str, work: Path,
                    args: argparse.Namespace) -> None:
    """The model alone, ``ModelRunner`` alone, the bare loop warm and cold, and ``pipelines.segment --no-crf``, on
    ``uris``."""
    repeats = max(2, 256 // args.batch_size if args.device == "cuda" else 16 // args.batch_size)
    sample = [decode_image(read_bytes(uri)) for uri in uris[:16]]
    alone = model_alone(runner, sample[0], args.batch_size, repeats)
    runner_rate = runner_alone(runner, sample, args.batch_size, repeats)
    bare, bare_labels = bare_loop(runner, uris, args.batch_size, args.workers)
    fp32 = ModelRunner(model, InferenceSettings(precision="fp32", batch_size=args.batch_size), args.device)
    half = ModelRunner(model, InferenceSettings(precision="bf16", batch_size=args.batch_size), args.device)
    agreement = np.mean([np.mean(a == b) for a, b in zip(fp32.labels(sample), half.labels(sample))])
    print(f"model alone            {alone:8.2f} images/s  (normalised batches on the device)")
    print(f"ModelRunner alone      {runner_rate:8.2f} images/s  (decoded uint8 images in, labels out, calls queued)")
    print(f"bare loop              {bare:8.2f} images/s  ({args.workers} DataLoader workers)")
    print(f"bf16 vs fp32 masks     {agreement * 100:.3f}% of pixels agree (16 images)")

    listing = work / "inputs.txt"
    listing.write_text("\n".join(uris) + "\n")
    cold = cold_bare_loop(listing, checkpoint, args)
    print(f"bare loop, cold        {cold:8.2f} images/s  (a fresh process: imports, model load, CUDA context)")

    from pipelines.common.runtime import init_ray

    started = time.perf_counter()
    init_ray()
    ray_start = time.perf_counter() - started
    run = run_segment(str(listing), str(work / "out"), checkpoint, args, crf=False)
    print(f"pipelines.segment      {run.steady_images_per_second:8.2f} images/s steady state: ratio "
          f"{run.steady_images_per_second / bare:.2f} of the bare loop, {run.steady_images_per_second / alone:.2f} of "
          f"the model alone")
    end_to_end = len(uris) / (len(uris) / run.images_per_second + ray_start)
    print(f"  end to end           {end_to_end:8.2f} images/s: ratio {end_to_end / cold:.2f} of the cold bare loop; "
          f"start-up {ray_start:.1f} s Ray + {run.start_up_seconds:.1f} s to the first mask; model stage busy "
          f"{run.model_busy * 100:.0f}%")


def segment_with_crf(runner: ModelRunner, uris: list[str], checkpoint: str, work: Path,
                     args: argparse.Namespace) -> None:
    """``pipelines.segment`` with the CRF on the first ``--crf-images`` of ``uris``, and what limits it."""
    from pipelines.common.runtime import init_ray

    init_ray()
    crf_listing = work / "crf-inputs.txt"
    crf_listing.write_text("\n".join(uris[: args.crf_images]) + "\n")
    with_crf = run_segment(str(crf_listing), str(work / "out-crf"), checkpoint, args, crf=True)
    print(f"pipelines.segment+CRF  {with_crf.steady_images_per_second:8.2f} images/s steady state "
          f"({min(args.crf_images, len(uris))} images, {os.cpu_count()} CPUs), {with_crf.images_per_second:.2f} "
          f"end to end (start-up {with_crf.start_up_seconds:.1f} s)")
    # What the CRF costs on these very outputs (an untrained model's are far less confident than a trained
    # one's), and the rate the CPUs left to CRF tasks allow at that cost.
    sample = [decode_image(read_bytes(uri)) for uri in uris[:8]]
    kept = [labels_kept((image, None, low, runner.stride)) for image, low in zip(sample, runner.low_res(sample))]
    print(f"  labels kept          {min(kept)}-{max(kept)} of {runner.model.num_classes} on {len(sample)} of these "
          f"images")
    ceiling = with_crf.crf_cpus / with_crf.crf_seconds
    print(f"  CRF                  {with_crf.crf_seconds:8.3f} s/image in its tasks: {with_crf.crf_cpus:g} CPUs allow "
          f"{ceiling:.2f} images/s; steady state reached {with_crf.steady_images_per_second / ceiling:.2f} of it")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.segment", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--images", type=int, default=256, help="images segmented")
    parser.add_argument("--distinct", type=int, default=128,
                        help="distinct synthetic images generated (copied to make up --images); evaluate scores these")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--backbone", default="resnet101")
    parser.add_argument("--output-stride", type=int, default=8)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--checkpoint")
    parser.add_argument("--workers", type=int, default=min(8, max(1, (os.cpu_count() or 2) - 1)),
                        help="DataLoader workers of the bare loop")
    parser.add_argument("--crf-images", type=int, default=0,
                        help="also run the pipeline with the CRF on this many of the images")
    parser.add_argument("--no-evaluate", action="store_true")
    parser.add_argument("--no-segment", action="store_true",
                        help="skip the segmentation comparison without the CRF (model, bare loop, pipeline)")
    parser.add_argument("--eval-images", type=int, default=0,
                        help="N: evaluate scores N and 3N images (copies of the val split; default --distinct)")
    parser.add_argument("--bare-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_child:
        model, _ = load_model(args.checkpoint)
        settings = InferenceSettings(precision=args.precision, batch_size=args.batch_size)
        runner = ModelRunner(model, settings, args.device)
        bare_loop(runner, Path(args.bare_child).read_text().split(), args.batch_size, args.workers)
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench-segment-"))
    checkpoint = args.checkpoint or str(work / "model.pt")
    if not args.checkpoint:
        torch.manual_seed(0)
        save_checkpoint(checkpoint, build_model("deeplabv2", args.backbone, args.output_stride, args.classes))
    model, loaded = load_model(checkpoint)
    classes = loaded.spec.num_classes
    data = str(work / "data")
    generate(data, num_images=2 * args.distinct, size=args.size, num_classes=classes, seed=0, val_fraction=0.5)
    uris = copies(sorted(Path(data, "JPEGImages").glob("*.jpg"))[: args.distinct], work / "inputs", args.images)
    runner = ModelRunner(model, InferenceSettings(precision=args.precision, batch_size=args.batch_size),
                         args.device)
    device = f"{args.device} ({torch.cuda.get_device_name()})" if args.device == "cuda" else args.device
    print(f"{len(uris)} images {args.size}x{args.size}, {loaded.spec.arch}/{loaded.spec.backbone} "
          f"stride {model.output_stride}, {classes} classes, device {device}, precision {runner.precision}, "
          f"batch {args.batch_size}, {os.cpu_count()} CPUs")

    if not args.no_segment:
        compare_segment(runner, model, uris, checkpoint, work, args)
    if args.crf_images:
        segment_with_crf(runner, uris, checkpoint, work, args)
    if not args.no_evaluate:
        compare_evaluate(runner, data, checkpoint, classes, work, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
