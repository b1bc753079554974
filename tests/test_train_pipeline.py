"""pipelines.train on a real local Ray cluster (2 CPU workers, gloo DDP) with a real S3 server."""

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from deeplab_core.checkpoint import load_checkpoint, load_model
from deeplab_core.data import VOCSegmentation
from deeplab_core.runner import ModelRunner
from deeplab_core.io import read_bytes
from deeplab_core.metrics import ConfusionMatrix
from deeplab_core.models import build_model
from deeplab_core.synthetic import generate
from pipelines import train
from tests.helpers import NUM_CLASSES, SMALL_MODEL, TRAINED_ITERATIONS, runtime_env_json, s3_client

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration

# Chance (an untrained model, mostly background) scores ~0.25 on this set; in-process runs of the same recipe reach
# 0.55-0.63 (see conftest); the threshold sits between the two.
LEARNING_THRESHOLD = 0.5


@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data") / "shapes")
    generate(root, num_images=12, size=64, num_classes=NUM_CLASSES, seed=4)
    return root


def _val_miou(model, root):
    """Validation mIoU computed in-process the way segmentation computes labels (``ModelRunner``)."""
    dataset = VOCSegmentation(root, "val")
    runner = ModelRunner(model, device="cpu")
    matrix = ConfusionMatrix(NUM_CLASSES)
    for image, mask in (dataset[i] for i in range(len(dataset))):
        matrix.update(runner.labels([image])[0], mask)
    return matrix.miou()


def _worker_reports(output):
    return [json.loads(read_bytes(f"{output}/workers/rank_{rank}.json")) for rank in (0, 1)]


def test_two_workers_learn_the_task_with_checkpoints_in_s3(trained_run, s3, s3_dataset):
    output = trained_run
    torch.manual_seed(0)
    chance = _val_miou(build_model("deeplabv2", "resnet50", 16, NUM_CLASSES), s3_dataset)

    model, checkpoint = load_model(output)  # the exported best_model.pt
    assert checkpoint.uri.endswith("best_model.pt")
    learned = _val_miou(model, s3_dataset)
    assert chance < 0.35 and learned >= LEARNING_THRESHOLD, (chance, learned)
    rows = list(csv.DictReader(io.StringIO(read_bytes(f"{output}/metrics.csv").decode())))
    validated = [row for row in rows if row["val_miou"]]
    assert [int(row["iteration"]) for row in validated] == list(range(50, TRAINED_ITERATIONS + 1, 50))
    # best_model.pt is the checkpoint with the best validation mIoU: the log's best row
    assert max(float(row["val_miou"]) for row in validated) == pytest.approx(checkpoint.state["metrics"]["val_miou"])
    assert {"val_iou/background", "val_iou/class_1", "val_iou/class_2"} <= set(validated[0])
    assert read_bytes(f"{output}/curves.png")[:4] == b"\x89PNG"
    # Validation batches images (the test scores them one by one): a rare argmax tie may flip, nothing more. The
    # BatchNorm drift this guards against (each worker's own statistics) moved the score by far more.
    assert checkpoint.state["metrics"]["val_miou"] == pytest.approx(learned, abs=2e-4)

    # Both workers took part, on different rows, and DDP kept their weights identical (averaged gradients).
    first, second = _worker_reports(output)
    assert (first["world_size"], second["world_size"]) == (2, 2)
    assert len(first["samples_seen"]) == len(second["samples_seen"]) == TRAINED_ITERATIONS * 4
    assert not set(first["samples_seen"]) & set(second["samples_seen"])
    assert first["parameter_checksum"] == second["parameter_checksum"]
    assert first["resumed_from"] is None

    client = s3_client(s3)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3.bucket, Prefix="runs/learn/train/")["Contents"]]
    assert sum(key.endswith("/checkpoint.pt") for key in keys) == 3  # --keep-checkpoints default


