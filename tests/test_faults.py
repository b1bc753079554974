"""Faults survived on the local cluster, with nothing lost: a node dies, the S3 server restarts, a run is interrupted.

Each run ends in exactly one manifest row per input, every ok row's mask exists, and where the first run could not
finish, a re-run completes it. A training run whose node dies restarts from its last checkpoint on the node Ray's
autoscaler launches in its place (a background run on a cluster of its own: tests/background.py).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from cluster import local
from deeplab_core.io import encode_jpeg, exists, write_bytes
from deeplab_core.synthetic import generate, make_sample
from pipelines import segment
from pipelines.segmentation.manifest import read_manifest
from tests.helpers import NUM_CLASSES, TINY_MOBILENET, finished, on_autoscaling_cluster

ROOT = Path(__file__).resolve().parents[1]
SECOND_NODE_PORT = 6391
pytestmark = pytest.mark.integration


def _routable_address() -> str | None:
    """This machine's address on a routed interface, None where only loopback exists (CI's namespace)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # UDP: picks the route, sends nothing
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


# A second Ray node on this machine: Ray refuses one in the loopback-only mode the local cluster's head runs in
# (pipelines.common.runtime.LOOPBACK_ONLY), and one with the machine's routable address does not join a head on 127.0.0.1.
# On a machine with only loopback (CI) both are 127.0.0.1.
needs_loopback_only_machine = pytest.mark.skipif(
    _routable_address() is not None,
    reason="a second local Ray node needs a machine (or namespace) whose only interface is loopback")
# cluster.autoscaling's cluster runs in namespaces of its own.
needs_root_and_unshare = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                            reason="needs root and unshare")


