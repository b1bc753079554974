"""What several test modules share: the small training recipe, a PNG encoder for any PIL mode, an S3 client for
the local server, and the runtime env a submitted job needs."""

from __future__ import annotations

import io
import json

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
