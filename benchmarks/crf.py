"""Dense-CRF speed and fidelity, measured side by side in one run on the same images.

    ../shared/bin/loopback python -m benchmarks.crf [--images 8] [--size 512] [--classes 21] [--no-ray]

Prints seconds/image of the exact 21-label CRF (pydensecrf over every label) and of ours
(``deeplab_core._meanfield``) over every label (epsilon 0) and with label pruning at several epsilons, the
speed-up, pixel agreement and mIoU against the exact CRF, then the CRF stage's images/s on a local Ray with 1 and
2 CPUs. Images are synthetic 21-class scenes holding 2-4 classes, scored by model-like logits
at output stride 8 (``deeplab_core.synthetic.simulated_logits``) or, with ``--checkpoint``, by a real model.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from deeplab_core.crf import DEFAULT_PRUNE_EPSILON, dense_crf
from deeplab_core.metrics import ConfusionMatrix
from deeplab_core.synthetic import make_sample, simulated_logits

EPSILONS = (0.0, 1e-4, DEFAULT_PRUNE_EPSILON, 1e-2)


def make_cases(count: int, size: int, classes: int, seed: int, checkpoint: str | None) -> list[tuple]:
    """(image, ground truth, low-resolution logits, stride) for each benchmark image."""
    rng = np.random.default_rng(seed)
    model = None
    if checkpoint:
        from deeplab_core.checkpoint import load_model

        model, _ = load_model(checkpoint)
    cases = []
    for _ in range(count):
        image, mask = make_sample(rng, size=size, num_classes=classes)
        if model is None:
            cases.append((image, mask, simulated_logits(mask, classes, rng), 8))
            continue
        from deeplab_core.inference import normalize, predict_low_res

        low = predict_low_res(model, normalize(image)[None])[0].numpy()
        cases.append((image, mask, low, model.output_stride))
    return cases


def run_crf(cases: list[tuple], epsilon: float | None) -> tuple[list[np.ndarray], float]:
    from deeplab_core.crf import refine_low_res

    started = time.perf_counter()
    labels = [refine_low_res(image, low, stride, prune_epsilon=epsilon) for image, _, low, stride in cases]
    return labels, (time.perf_counter() - started) / len(cases)


def miou(labels: list[np.ndarray], cases: list[tuple], classes: int) -> float:
    matrix = ConfusionMatrix(classes)
    for predicted, (_, mask, _, _) in zip(labels, cases):
        matrix.update(predicted, mask)
    return matrix.miou()


def crf_stage_throughput(cases: list[tuple], cpus: int, repeat: int = 2) -> float:
    """Images/s of the pipelines' CRF stage (``pipelines.stages.Refiner``) on a local Ray with ``cpus`` CPUs."""
    import ray
    import ray.data

    from pipelines.stages import Refiner

    rows = [{"uri": f"case{i}", "image": image, "logits": low.astype(np.float16), "error": ""}
            for i, (image, _, low, _) in enumerate(cases)] * repeat
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            Refiner(cases[0][3]), batch_size=1, num_cpus=1)
        started = time.perf_counter()
        count = sum(len(batch["uri"]) for batch in dataset.iter_batches(batch_size=None))
        return count / (time.perf_counter() - started)
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.crf", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", help="score the images with this model instead of simulated logits")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray CRF-stage scaling measurement")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one core per CRF, as a CRF task has

    cases = make_cases(args.images, args.size, args.classes, args.seed, args.checkpoint)
    present = [len(np.unique(mask)) for _, mask, _, _ in cases]
    print(f"{len(cases)} images {args.size}x{args.size}, {args.classes} classes, {min(present)}-{max(present)} present")
    exact, exact_seconds = run_crf(cases, None)
    exact_miou = miou(exact, cases, args.classes)
    print(f"{'exact (pydensecrf):':<22} {exact_seconds:.3f} s/image   mIoU {exact_miou:.4f}")
    for epsilon in EPSILONS:
        pruned, seconds = run_crf(cases, epsilon)
        agreement = np.mean(np.concatenate([(a == b).ravel() for a, b in zip(exact, pruned)]))
        delta = miou(pruned, cases, args.classes) - exact_miou
        marker = "  <- default" if epsilon == DEFAULT_PRUNE_EPSILON else ""
        name = f"ours, epsilon {epsilon:g}:" if epsilon else f"ours, all {args.classes} labels:"
        print(f"{name:<22} {seconds:.3f} s/image   speed-up {exact_seconds / seconds:.2f}x   "
              f"agreement {agreement * 100:.3f}%   mIoU delta {delta:+.5f}{marker}")
    if not args.no_ray:
        one = crf_stage_throughput(cases, 1)
        two = crf_stage_throughput(cases, 2)
        print(f"CRF stage on local Ray (default epsilon): 1 CPU {one:.2f} images/s, 2 CPUs {two:.2f} images/s, "
              f"scaling {two / one:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