def _write_images(root: str, count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    uris = []
    for index in range(count):
        image, _ = make_sample(rng, size=64, num_classes=NUM_CLASSES)
        uris.append(f"{root}/img_{index:03d}.jpg")
        write_bytes(uris[-1], encode_jpeg(image))
    return uris


def _assert_complete(output: str, uris: list[str]) -> None:
    table = read_manifest(output).to_pylist()
    assert sorted(row["uri"] for row in table) == sorted(uris)  # exactly one row per input
    assert all(row["status"] == "ok" for row in table), [row["error"] for row in table if row["status"] != "ok"]
    assert all(exists(row["mask_uri"]) for row in table)


def _run_until_complete(argv: list[str], attempts: int = 3) -> int:
    """segment.main, re-run while it fails or leaves error rows; returns how many runs it took."""
    for attempt in range(1, attempts + 1):
        try:
            status = segment.main(argv)
        except Exception:  # noqa: BLE001 - a run the fault broke: the re-run must finish the work
            status = 1
        output = argv[argv.index("--output") + 1]
        if status == 0 and set(read_manifest(output).column("status").to_pylist()) == {"ok"}:
            return attempt
    raise AssertionError(f"not complete after {attempts} runs")


def _second_node_processes() -> list[psutil.Process]:
    """The second node's raylet (its node-manager port) and every process under it."""
    raylets = [p for p in psutil.process_iter(["cmdline"])
               if any(f"--node_manager_port={SECOND_NODE_PORT}" in part for part in p.info["cmdline"] or ())]
    return raylets + [child for raylet in raylets for child in raylet.children(recursive=True)]


@pytest.fixture
def second_node(ray_cluster, s3, cluster_state):
    import ray

    local.start_ray_worker(cluster_state, s3, num_cpus=2, node_manager_port=SECOND_NODE_PORT)
    deadline = time.monotonic() + 60
    ray.init(ignore_reinit_error=True)
    while len([node for node in ray.nodes() if node["Alive"]]) < 2:
        assert time.monotonic() < deadline, "the second node did not join"
        time.sleep(0.5)
    yield _second_node_processes
    for process in _second_node_processes():
        process.kill()


@needs_loopback_only_machine
def test_a_node_killed_mid_segmentation_loses_nothing(second_node, trained_run, tmp_path):
    inputs, output = str(tmp_path / "in"), str(tmp_path / "out")
    uris = _write_images(inputs, 40, seed=21)
    argv = ["--input", inputs, "--output", output, "--checkpoint", trained_run, "--rows-per-block", "2",
            "--batch-size", "2", "--model-actors", "2"]
    killer = subprocess.Popen([sys.executable, "-c", f"""
import os, pathlib, sys, time, psutil
deadline = time.monotonic() + 300
while not list(pathlib.Path({output!r}).glob("manifest/run-*/*.parquet")) and time.monotonic() < deadline:
    time.sleep(0.1)
for process in psutil.process_iter(["cmdline"]):
    # This script's own command line names the port too: once PIDs wrap it may come first and kill itself.
    if process.pid != os.getpid() and any("--node_manager_port={SECOND_NODE_PORT}" in part
                                          for part in process.info["cmdline"] or ()):
        for child in process.children(recursive=True) + [process]:
            child.kill()
        print("killed", flush=True)
"""], stdout=subprocess.PIPE, text=True)
    runs = _run_until_complete(argv)
    assert "killed" in killer.communicate(timeout=60)[0]  # the node really died mid-run
    assert not second_node()
    _assert_complete(output, uris)
    assert runs <= 2


# Ten checkpoints: the kill lands mid-run even when a busy machine delays it by seconds.
KILLED_RUN_ITERATIONS = 40


def training_losing_its_node(folder: Path) -> list[str]:
    """A fixed-size run (one worker, --max-failures 1) whose worker fits only on a node the autoscaler launches (3
    CPUs; the head's one is the data tasks'). Once Ray Train's controller has registered a checkpoint (it writes its
    snapshot then: a checkpoint still being reported is not one a restart can resume from), that node is killed, as
    a preempted VM is; the autoscaler launches a replacement and the worker group restarts there from the checkpoint."""
    data, run = folder / "data", folder / "run"
    generate(str(data), num_images=8, size=40, num_classes=NUM_CLASSES, seed=5)
    return on_autoscaling_cluster(
        folder, ["--head-cpus", "1", "--node-cpus", "3", "--max-nodes", "1", "--idle-timeout", "5", "--linger", "0",
                 "--remove-node-when", str(run / "train" / "checkpoint_manager_snapshot.json")],
        [sys.executable, "-m", "pipelines.train", "--data", str(data), "--output", str(run), *TINY_MOBILENET,
         "--iterations", str(KILLED_RUN_ITERATIONS), "--val-every", "4", "--log-every", "8", "--workers", "1",
         "--cpus-per-worker", "3", "--max-failures", "1"])


@needs_root_and_unshare
@pytest.mark.background.with_args(training_losing_its_node)
def test_a_training_workers_node_killed_mid_run_resumes_from_its_last_checkpoint_on_a_replacement(background_run):
    from deeplab_core.checkpoint import load_checkpoint

    timeline, log = finished(background_run)
    assert len(timeline["removed"]) == 1, log[-3000:]
    # The node count after the kill: down to the head alone, then up again with the replacement the run trained on.
    removed_at = timeline["removed"][0][0]
    after = [nodes for seconds, nodes in timeline["samples"] if seconds >= removed_at]
    assert 1 in after and 2 in after[after.index(1):], timeline["samples"]
    run = background_run.folder / "run"
    report = json.loads((run / "workers" / "rank_0.json").read_text())
    assert report["resumed_from"] is not None and report["resumed_from"] >= 4, (report, log[-3000:])
    assert report["iteration"] == load_checkpoint(str(run)).state["iteration"] == KILLED_RUN_ITERATIONS
    assert [span["first"] > 1 for span in report["spans"]] == [False, True], report["spans"]


def test_an_s3_restart_mid_segmentation_loses_nothing(trained_run, s3, cluster_state):
    inputs, output = f"s3://{s3.bucket}/restart-in", f"s3://{s3.bucket}/restart-out"
    uris = _write_images(inputs, 24, seed=22)
    argv = ["--input", inputs, "--output", output, "--checkpoint", trained_run, "--rows-per-block", "2",
            "--batch-size", "2", "--no-crf"]
    import threading

    def restart_s3() -> None:
        time.sleep(8)  # into the run: listing done, actors started, masks being written
        local.stop_s3(cluster_state)
        time.sleep(3)
        local.start_s3(cluster_state, s3)

    restarter = threading.Thread(target=restart_s3)
    restarter.start()
    try:
        runs = _run_until_complete(argv)
    finally:
        restarter.join()
    if runs == 1:  # the restart may have fallen after a fast run: then a second run must change nothing
        assert segment.main(argv) == 0
    _assert_complete(output, uris)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_an_interrupted_run_is_finished_by_a_rerun(stop, trained_run, tmp_path):
    inputs, output = str(tmp_path / "in"), str(tmp_path / "out")
    uris = _write_images(inputs, 24, seed=23)
    command = [sys.executable, "-m", "pipelines.segment", "--input", inputs, "--output", output,
               "--checkpoint", trained_run, "--rows-per-block", "2", "--batch-size", "2"]
    log = tmp_path / "first.log"
    with log.open("w") as sink:
        first = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not list(Path(output).glob("manifest/run-*/*.parquet")):
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        first.send_signal(stop)
        try:
            first.wait(timeout=60)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait()
    partial = read_manifest(output).num_rows
    assert 0 < partial < len(uris), partial
    assert segment.main(["--input", inputs, "--output", output, "--checkpoint", trained_run]) == 0
    _assert_complete(output, uris)
