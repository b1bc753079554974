"""Segment every image under a folder, bucket prefix or URI list with a trained DeepLab, on Ray Data.

    python -m pipelines.segment --input URI --output URI --checkpoint URI [options]

One streaming pipeline: list -> read + decode (CPU tasks) -> model (actor pool; GPUs when the cluster has them)
-> dense CRF (CPU tasks) -> palette PNG masks written straight to ``<output>/masks/`` -> Parquet manifest rows in
``<output>/manifest/``. A bad input never stops the job: it gets a manifest row with status "error". A re-run into
the same output skips inputs already done and leaves exactly one manifest row per input.

Images larger than ``--max-side`` or ``--max-pixels`` (default 2048 x 2048 pixels) are segmented at reduced size
(model and CRF, whose cost grows with pixels) and the mask is resized back to the input's own size with
nearest-neighbour sampling; overlays stay at the reduced size. Output names follow the rules of
``pipelines.segmentation.inputs``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass

from deeplab_core.checkpoint import build_from_checkpoint, load_checkpoint
from deeplab_core.inference_settings import InferenceSettings
from deeplab_core.io import join_uri, normalize_uri
from pipelines.segmentation import columns
from pipelines.segmentation.inputs import assign_output_names, list_inputs
from pipelines.segmentation.manifest import (
    compact, completed, manifest_folder, manifest_schema, record_errors, run_folder,
)
from pipelines.common.options import (
    HelpFormatter, add_model_options, inference_settings, model_resources,
    positive_int,
)
from pipelines.common.runtime import check_cluster_address, check_writable, refuse
from pipelines.common.usage import Usage
from pipelines.segmentation.model_pool import ModelResources
from pipelines.segmentation.sizing import crf_sizing_line
from pipelines.segmentation.stages import MAX_ROWS_PER_BLOCK, TASK_RETRIES, describe
from pipelines.segmentation.writers import MASKS_DIR, OUTPUT_FORMATS, OverlayWriter, mask_writers


@dataclass(frozen=True)
class SegmentConfig:
    """What one segmentation run does: ``run(config)`` is the command line's ``main`` without the parsing."""

    input: str  # a folder or prefix of images, or a .txt / .parquet list of URIs (normalize_uri's form)
    output: str
    checkpoint: str
    inference: InferenceSettings = InferenceSettings()
    resources: ModelResources = ModelResources()
    overlay: bool = False
    rows_per_block: int | None = None
    output_format: str = "png"  # OUTPUT_FORMATS


def parse_args(argv: list[str] | None = None) -> SegmentConfig:
    parser = argparse.ArgumentParser(prog="python -m pipelines.segment", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--input", required=True, type=normalize_uri,
                        help="folder or s3:// prefix of images, or a .txt / .parquet of URIs")
    parser.add_argument("--output", required=True, type=normalize_uri,
                        help="where masks/, overlays/ and manifest/ go (never listed as input, even inside --input)")
    add_model_options(parser, crf_default=True)
    parser.add_argument("--overlay", action="store_true", help="also write colour overlays to <output>/overlays/")
    parser.add_argument("--output-format", choices=OUTPUT_FORMATS, default=SegmentConfig.output_format,
                        help="the mask as a palette PNG under <output>/masks/ (png), as COCO run-length encodings per "
                             "class in the manifest's rle column (rle), or both")
    parser.add_argument("--rows-per-block", type=positive_int, default=None,
                        help=f"inputs per Ray Data block (default: enough blocks for every CPU, at most "
                             f"{MAX_ROWS_PER_BLOCK}); a crash loses at most the blocks in flight")
    args = parser.parse_args(argv)
    return SegmentConfig(args.input, args.output, args.checkpoint, inference_settings(args, parser),
                         model_resources(args), args.overlay, args.rows_per_block, args.output_format)


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


