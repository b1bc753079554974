"""What grows with the work, on a cluster that really scales: Ray's own autoscaler launching and removing real Ray
nodes on this machine (its fake multi-node provider, through ``cluster.autoscaling``, in namespaces of its own).

A segmentation run with the CRF makes the autoscaler launch CPU nodes and gives them back; an elastic training run
starts with one worker, grows to two when a node joins, shrinks when that node is lost, and finishes.

Each run has a cluster of its own and mostly waits on the autoscaler and Ray's timeouts: it starts with the session
and runs beside the other tests (tests/background.py); the tests here check what it did."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from deeplab_core.checkpoint import load_checkpoint, save_checkpoint
from deeplab_core.models import ModelSpec
from deeplab_core.synthetic import generate
from pipelines.segmentation.manifest import read_manifest
from tests.helpers import TINY_MOBILENET, finished, on_autoscaling_cluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare"),
]
IDLE_TIMEOUT = 5


def segmentation_with_the_crf(folder: Path) -> list[str]:
    images = folder / "images"
    generate(str(folder / "data"), num_images=12, size=96, num_classes=3, seed=3)
    shutil.copytree(folder / "data" / "JPEGImages", images)
    spec = ModelSpec("deeplabv3", "mobilenet_v3_large", 16, 3)
    checkpoint = folder / "model.pt"
    save_checkpoint(str(checkpoint), spec.build(), spec)
    return on_autoscaling_cluster(
        folder, ["--head-cpus", "1", "--node-cpus", "1", "--max-nodes", "3", "--idle-timeout", str(IDLE_TIMEOUT),
                 "--linger", "60"],
        [sys.executable, "-m", "pipelines.segment", "--input", str(images), "--output", str(folder / "segmented"),
         "--checkpoint", str(checkpoint), "--model-actors", "1", "--rows-per-block", "1"])


@pytest.mark.background.with_args(segmentation_with_the_crf)
def test_segmentation_with_the_crf_grows_cpu_nodes_and_gives_them_back(background_run):
    timeline, log = finished(background_run)
    manifest = read_manifest(str(background_run.folder / "segmented"))
    assert sorted(manifest.column("status").to_pylist()) == ["ok"] * 12, log[-3000:]
    assert timeline["peak_nodes"] >= 2, timeline  # the head and at least one node the autoscaler launched
    assert "[segment] used: peak 1 model actors" in log, log[-3000:]
    # Every launched node removed again, within the idle timeout (and the autoscaler's rounds) of the run's end.
    seconds, nodes = timeline["samples"][-1]
    assert nodes == 1 and seconds - timeline["command_seconds"] <= IDLE_TIMEOUT + 30, timeline["samples"][-10:]


# The one-worker group must not finish before the grown group has checkpointed: on a busy machine launching the node
# and starting the two-worker group took as long as ~16 iterations here (two CPU hogs beside it).
ELASTIC_RUN_ITERATIONS = 60
# Ray Data's scale-up requests for the ingest join Ray Train's request for its two workers in the autoscaler's one
# all-or-nothing constraint (README, Production). On this cluster, capped at one node, a busy machine's ingest asked
# for two more CPUs and the constraint could not be met: no node for minutes, and the run finished on one worker.
# This run is about Ray Train's growth, so its ingest asks for nothing (a utilization threshold never reached).
QUIET_DATA_AUTOSCALER = [f"RAY_DATA_DEFAULT_CLUSTER_SCALING_UP_{resource}_UTIL_THRESHOLD=1e9"
                         for resource in ("CPU", "GPU", "MEMORY", "OBJECT_STORE_MEMORY")]


def elastic_training_losing_a_node(folder: Path) -> list[str]:
    data, run = folder / "data", folder / "run"
    generate(str(data), num_images=8, size=40, num_classes=3, seed=5)
    # The head holds one worker (2 CPUs) and the data tasks (1 CPU); the one node the autoscaler may add holds a
    # second worker. The autoscaler is held until the one-worker group has checkpointed (rank 0's record appears),
    # so the run starts on the head alone; once the second worker has checkpointed (its record appears), its node is
    # killed and the autoscaler stopped (nothing replaces it).
    return ["env", *QUIET_DATA_AUTOSCALER, *on_autoscaling_cluster(
        folder, ["--head-cpus", "3", "--node-cpus", "2", "--max-nodes", "1", "--idle-timeout", "5",
                 "--linger", "0", "--hold-autoscaler-until", str(run / "workers" / "rank_0.json"),
                 "--remove-node-when", str(run / "workers" / "rank_1.json"), "--no-replacement"],
        [sys.executable, "-m", "pipelines.train", "--data", str(data), "--val-data", str(data), "--output", str(run),
         *TINY_MOBILENET, "--iterations", str(ELASTIC_RUN_ITERATIONS), "--val-every", "2", "--log-every", "8",
         "--workers", "1-2", "--cpus-per-worker", "2", "--resize-interval", "5"])]


@pytest.mark.background.with_args(elastic_training_losing_a_node)
def test_an_elastic_training_run_grows_with_a_node_and_shrinks_when_it_is_lost(background_run):
    timeline, log = finished(background_run)
    run = background_run.folder / "run"
    assert timeline["autoscaler_released"] is not None and timeline["removed"], log[-3000:]
    spans = json.loads((run / "workers" / "rank_0.json").read_text())["spans"]
    sizes = [span["world_size"] for span in spans]
    # One worker first, two once the node joined, one again after it was lost: the order of the world sizes.
    assert sizes[0] == 1 and 2 in sizes and 1 in sizes[sizes.index(2):], spans
    # Each group resumed from the run's latest checkpoint, at or before where the one before recorded its last (a
    # checkpoint counts once every worker reported it): the iterations and the poly schedule go on, never from 0.
    assert spans[-1]["last"] == ELASTIC_RUN_ITERATIONS, spans
    assert all(0 < b["first"] <= a["last"] for a, b in zip(spans, spans[1:])), spans
    rank_1 = json.loads((run / "workers" / "rank_1.json").read_text())["spans"]
    assert rank_1 and all(span["world_size"] == 2 for span in rank_1), rank_1
    assert load_checkpoint(str(run)).spec.backbone == "mobilenet_v3_large"  # best_model.pt exported at the end
