"""The segmentation pipeline's whole per-image computation, in-process: what a notebook calls, and what the
pipeline's masks are tested against.

The pipeline's policy lives here: the image is shrunk to its working size (``InferenceSettings.max_side`` /
``max_pixels``), the model's low-resolution logits are rounded to ``TRANSPORT_DTYPE`` as they are for transport
between machines (``ModelRunner`` does that), the CRF refines them at the working size, and the labels are resized
back to the input's size.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from deeplab_core.crf import refine_low_res
from deeplab_core.inference import IMAGENET_MEAN, IMAGENET_STD
from deeplab_core.inference_settings import InferenceSettings, working_size
from deeplab_core.io import resize_image, resize_labels
from deeplab_core.models import ModelSpec
from deeplab_core.runner import ModelRunner


def segment_image(model: nn.Module, image: np.ndarray, settings: InferenceSettings = InferenceSettings(),
                  spec: ModelSpec | None = None) -> np.ndarray:
    """H x W uint8 labels of a uint8 H x W x 3 image, on the model's device; ``settings.crf`` None: the argmax.
    ``spec`` (a checkpoint's): the input normalisation its weights expect (ImageNet's without one)."""
    height, width = image.shape[:2]
    working = resize_image(image, working_size(height, width, settings.max_side, settings.max_pixels))
    mean, std = (spec.mean, spec.std) if spec is not None else (IMAGENET_MEAN, IMAGENET_STD)
    runner = ModelRunner(model, settings, next(model.parameters()).device, mean, std)
    if settings.crf is not None:
        labels = refine_low_res(working, runner.low_res([working])[0], runner.stride, settings.crf).astype(np.uint8)
    else:
        labels = runner.labels([working])[0]
    return resize_labels(labels, (height, width))