def run(config: SegmentConfig) -> int:
    """Segment ``config.input`` into ``config.output``; the exit status (see the README's exit codes)."""
    crf = config.inference.crf is not None
    try:
        checkpoint = load_checkpoint(config.checkpoint)
        build_from_checkpoint(checkpoint)  # a config that does not fit the weights fails here, not in every actor
        inputs = list_inputs(config.input, exclude=config.output)
        done = completed(config.output)
        check_writable(config.output)
        check_cluster_address()
    except Exception as err:  # noqa: BLE001 - a user's mistake is one line; anything else keeps its traceback
        return refuse(err)
    masks = join_uri(config.output, MASKS_DIR) + "/"
    taken = {mask.removeprefix(masks): uri for uri, mask in done.items() if mask and mask.startswith(masks)}
    todo = [item for item in assign_output_names(inputs, taken) if item["uri"] not in done]
    print(f"[segment] {len(inputs)} inputs, {len(inputs) - len(todo)} already done, {len(todo)} to segment "
          f"with model {checkpoint.digest} ({checkpoint.spec.arch}/{checkpoint.spec.backbone})", flush=True)

    started, usage = time.monotonic(), Usage()
    if todo:
        try:
            usage = run_pipeline(config, todo, checkpoint)
        except Exception as err:  # noqa: BLE001 - e.g. the output's storage went away: what finished is kept
            print(f"error: the run stopped before finishing ({describe(err)}); the inputs it finished are in the "
                  f"manifest: re-run the same command to do the rest", file=sys.stderr)
            return 1
    elapsed = time.monotonic() - started

    schema = manifest_schema(checkpoint.spec)
    manifest = compact(config.output, schema)
    reported = set(manifest.column(columns.URI).to_pylist())
    unreported = {item["uri"]: "TaskFailedError: the task holding this input failed twice (its worker or node died, "
                               "out of memory, or storage was unreachable); re-run to retry"
                  for item in todo if item["uri"] not in reported}
    if unreported:
        record_errors(config.output, unreported, crf, checkpoint.digest)
        manifest = compact(config.output, schema)
    wanted = {item["uri"] for item in inputs}
    statuses = [s for u, s in zip(manifest.column(columns.URI).to_pylist(), manifest.column(columns.STATUS).to_pylist())
                if u in wanted]
    ok, failed = statuses.count("ok"), statuses.count("error")
    rate = len(todo) / elapsed if todo and elapsed > 0 else 0.0
    print(f"[segment] done: {ok} ok, {failed} failed of {len(inputs)} inputs; {len(todo)} processed this run at "
          f"{rate:.2f} images/s; masks in {join_uri(config.output, MASKS_DIR)}, manifest in "
          f"{manifest_folder(config.output)}", flush=True)
    if todo:
        print(f"[segment] used: {usage.describe()}", flush=True)
    if crf and todo:
        this_run = {item["uri"] for item in todo}
        rows = [row for row in manifest.select([columns.URI, columns.STATUS, columns.SECONDS_MODEL, columns.SECONDS_CRF,
                                                     columns.CRF_LABELS])
                .to_pylist() if row[columns.URI] in this_run and row[columns.STATUS] == "ok" and row[columns.CRF_LABELS]]
        line = crf_sizing_line([row[columns.SECONDS_CRF] for row in rows], [row[columns.CRF_LABELS] for row in rows],
                               [row[columns.SECONDS_MODEL] for row in rows], usage.peak_actors)
        if line:
            print(f"[segment] {line}", flush=True)
    if todo and ok == 0:
        print(f"error: no input was segmented ({failed} failed); see the manifest's error column", file=sys.stderr)
        return 1
    return 0


def run_pipeline(config: SegmentConfig, todo: list[dict], checkpoint) -> Usage:
    """Segment ``todo`` into the output's manifest; what the run used of the cluster."""
    import ray.data

    from pipelines.common.runtime import init_ray, pyarrow_storage
    from pipelines.segmentation.stages import (
        ManifestWriter, add_model_stages, default_rows_per_block, model_stage_usage, plan_model_stage,
    )

    init_ray()
    pool = plan_model_stage(config.resources, "segment")
    crf = config.inference.crf is not None
    # Manifest rows are written per block: a crash loses at most the blocks in flight.
    per_block = config.rows_per_block or default_rows_per_block(len(todo), config.inference.batch_size)
    dataset = ray.data.from_items(todo, override_num_blocks=max(1, math.ceil(len(todo) / per_block)))
    dataset = add_model_stages(dataset, checkpoint, config.inference, config.resources, pool, plain=not crf,
                               keep_image=config.overlay)
    if crf:
        dataset = dataset.repartition(target_num_rows_per_block=per_block)  # CRF rows travel one per block
    # batch_size=None: one batch per block, so finished blocks reach the manifest without waiting for others
    spec = checkpoint.spec
    writers = mask_writers(config.output_format, spec.class_colours)
    if config.overlay:
        writers.append(OverlayWriter(spec.class_colours, spec.class_names))
    dataset = dataset.map_batches(ManifestWriter(config.output, spec, checkpoint.digest, crf, writers),
                                  batch_size=None, **TASK_RETRIES)
    path, filesystem = pyarrow_storage(run_folder(config.output))
    # A block whose task failed twice is skipped instead of failing the job; main() records its inputs as errors.
    # Set for this run only: the context is the process's, and a training run in it must not skip bad data.
    context = ray.data.DataContext.get_current()
    previous, context.max_errored_blocks = context.max_errored_blocks, -1
    try:
        with model_stage_usage(pool) as sampler:
            dataset.write_parquet(path, filesystem=filesystem, max_rows_per_file=per_block)
    finally:
        context.max_errored_blocks = previous
    return sampler.usage


if __name__ == "__main__":
    sys.exit(main())
