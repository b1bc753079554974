"""A fixed one-node run and an elastic run of the same segmentation, side by side, on Ray's own autoscaler.

    python -m benchmarks.elastic [--images 24] [--size 256] [--node-cpus 2] [--max-nodes 3]

Both run ``pipelines.segment`` (CRF on) over the same synthetic images through ``cluster.autoscaling``: the fixed
run on a head alone (``--max-nodes 0``), the elastic one on the same head with up to ``--max-nodes`` nodes the
autoscaler launches for the CRF tasks and removes when idle. Prints wall time, peak nodes and node-seconds (from the
command's start until the nodes are gone) of each, and their ratios. The fake provider's nodes are processes of
this one machine: they share its cores, so the elastic run can only be as fast as the machine allows; on a real
cluster each node brings its own. Needs root (namespaces); local paths only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deeplab_core.checkpoint import save_checkpoint
from deeplab_core.models import ModelSpec
from deeplab_core.synthetic import generate


def run(label: str, cluster: list[str], command: list[str], folder: Path) -> dict:
    timeline = folder / f"{label}.json"
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "cluster.autoscaling", "--timeline", str(timeline), *cluster,
                             "--", *command], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{label} run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    summary = json.loads(timeline.read_text())
    summary["wall"] = summary["command_seconds"]
    summary["elapsed"] = time.monotonic() - started
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.elastic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--head-cpus", type=int, default=2)
    parser.add_argument("--node-cpus", type=int, default=2)
    parser.add_argument("--max-nodes", type=int, default=3)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="elastic-bench-"))
    try:
        generate(str(folder / "data"), num_images=args.images, size=args.size, num_classes=21, seed=0)
        shutil.copytree(folder / "data" / "JPEGImages", folder / "images")
        spec = ModelSpec("deeplabv3", "mobilenet_v3_large", 16, 21)
        save_checkpoint(str(folder / "model.pt"), spec.build(), spec)
        results = {}
        for label, max_nodes in (("fixed", 0), ("elastic", args.max_nodes)):
            command = [sys.executable, "-m", "pipelines.segment", "--input", str(folder / "images"),
                       "--output", str(folder / f"out-{label}"), "--checkpoint", str(folder / "model.pt"),
                       "--model-actors", "1"]
            cluster = ["--head-cpus", str(args.head_cpus), "--node-cpus", str(args.node_cpus), "--max-nodes",
                       str(max_nodes), "--idle-timeout", "5", "--linger", "90"]
            results[label] = run(label, cluster, command, folder)
        print(f"segment + CRF, {args.images} images of {args.size}x{args.size}; head {args.head_cpus} CPUs, nodes "
              f"{args.node_cpus} CPUs (up to {args.max_nodes}), idle timeout 5 s")
        for label, summary in results.items():
            print(f"{label:8s} {summary['wall']:7.1f} s  peak {summary['peak_nodes']} nodes  "
                  f"{summary['node_seconds']:7.1f} node-seconds")
        fixed, elastic = results["fixed"], results["elastic"]
        print(f"elastic / fixed: time {elastic['wall'] / fixed['wall']:.2f}x, node-seconds "
              f"{elastic['node_seconds'] / max(fixed['node_seconds'], 1e-9):.2f}x")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
