"""Running a model over batches of images on one device, as fast as the device allows.

``ModelRunner`` takes uint8 images straight from the decoder: they are stacked and padded as uint8 (a quarter of
float32's bytes), copied to the device from pinned memory without blocking, normalised there, and run in the chosen
precision (bf16 autocast and channels_last on GPUs that support it). It returns either the low-resolution logits
rounded to ``TRANSPORT_DTYPE`` (what the CRF needs) or, without a CRF, the labels: upsampling and argmax then happen
on the device too and only uint8 labels come back.

Images are batched only with others of the same stride-padded size, so each is padded exactly as when segmented
alone: a pipeline's results equal ``deeplab_core.segmentation.segment_image``'s.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from deeplab_core.inference import (
    IMAGENET_MEAN, IMAGENET_STD, TRANSPORT_DTYPE, as_tensor, low_res_size, predict_low_res, upsample_logits,
)
from deeplab_core.inference_settings import PRECISIONS, InferenceSettings

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
TORCH_TRANSPORT_DTYPE = torch.from_numpy(np.zeros(0, TRANSPORT_DTYPE)).dtype
# A model call never holds more padded pixels than this (unless one image alone is larger): 8 images of 513 x 513,
# or one of 2048 x 2048. It bounds the activations' memory whatever the image sizes.
DEFAULT_BATCH_PIXELS = 2048 * 2048
# Measured on an H100 (benchmarks/cold_start.py, ResNet-101 stride 8, batch 8): autotuning costs ~1 s per input
# shape and buys 1.01x on 512 x 512 inputs, 1.21x on a mix of sizes, where it repays itself after ~270 calls of a
# shape. So a shape is tuned only once it has been seen this often (2048 images at batch 8): the dominant shapes of
# a large job are, a bucket's one-off sizes never are.
AUTOTUNE_AFTER_CALLS = 256


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on a GPU that supports it, else fp32; other values are checked and returned."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class ModelOutput:
    """Per image, in submission order: low-resolution logits (``TRANSPORT_DTYPE``) and/or H x W uint8 labels."""

    logits: list[np.ndarray] | None
    labels: list[np.ndarray] | None


@dataclass
class BatchOutput:
    """``ModelRunner.run``'s result, per image in the order given: logits and/or labels (None where not asked for
    or where the image's model call failed), and the error of that call (None when it ran)."""

    logits: list[np.ndarray | None]
    labels: list[np.ndarray | None]
    errors: list[Exception | None]


class PendingOutput:
    """A model call queued on the device (``ModelRunner.submit``); ``result()`` waits for it and crops each image's
    share out of the padded batch."""

    def __init__(self, sizes: list[tuple[int, int]], stride: int, done: torch.cuda.Event | None,
                 low: torch.Tensor | None, labels: torch.Tensor | None) -> None:
        self.sizes, self.stride, self.done, self.low, self.full = sizes, stride, done, low, labels

    def result(self) -> ModelOutput:
        if self.done is not None:
            self.done.synchronize()
        logits = labels = None
        if self.low is not None:
            low = self.low.numpy()
            logits = [np.ascontiguousarray(low[i, :, : math.ceil(h / self.stride), : math.ceil(w / self.stride)])
                      for i, (h, w) in enumerate(self.sizes)]
        if self.full is not None:
            full = self.full.numpy()
            labels = [np.ascontiguousarray(full[i, :h, :w]) for i, (h, w) in enumerate(self.sizes)]
        return ModelOutput(logits, labels)


