"""Dense-CRF speed and fidelity over families of model outputs, and the CRF stage's scaling, measured side by side.

    python -m benchmarks.crf [--images 4] [--size 512] [--repeats 3] [--checkpoint URI] [--no-ray]
        [--cpu-counts 1,8,16] [--nodes 1,2]

For each family of model outputs (``benchmarks.scenarios.MODEL_OUTPUT_FAMILIES``: confident, low temperature,
i.i.d. logit noise, uncertain, many classes, weak shared boundaries; the outputs of a DeepLab trained here for
``--trained-iterations`` steps on 21 synthetic classes; a checkpoint's with ``--checkpoint``) prints: classes
present, labels the pruning keeps, seconds/image of the exact CRF (pydensecrf over every label) and of ours
(pruned; the two take turns, an image's seconds its fastest of ``--repeats`` runs), the speed-up, pixel agreement
against the exact CRF, the share of pixels the exact CRF moves from the model's argmax and the pixels on which the
pruned CRF differs from it per pixel moved (the CRF moves few: agreement alone flatters any CRF that does little), the
mIoU delta; where the pruned CRF's time goes. Then
the pipelines' CRF stage on a local Ray with 1, 2, 4 ... CPUs up to this machine's, on one Ray node or (``--nodes
1,2``) also split over several Ray nodes of this machine: start-up (submission to first image) and steady-state
images/s, and the scaling efficiency against N x the 1-CPU rate.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from benchmarks.memory_bandwidth import memory_bandwidth
from deeplab_core.crf import CRFParams, refine_low_res
from deeplab_core.extension import load_meanfield
from deeplab_core.inference import TRANSPORT_DTYPE, as_tensor, upsample_logits
from deeplab_core.metrics import ConfusionMatrix
from benchmarks.scenarios import MODEL_OUTPUT_FAMILIES, simulated_case
from deeplab_core.synthetic import make_sample

STRIDE = 8
# The node-manager ports of the extra Ray nodes of a multi-node measurement (the head's is Ray's default).
WORKER_NODE_PORT = 6391


def make_cases(family: str, count: int, size: int, classes: int, seed: int, model=None) -> list[tuple]:
    """(image, ground truth, low-resolution logits, stride) for each benchmark image of ``family``."""
    rng = np.random.default_rng(seed)
    if model is None:
        return [(*simulated_case(rng, family, size, classes), STRIDE) for _ in range(count)]
    from deeplab_core.runner import ModelRunner

    runner = ModelRunner(model, device="cpu")
    cases = []
    for _ in range(count):
        image, mask = make_sample(rng, size=size, num_classes=model.num_classes)
        cases.append((image, mask, runner.low_res([image])[0].astype(np.float32), model.output_stride))
    return cases


def train_small_model(classes: int = 21, iterations: int = 300, crop: int = 96, seed: int = 0):
    """A DeepLab-v2/ResNet-50 (stride 8) trained from scratch in this process on ``classes``-class synthetic scenes:
    a real model's outputs (soft, shared boundaries; confusion where it has not learnt a class) in a few CPU minutes.
    The paper's loss and poly LR; the from-scratch LR (deeplab_core.training.FROM_SCRATCH_LR, 1x head)."""
    from deeplab_core.inference import normalize
    from deeplab_core.models import build_model
    from deeplab_core.training import (
        FROM_SCRATCH_HEAD_LR_MULTIPLIER, FROM_SCRATCH_LR, build_optimizer, poly_lr_scheduler, segmentation_loss,
    )

    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(seed)
    model = build_model("deeplabv2", "resnet50", output_stride=8, num_classes=classes)
    optimizer = build_optimizer(model, lr=FROM_SCRATCH_LR, weight_decay=5e-4,
                                head_lr_multiplier=FROM_SCRATCH_HEAD_LR_MULTIPLIER)
    scheduler = poly_lr_scheduler(optimizer, iterations)
    model.train()
    for _ in range(iterations):
        samples = [make_sample(rng, size=crop, num_classes=classes, max_shapes=4) for _ in range(4)]
        images = normalize(np.stack([image for image, _ in samples]))
        masks = torch.from_numpy(np.stack([mask for _, mask in samples]))
        loss = segmentation_loss(model(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return model.eval()


def run_crf(cases: list[tuple], methods: tuple[str, ...], repeats: int = 1
            ) -> tuple[list[list[np.ndarray]], list[float]]:
    """Labels per method and its mean seconds/image, each image's seconds the fastest of ``repeats`` runs, the
    methods taking turns on each image: a slow spell of a shared machine then slows all of them, not the one that
    happened to run during it, and a spell that hit one run of one image is not counted."""
    labels: list[list[np.ndarray]] = [[] for _ in methods]
    seconds = [0.0] * len(methods)
    for image, _, low, stride in cases:
        fastest = [float("inf")] * len(methods)
        for repeat in range(repeats):
            for index, method in enumerate(methods):
                started = time.perf_counter()
                result = refine_low_res(image, low, stride, CRFParams(method=method))
                fastest[index] = min(fastest[index], time.perf_counter() - started)
                if repeat == 0:
                    labels[index].append(result)
        seconds = [total + best for total, best in zip(seconds, fastest)]
    return labels, [total / len(cases) for total in seconds]


def full_size_probabilities(case: tuple) -> np.ndarray:
    """The model's class probabilities at the image's size: what the CRF starts from."""
    image, _, low, stride = case
    return torch.softmax(upsample_logits(as_tensor(low, np.float32), image.shape[:2], stride), 0).numpy()


def labels_kept(case: tuple) -> int:
    """How many labels the pruned CRF runs over on ``case`` (the manifest's crf_labels)."""
    image, _, low, stride = case
    stats: dict[str, int] = {}
    refine_low_res(image, low, stride, CRFParams(), stats)
    return stats["labels"]


def miou(labels: list[np.ndarray], cases: list[tuple], classes: int) -> float:
    matrix = ConfusionMatrix(classes)
    for predicted, (_, mask, _, _) in zip(labels, cases):
        matrix.update(predicted, mask)
    return matrix.miou()


def compare(name: str, cases: list[tuple], classes: int, repeats: int = 1) -> None:
    present = [len(np.unique(mask)) for _, mask, _, _ in cases]
    probabilities = [full_size_probabilities(case) for case in cases]
    kept = [labels_kept(case) for case in cases]
    (exact, pruned), (exact_seconds, seconds) = run_crf(cases, ("exact", "pruned"), repeats)
    held = [len(np.unique(labels)) for labels in exact]  # the labels the exact CRF's result holds
    pixels = sum(labels.size for labels in exact)
    differ = sum(int((a != b).sum()) for a, b in zip(exact, pruned))
    # The CRF moves few pixels from the model's argmax: disagreement measured against that, not the whole image.
    moved = sum(int((labels != probs.argmax(0)).sum()) for labels, probs in zip(exact, probabilities))
    delta = miou(pruned, cases, classes) - miou(exact, cases, classes)
    print(f"| {name:<15} | {min(present)}-{max(present)} | {min(held)}-{max(held)} | {min(kept)}-{max(kept)} | "
          f"{exact_seconds:.3f} | "
          f"{seconds:.3f} | {exact_seconds / seconds:.2f}x | {(1 - differ / pixels) * 100:.3f}% | "
          f"{moved / pixels * 100:.2f}% | {differ / max(moved, 1) * 100:.2f}% | {delta:+.5f} |", flush=True)


def cost_breakdown(name: str, cases: list[tuple], repeats: int = 3) -> None:
    """Where one pruned CRF's time goes (refine_low_res' phases), per image over ``cases``; of ``repeats`` runs per
    image, the fastest (the one a shared machine disturbed least)."""
    phases: dict[str, float] = {}
    for image, _, low, stride in cases:
        runs = []
        for _ in range(repeats):
            run: dict[str, float] = {}
            refine_low_res(image, low, stride, CRFParams(), phases=run)
            runs.append(run)
        for phase, seconds in min(runs, key=lambda run: sum(run.values())).items():
            phases[phase] = phases.get(phase, 0.0) + seconds
    total = sum(phases.values())
    kept = [labels_kept(case) for case in cases]
    print(f"\nWhere the time goes: pruned CRF, '{name}' outputs, {min(kept)}-{max(kept)} labels kept, "
          f"{total / len(cases) * 1000:.0f} ms/image")
    print("| phase | ms/image | share |")
    print("|---|---|---|")
    for phase, seconds in phases.items():
        print(f"| {phase} | {seconds / len(cases) * 1000:.1f} | {seconds / total * 100:.0f}% |")


def use_token_authentication() -> None:
    """Token authentication for this process's Ray clients, as ``cluster.local``'s head requires. Ray reads it once,
    when first imported: call this before."""
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    os.environ["RAY_AUTH_MODE"] = "token"


@contextlib.contextmanager
def local_ray(cpus: int, nodes: int) -> Iterator[None]:
    """Ray with ``cpus`` CPUs: in this process for one node; else a head and ``nodes - 1`` worker nodes on this
    machine (``cluster.local``, token authentication), the CPUs split between them, so that rows and results cross
    nodes through Ray's object transfer as on a real cluster."""
    import ray

    if nodes == 1:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()
        return
    from cluster import local

    with tempfile.TemporaryDirectory(prefix="crf-bench-") as state_dir:
        state = Path(state_dir)
        # The head takes the token this process's Ray was imported with (see use_token_authentication).
        settings = dataclasses.replace(local.load_settings(state), auth_token=os.environ["RAY_AUTH_TOKEN"])
        shares = [cpus // nodes + (1 if node < cpus % nodes else 0) for node in range(nodes)]
        try:
            # Nodes that join take the machine's address: Ray's loopback-only mode is a single node's.
            local.start_ray_head(state, settings, num_cpus=shares[0], job_api=False, loopback_only=False)
            for node, share in enumerate(shares[1:]):
                local.start_ray_worker(state, settings, num_cpus=share, node_manager_port=WORKER_NODE_PORT + node)
            ray.init(address=f"{local.HOST}:{local.GCS_PORT}", log_to_driver=False)
            deadline = time.monotonic() + 60
            while len([node for node in ray.nodes() if node["Alive"]]) < nodes:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(ray.nodes())} of {nodes} Ray nodes joined within 60 s")
                time.sleep(0.5)
            yield
        finally:
            ray.shutdown()
            local.stop_ray(state)


def crf_stage_scaling(cases: list[tuple], cpus: int, per_cpu: int, nodes: int = 1) -> tuple[float, float]:
    """(start-up seconds, steady-state images/s) of the pipelines' CRF stage on a local Ray with ``cpus`` CPUs on
    ``nodes`` nodes, over ``per_cpu`` images per CPU (one image per block, as the segmentation pipeline feeds it)."""
    import ray.data

    from pipelines.common.runtime import configure_ray_data
    from pipelines.segmentation.stages import Refiner

    count = per_cpu * cpus
    inputs = [(image, low.astype(TRANSPORT_DTYPE)) for image, _, low, _ in cases]

    def attach_case(batch: dict) -> dict:
        # The images and logits are made in the CRF task itself (the two steps fuse into one task): the driver
        # ships an index per row, not megabytes, so the measurement is the CRF stage's, not the driver's.
        chosen = [inputs[int(index) % len(inputs)] for index in batch["index"]]
        return {"uri": [f"case{int(index)}" for index in batch["index"]], "error": [""] * len(chosen),
                "image": [image for image, _ in chosen], "logits": [low for _, low in chosen]}

    with local_ray(cpus, nodes):
        configure_ray_data()
        dataset = ray.data.from_items([{"index": i} for i in range(count)], override_num_blocks=count).map_batches(
            attach_case, batch_size=1, num_cpus=1).map_batches(
            Refiner(cases[0][3], keep_image=False), batch_size=1, num_cpus=1)  # as `segment` without --overlay
        started = time.perf_counter()
        arrivals = [time.perf_counter() for batch in dataset.iter_batches(batch_size=None) for _ in batch["uri"]]
    first = arrivals[0]
    # The first image per CPU carries the worker's cold start (imports, extension, lattice): steady state after it.
    warm = arrivals[cpus:] if len(arrivals) > cpus + 1 else arrivals
    return first - started, (len(warm) - 1) / (warm[-1] - warm[0])


_POOL_CASES: list[tuple] = []


def _refine_case(index: int) -> float:
    image, _, low, stride = _POOL_CASES[index % len(_POOL_CASES)]
    refine_low_res(image, low, stride)
    return time.perf_counter()


def _start_pool_worker(cases: list[tuple]) -> None:
    torch.set_num_threads(1)
    _POOL_CASES[:] = cases
    _refine_case(0)  # cold start (extension, first allocations) before the clock


def process_pool_rate(cases: list[tuple], cpus: int, per_cpu: int) -> float:
    """Steady-state images/s of ``cpus`` plain processes running the same CRF, without Ray: what this machine's
    cores and memory allow at that parallelism (cores sharing caches, memory bandwidth and clock boost)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(cpus, _start_pool_worker, (cases,)) as pool:
        arrivals = sorted(pool.map(_refine_case, range(per_cpu * cpus), chunksize=1))
    warm = arrivals[cpus:]
    return (len(warm) - 1) / (warm[-1] - warm[0])


def physical_cores() -> int | None:
    """Distinct physical cores among the CPUs this process may run on (None where Linux's topology files are not
    readable). Fewer than the CPUs means hyperthread siblings: two CRFs on one core share its execution units, so N
    busy CPUs cannot reach N x the rate of one."""
    cores = set()
    for cpu in os.sched_getaffinity(0):
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:
            return None
    return len(cores)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.crf", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4, help="images per family")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each CRF per image, the two taking turns; an image's seconds are its fastest")
    parser.add_argument("--families", default=",".join(MODEL_OUTPUT_FAMILIES),
                        help="comma-separated subset of the families ('' for none)")
    parser.add_argument("--checkpoint", help="also measure a real model's logits on synthetic scenes")
    parser.add_argument("--trained-iterations", type=int, default=300,
                        help="also train a DeepLab-v2/ResNet-50 here for this many steps on --classes synthetic "
                             "classes and measure its outputs (0: skip; ~2 min on 2 cores at 300)")
    parser.add_argument("--no-ray", action="store_true", help="skip the CRF-stage scaling measurement")
    parser.add_argument("--per-cpu", type=int, default=30, help="images per CPU in the scaling measurement")
    parser.add_argument("--cpu-counts", help="comma-separated CPU counts to measure besides 1, the baseline "
                                              "(default: 2, 4 ... up to this machine's CPUs, and its physical cores)")
    parser.add_argument("--nodes", default="1", help="comma-separated Ray node counts to measure each CPU count "
                                                     "on (e.g. 1,2: also split over two Ray nodes of this machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one core per CRF, as a CRF task has

    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    print(f"{args.images} images {args.size}x{args.size} per family, {args.classes} classes, one core, the CRF's "
          f"{load_meanfield().instruction_set()} build (DEEPLAB_CRF_ISA=generic: the other), seconds per image the "
          f"fastest of {args.repeats} runs")
    print("| family          | present | exact CRF holds | kept | exact s/img | pruned s/img | speed-up | agreement | "
          "exact CRF moves | pruned differs on, per pixel moved | mIoU delta |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for family in [name for name in args.families.split(",") if name]:
        compare(family, make_cases(family, args.images, args.size, args.classes, args.seed), args.classes,
                args.repeats)
    if args.trained_iterations:
        model = train_small_model(args.classes, args.trained_iterations, seed=args.seed)
        torch.set_num_threads(1)
        compare("trained model", make_cases("", args.images, args.size, args.classes, args.seed, model), args.classes,
                args.repeats)
    if args.checkpoint:
        from deeplab_core.checkpoint import load_model

        model, _ = load_model(args.checkpoint)
        compare("trained model", make_cases("", args.images, args.size, model.num_classes, args.seed, model),
                model.num_classes, args.repeats)
    cases = make_cases("uncertain", 4, args.size, args.classes, args.seed)
    cost_breakdown("uncertain", cases)
    cost_breakdown("weak boundaries", make_cases("weak boundaries", 4, args.size, args.classes, args.seed))
    if args.no_ray:
        return 0
    node_counts = sorted({int(count) for count in args.nodes.split(",")})
    if max(node_counts) > 1:
        use_token_authentication()
    cpus, cores = len(os.sched_getaffinity(0)), physical_cores()
    counts = (sorted({1, *[int(count) for count in args.cpu_counts.split(",")]}) if args.cpu_counts
              else sorted({1, *[2 ** k for k in range(1, 8) if 2 ** k <= cpus], cores or cpus, cpus}))
    print(f"\nCRF stage on a local Ray (pruned, 'uncertain' outputs), against N x the 1-CPU rate and against N plain "
          f"processes running the same CRF without Ray (the machine's own ceiling at that parallelism). This machine: "
          f"{cpus} CPUs on {cores or 'unknown'} physical cores. Memory bandwidth: N processes copying at once "
          f"(benchmarks/memory_bandwidth.py; a 512 x 512 CRF fetches 1-2 GB from memory).")
    print("| CPUs | Ray nodes | start-up s | steady images/s | vs N x 1 CPU | N processes, no Ray: images/s | "
          "vs N processes | memory GB/s, N processes |")
    print("|---|---|---|---|---|---|---|---|")
    single = None
    for cpus in counts:
        without_ray = process_pool_rate(cases, cpus, args.per_cpu)
        bandwidth = memory_bandwidth(cpus)
        for nodes in [count for count in node_counts if count <= cpus]:
            startup, rate = crf_stage_scaling(cases, cpus, args.per_cpu, nodes)
            single = single or rate
            print(f"| {cpus} | {nodes} | {startup:.1f} | {rate:.2f} | {rate / (cpus * single):.2f} | "
                  f"{without_ray:.2f} | {rate / without_ray:.2f} | {bandwidth:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