def test_a_submitted_job_trains_from_the_bucket_and_a_resume_continues_at_the_saved_iteration(ray_cluster, s3,
                                                                                              s3_dataset, tmp_path):
    output = str(tmp_path / "run")
    # Two micro-batches per step: DDP all-reduces once per step (no_sync), and the weights must still agree.
    common = ["--data", s3_dataset, "--output", output, *SMALL_MODEL, "--workers", "2", "--val-every", "2",
              "--accumulation", "2"]
    # The first run as a user submits it: the working directory shipped, the bucket's settings in the runtime env.
    submitted = subprocess.run(
        ["ray", "job", "submit", "--working-dir", ".", "--runtime-env-json", runtime_env_json(), "--",
         "python", "-m", "pipelines.train", *common, "--iterations", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert submitted.returncode == 0 and "succeeded" in submitted.stdout, \
        submitted.stdout[-3000:] + submitted.stderr[-3000:]
    assert load_checkpoint(output).state["iteration"] == 4
    assert np.isfinite(load_checkpoint(output).state["metrics"]["loss"])
    assert train.main([*common, "--iterations", "6"]) == 2  # refuses to overwrite a run without --resume
    assert train.main([*common, "--iterations", "6", "--resume"]) == 0
    resumed = load_checkpoint(output)
    assert resumed.state["iteration"] == 6
    # The resumed run took only the 2 missing steps, and its LR continued the poly schedule of a 6-step run.
    first, second = _worker_reports(output)
    assert len(first["samples_seen"]) == 2 * 2 * 4
    assert first["resumed_from"] == second["resumed_from"] == 4
    assert first["parameter_checksum"] == second["parameter_checksum"]
    assert resumed.state["metrics"]["lr"] == pytest.approx(0.0, abs=1e-12)
    latest = torch.load(sorted((tmp_path / "run" / "train").glob("checkpoint_*/checkpoint.pt"))[-1],
                        weights_only=True)
    assert latest["scheduler_state"]["last_epoch"] == 6
    # Training curves for people: the resumed run continued the first run's log.
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["iteration"]) for row in rows] == [2, 4, 6]
    assert all(float(row["loss"]) > 0 and float(row["images_per_second"]) > 0 for row in rows)
    assert all(row["val_miou"] == "" for row in rows)  # no --val-data: no validation scores
    assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in (tmp_path / "run" / "tensorboard").iterdir()] == ["events.out.tfevents.0.deeplab-ray"]


def test_sync_bn_on_cpu_is_refused_clearly(tmp_path, capsys):
    assert train.main(["--data", str(tmp_path), "--output", str(tmp_path / "out"), "--sync-bn"]) == 2
    assert "--sync-bn needs --use-gpu" in capsys.readouterr().err


def test_bad_dataset_is_refused_before_training_with_the_file_named(ray_cluster, tmp_path, capsys):
    root = str(tmp_path / "broken")
    generate(root, num_images=6, size=32, num_classes=NUM_CLASSES, seed=0)
    victim = Path(root) / "SegmentationClass" / "synthetic_00001.png"
    victim.unlink()
    assert train.main(["--data", root, "--output", str(tmp_path / "out"), *SMALL_MODEL]) == 2
    assert f"{victim}: mask missing" in capsys.readouterr().err


def _this_runs_worker_pids(log: Path) -> set[int]:
    """The training workers of the run writing ``log``: Ray prefixes their output with their PID."""
    return {int(pid) for pid in re.findall(r"RayTrainWorker pid=(\d+)", log.read_text())}


def test_killed_worker_is_restarted_from_the_last_checkpoint(ray_cluster, local_dataset, tmp_path):
    output = tmp_path / "faulty"
    command = [sys.executable, "-m", "pipelines.train", "--data", local_dataset, "--output", str(output),
               *SMALL_MODEL, "--workers", "2", "--iterations", "12", "--val-every", "3", "--max-failures", "2"]
    log = tmp_path / "train.log"
    with log.open("w") as sink:
        job = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
        # Kill once the controller has registered a checkpoint (its snapshot lists it), not merely once a worker
        # has written one: a checkpoint still being reported is not one a restart can resume from.
        snapshot = output / "train" / "checkpoint_manager_snapshot.json"
        deadline = time.monotonic() + 240
        while not (snapshot.exists() and '"checkpoint_dir_name"' in snapshot.read_text()):
            assert job.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        victims = [pid for pid in _this_runs_worker_pids(log) if psutil.pid_exists(pid)]
        assert victims, "found no live training worker of this run to kill"
        os.kill(max(victims), signal.SIGKILL)
        assert job.wait(timeout=400) == 0, log.read_text()[-3000:]
    report = _worker_reports(output)[0]
    assert report["resumed_from"] is not None and report["resumed_from"] >= 3, log.read_text()[-3000:]
    assert report["iteration"] == load_checkpoint(str(output)).state["iteration"] == 12
