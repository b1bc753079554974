"""Segment every image under a folder, bucket prefix or URI list with a trained DeepLab, on Ray Data.

    python -m pipelines.segment --input URI --output URI --checkpoint URI [options]

One streaming pipeline: list -> read + decode (CPU tasks) -> model (actor pool; GPUs when the cluster has them)
-> dense CRF (CPU tasks) -> palette PNG masks written straight to ``<output>/masks/`` -> Parquet manifest rows in
``<output>/manifest/``. A bad input never stops the job: it gets a manifest row with status "error". A re-run into
the same output skips inputs already done and leaves exactly one manifest row per input.

Images larger than ``--max-side`` are segmented at reduced size (model and CRF, whose cost grows with pixels) and the
mask is resized back to the input's own size with nearest-neighbour sampling; overlays stay at the reduced size.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

from deeplab_core.checkpoint import CheckpointError, load_checkpoint
from deeplab_core.crf import DEFAULT_PRUNE_EPSILON, CRFParams
from pipelines.inputs import InputError, list_inputs
from pipelines.manifest import compact, completed_uris, run_folder


def parse_scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scales must be comma-separated numbers, got {text!r}") from None
    if not scales or any(scale <= 0 for scale in scales):
        raise argparse.ArgumentTypeError(f"--scales must be positive, got {text!r}")
    return scales


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by segment and evaluate: how the model and the CRF run."""
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint file, a training --output folder, or a Ray Train checkpoint folder")
    parser.add_argument("--scales", type=parse_scales, default=(1.0,), help="multi-scale inference, e.g. 0.5,0.75,1.0")
    parser.add_argument("--flip", action="store_true", help="also run on the mirrored image and average")
    parser.add_argument("--batch-size", type=int, default=8, help="images per model call")
    parser.add_argument("--model-actors", type=int, default=1, help="model replicas (actors)")
    parser.add_argument("--gpus-per-actor", type=float, default=1.0, help="GPUs per model actor when the cluster has GPUs")
    parser.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs per model actor")
    parser.add_argument("--crf-cpus", type=float, default=1.0, help="CPUs per CRF task")
    parser.add_argument("--max-side", type=int, default=None, help="segment larger images at this longest side")
    parser.add_argument("--crf-iterations", type=int, default=CRFParams.iterations, help="mean-field iterations")
    parser.add_argument("--crf-epsilon", type=float, default=DEFAULT_PRUNE_EPSILON,
                        help="label pruning: the CRF runs over labels whose probability exceeds this somewhere "
                             "(0: every label)")
    parser.add_argument("--crf-exact", action="store_true",
                        help="the reference CRF: pydensecrf over all labels, no pruning (~5x slower)")


def crf_params(args: argparse.Namespace) -> dict:
    return {"iterations": args.crf_iterations, "prune_epsilon": None if args.crf_exact else args.crf_epsilon}


def model_stage_resources(args: argparse.Namespace) -> dict:
    """``map_batches`` resources for the model actors: GPUs if the cluster has any, else CPU actors.

    With CPU actors whose resources equal the decode tasks', Ray Data fuses decoding into the actors (one transfer
    fewer); with GPUs it cannot, and decoding stays in CPU tasks off the GPU actors.
    """
    import ray

    from ray.data import ActorPoolStrategy

    has_gpus = ray.cluster_resources().get("GPU", 0) > 0 and args.gpus_per_actor > 0
    resources = {"num_cpus": args.cpus_per_actor}
    if has_gpus:
        resources["num_gpus"] = args.gpus_per_actor
    return {"compute": ActorPoolStrategy(size=args.model_actors), **resources}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.segment", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--input", required=True, help="folder or s3:// prefix of images, or a .txt / .parquet of URIs")
    parser.add_argument("--output", required=True, help="where masks/, overlays/ and manifest/ go")
    add_model_options(parser)
    parser.add_argument("--no-crf", action="store_true", help="argmax of the model's logits, no dense CRF")
    parser.add_argument("--overlay", action="store_true", help="also write colour overlays to <output>/overlays/")
    parser.add_argument("--rows-per-block", type=int, default=64,
                        help="inputs per Ray Data block; a crash loses at most the blocks in flight")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        checkpoint = load_checkpoint(args.checkpoint)
        inputs = list_inputs(args.input)
        done = completed_uris(args.output)
    except (CheckpointError, InputError, PermissionError, FileNotFoundError, OSError) as err:
        print(f"error: {_explain(err)}", file=sys.stderr)
        return 2
    todo = [item for item in inputs if item["uri"] not in done]
    print(f"[segment] {len(inputs)} inputs, {len(inputs) - len(todo)} already done, {len(todo)} to segment "
          f"with model {checkpoint.digest} ({checkpoint.config['arch']}/{checkpoint.config['backbone']})", flush=True)

    started = time.monotonic()
    if todo:
        run_pipeline(args, todo, checkpoint)
    elapsed = time.monotonic() - started

    manifest = compact(args.output)
    wanted = {item["uri"] for item in inputs}
    statuses = [s for u, s in zip(manifest.column("uri").to_pylist(), manifest.column("status").to_pylist())
                if u in wanted]
    ok, failed = statuses.count("ok"), statuses.count("error")
    rate = len(todo) / elapsed if todo and elapsed > 0 else 0.0
    print(f"[segment] done: {ok} ok, {failed} failed of {len(inputs)} inputs; {len(todo)} segmented this run at "
          f"{rate:.2f} images/s; masks in {args.output}/masks, manifest in {args.output}/manifest", flush=True)
    return 0


def run_pipeline(args: argparse.Namespace, todo: list[dict], checkpoint) -> None:
    import ray.data

    from pipelines.runtime import init_ray, pyarrow_storage
    from pipelines.stages import ManifestWriter, Predictor, ReadImages, Refiner

    init_ray()
    config = checkpoint.config
    blocks = max(1, math.ceil(len(todo) / args.rows_per_block))
    dataset = (
        ray.data.from_items(todo, override_num_blocks=blocks)
        .map_batches(ReadImages(args.max_side), batch_size=args.batch_size)
        .map_batches(Predictor, fn_constructor_kwargs={"checkpoint": checkpoint.uri, "scales": args.scales,
                                                       "flip": args.flip},
                     batch_size=args.batch_size, **model_stage_resources(args))
        .map_batches(Refiner(config["output_stride"], crf=not args.no_crf,
                             crf_params=crf_params(args)),
                     batch_size=1, num_cpus=args.crf_cpus)
        # batch_size=None: one batch per block, so finished blocks reach the manifest without waiting for others
        .map_batches(ManifestWriter(args.output, config["num_classes"], checkpoint.digest, not args.no_crf,
                                    args.overlay), batch_size=None)
    )
    path, filesystem = pyarrow_storage(run_folder(args.output))
    dataset.write_parquet(path, filesystem=filesystem, max_rows_per_file=args.rows_per_block)


def _explain(error: Exception) -> str:
    if isinstance(error, PermissionError):
        return (f"access denied ({error}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL) "
                "for the bucket")
    return str(error)


if __name__ == "__main__":
    sys.exit(main())
