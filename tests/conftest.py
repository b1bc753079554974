"""Session fixtures: a real SeaweedFS S3 server and a real local Ray cluster with token authentication.

Both listen on 127.0.0.1; run the suite in a loopback-only network namespace (README) to keep Ray off other interfaces.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from cluster import local
from deeplab_core.io import s3_variables
from tests import background
from tests.helpers import NUM_CLASSES, SMALL_MODEL, TRAINED_ITERATIONS

# Two physical cores here; four logical CPUs let two training workers and Ray Data's tasks run side by side.
TEST_CLUSTER_CPUS = 4


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests of background runs (tests/background.py) last: their runs go on beside every other test.
    items.sort(key=lambda item: item.get_closest_marker(background.MARKER) is not None)


def pytest_collection_finish(session: pytest.Session) -> None:
    if not session.config.option.collectonly:
        background.start(session.items)


def pytest_sessionfinish() -> None:
    background.cleanup()


@pytest.fixture
def background_run(request) -> background.BackgroundRun:
    """This test's background run, finished."""
    return background.finished_run(request.node)


@pytest.fixture(scope="session")
def cluster_state():
    # Short path: Ray's unix socket paths must stay under ~100 characters.
    state = Path(tempfile.mkdtemp(prefix="dlr-", dir="/tmp"))
    yield state
    shutil.rmtree(local.ray_temp_dir(state), ignore_errors=True)  # Ray's session files, under a short path of their own
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def s3(cluster_state):
    """SeaweedFS with a fresh bucket; the AWS variables point this process (and its children) at it."""
    settings = local.load_settings(cluster_state, bucket="test-bucket")
    local.start_s3(cluster_state, settings)
    saved = dict(os.environ)
    os.environ.update(s3_variables(local.client_environment(settings)))
    yield settings
    os.environ.clear()
    os.environ.update(saved)
    local.stop_s3(cluster_state)


@pytest.fixture(scope="session")
def ray_cluster(s3, cluster_state):
    """A Ray head started with `ray start --head` (token auth on); this process's clients point at it."""
    local.start_ray_head(cluster_state, s3, num_cpus=TEST_CLUSTER_CPUS)
    saved = dict(os.environ)
    os.environ.update(local.client_environment(s3))
    yield local.client_environment(s3)
    import ray

    ray.shutdown()
    os.environ.clear()
    os.environ.update(saved)
    local.stop_ray(cluster_state, timeout=3)  # nothing of the test cluster is kept: no 15-s grace period


@pytest.fixture(scope="session")
def s3_dataset(s3):
    from deeplab_core.synthetic import generate

    root = f"s3://{s3.bucket}/datasets/shapes64"
    generate(root, num_images=48, size=64, num_classes=NUM_CLASSES, seed=3)
    return root


@pytest.fixture(scope="session")
def trained_run(ray_cluster, s3, s3_dataset):
    """One real training run, shared: 2 workers (gloo DDP) on the bucket's dataset, checkpoints to the bucket."""
    from pipelines import train

    output = f"s3://{s3.bucket}/runs/learn"
    status = train.main(["--data", s3_dataset, "--val-data", s3_dataset, "--output", output, *SMALL_MODEL,
                         "--workers", "2", "--iterations", str(TRAINED_ITERATIONS), "--val-every", "50",
                         "--log-every", "20"])
    assert status == 0
    return output