class ModelRunner:
    """A model on a device with its preprocessing, precision, batching and autotuning policy.

    ``settings``: scales, flip, precision and batch size are used here (size limits and the CRF are the caller's).
    ``mean`` / ``std``: the model's normalisation (its checkpoint's). ``autotune_after``: cuDNN autotunes a batch
    shape's calls once more than this many have been made (0: from the first; GPUs only).
    """

    def __init__(self, model: nn.Module, settings: InferenceSettings = InferenceSettings(),
                 device: torch.device | str | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, batch_pixels: int = DEFAULT_BATCH_PIXELS,
                 autotune_after: int = AUTOTUNE_AFTER_CALLS) -> None:
        if batch_pixels < 1:
            raise ValueError(f"batch_pixels must be >= 1, got {batch_pixels}")
        self.device = torch.device(device) if device is not None else default_device()
        self.precision = resolve_precision(settings.precision, self.device)
        self.on_gpu = self.device.type == "cuda"
        self.model = model.eval().to(self.device)
        if self.on_gpu:
            # channels_last lets cuDNN use its NHWC tensor-core kernels; on CPUs it would only change the rounding.
            self.model.to(memory_format=torch.channels_last)
        self.stride = model.output_stride
        self.scales, self.flip = settings.scales, settings.flip
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.batch_size, self.batch_pixels = settings.batch_size, batch_pixels
        self.calls_by_shape: Counter[tuple[int, ...]] = Counter()
        self.autotune_after = autotune_after

    def plan(self, sizes: Sequence[tuple[int, int]]) -> list[list[int]]:
        """Indices of ``sizes`` (height, width) grouped into model calls: same padded size, at most ``batch_size``
        images and ``batch_pixels`` padded pixels each (an image larger than that budget goes alone)."""
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, (height, width) in enumerate(sizes):
            groups[low_res_size(height, width, self.stride)].append(index)
        calls = []
        for grid, members in groups.items():
            pixels = grid[0] * grid[1] * self.stride ** 2
            per_call = max(1, min(self.batch_size, self.batch_pixels // pixels))
            calls.extend(members[start: start + per_call] for start in range(0, len(members), per_call))
        return calls

    def run(self, images: Sequence[np.ndarray], logits: bool = False, labels: bool = False) -> BatchOutput:
        """Every image through the model, in as few calls as ``plan`` allows, all queued on the device before any
        result is awaited (the host stacks and copies the next call's images while the device runs the current one).
        A call that fails (out of memory on one group, say) fails its images only: their ``errors`` say why."""
        count = len(images)
        out = BatchOutput([None] * count, [None] * count, [None] * count)
        pending = []
        for call in self.plan([image.shape[:2] for image in images]):
            try:
                pending.append((call, self.submit([images[index] for index in call], logits=logits, labels=labels)))
            except Exception as err:  # noqa: BLE001 - recorded per image; the other calls go on
                for index in call:
                    out.errors[index] = err
        for call, submitted in pending:
            result = submitted.result()
            for position, index in enumerate(call):
                if result.logits is not None:
                    out.logits[index] = result.logits[position]
                if result.labels is not None:
                    out.labels[index] = result.labels[position]
        return out

    def low_res(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each image's C x ceil(H/s) x ceil(W/s) logits as ``TRANSPORT_DTYPE``; the images share a padded size."""
        return self.submit(images, logits=True).result().logits

    def labels(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each image's H x W uint8 labels (argmax of the upsampled logits, computed on the device)."""
        return self.submit(images, labels=True).result().labels

    @torch.inference_mode()
    def submit(self, images: Sequence[np.ndarray], logits: bool = False, labels: bool = False) -> PendingOutput:
        """Queue one model call on the device and return at once; ``result()`` waits for it.

        On a GPU the host is free while the device works: a caller submits every call of a batch, then collects,
        and each call's host-side stacking overlaps the previous call's compute. ``images`` share a padded size.
        """
        low = self._forward(images)
        low_host = labels_host = None
        if logits:
            low_host = self._to_host(low)
        if labels:
            height, width = low.shape[-2] * self.stride, low.shape[-1] * self.stride
            labels_host = self._to_host(upsample_logits(low, (height, width), self.stride).argmax(1).to(torch.uint8))
        done = None
        if self.on_gpu:
            done = torch.cuda.Event()
            done.record()
        sizes = [image.shape[:2] for image in images]
        return PendingOutput(sizes, self.stride, done, low_host, labels_host)

    def _to_host(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self.on_gpu:
            return tensor
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        return host.copy_(tensor, non_blocking=True)

    def _forward(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """N x C x h x w logits on the device, rounded to ``TRANSPORT_DTYPE`` (as every consumer sees them)."""
        batch = self.normalised_batch(images)
        autocast = (torch.autocast(self.device.type, dtype=_AUTOCAST_DTYPES[self.precision])
                    if self.precision in _AUTOCAST_DTYPES else nullcontext())
        self.calls_by_shape[tuple(batch.shape)] += 1
        previous = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = self.autotune(tuple(batch.shape))
        try:
            with autocast:
                low = predict_low_res(self.model, batch, self.scales, self.flip)
        finally:
            torch.backends.cudnn.benchmark = previous
        return low.to(TORCH_TRANSPORT_DTYPE)

    def autotune(self, shape: tuple[int, ...]) -> bool:
        """Whether cuDNN autotunes the calls of this batch shape: on a GPU, once it has come often enough to repay
        the tuning (~1 s per shape for ResNet-101); a bucket's one-off sizes run untuned."""
        return self.on_gpu and self.calls_by_shape[shape] > self.autotune_after

    def normalised_batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """The model's input: uint8 H x W x 3 images as one normalised N x 3 x H' x W' batch on the device, each
        padded (with the mean colour) to the largest image's size rounded up to the output stride."""
        if not images:
            raise ValueError("ModelRunner needs at least one image")
        for image in images:
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"expected uint8 H x W x 3 images, got {image.shape} {image.dtype}")
        height = math.ceil(max(im.shape[0] for im in images) / self.stride) * self.stride
        width = math.ceil(max(im.shape[1] for im in images) / self.stride) * self.stride
        host = torch.zeros((len(images), height, width, 3), dtype=torch.uint8, pin_memory=self.on_gpu)
        for index, image in enumerate(images):
            host[index, : image.shape[0], : image.shape[1]] = as_tensor(image)
        batch = host.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        batch = batch.sub_(self.mean).div_(self.std)
        for index, image in enumerate(images):  # padding is 0 after normalisation: the mean colour
            batch[index, :, image.shape[0]:, :] = 0.0
            batch[index, :, :, image.shape[1]:] = 0.0
        memory_format = torch.channels_last if self.on_gpu else torch.contiguous_format
        return batch.contiguous(memory_format=memory_format)
