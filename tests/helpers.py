"""What several test modules share: the small training recipe, a PNG encoder for any PIL mode, an S3 client for
the local server, the runtime env a submitted job needs, and runs on an autoscaling cluster of their own."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from PIL import Image

from cluster import local
from deeplab_core.training import FROM_SCRATCH_HEAD_LR_MULTIPLIER, FROM_SCRATCH_LR

# A 3-class shapes set at 64 px, learnable from scratch on 2 CPU cores in a few minutes. Measured in-process with
# batch-4 BatchNorm statistics (what each of the two workers sees): mIoU 0.55-0.63 after 200 steps; the recipe's
# 10x head LR is tuned for an ImageNet-pretrained backbone and is unstable from scratch, so the tests use
# deeplab_core.training's from-scratch LR (5e-3, a 1x head).
NUM_CLASSES = 3
# deeplab_core.training's from-scratch LR, as flags.
FROM_SCRATCH = ["--lr", str(FROM_SCRATCH_LR), "--head-lr-multiplier", str(FROM_SCRATCH_HEAD_LR_MULTIPLIER)]
SMALL_MODEL = ["--arch", "deeplabv2", "--backbone", "resnet50", "--output-stride", "16",
               "--num-classes", str(NUM_CLASSES), "--crop-size", "64", "--batch-size", "4", *FROM_SCRATCH]
TRAINED_ITERATIONS = 200
# Small and quick on CPUs: MobileNetV3 (its checkpoints are ~20 MB, so checkpointing every iteration is cheap).
TINY_MOBILENET = ["--arch", "deeplabv2", "--backbone", "mobilenet_v3_large", "--num-classes", "3", "--crop-size",
                  "32", "--batch-size", "2", *FROM_SCRATCH]


def png_bytes(image: Image.Image) -> bytes:
    """PNG bytes of a PIL image in any mode (gray, RGBA, 16-bit): what ``encode_png`` does not cover."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def s3_client(settings: local.Settings, secret: str | None = None):
    """A boto3 client of the local S3 server (with another secret to test refusals)."""
    import boto3

    return boto3.client("s3", endpoint_url=settings.endpoint, aws_access_key_id=settings.access_key,
                        aws_secret_access_key=secret or settings.secret_key, region_name=local.REGION)


def runtime_env_json() -> str:
    """``--runtime-env-json`` for `ray job submit`: the S3 variables of this process, as the README builds it."""
    return json.dumps(local.s3_runtime_env())


def on_autoscaling_cluster(folder: Path, cluster: list[str], command: list[str]) -> list[str]:
    """The command line that runs ``command`` on a fresh autoscaling cluster (``cluster``: cluster.autoscaling's
    options), its timeline written in ``folder``."""
    return [sys.executable, "-m", "cluster.autoscaling", "--timeline", str(folder / "timeline.json"), *cluster, "--",
            *command]


def finished(run) -> tuple[dict, str]:
    """A background run's (tests/background.py) timeline and whole log, once it exited 0."""
    assert run.returncode == 0, run.log[-4000:]
    return json.loads((run.folder / "timeline.json").read_text()), run.log
