"""How a trained model segments images: one frozen, checked value that the runner, the in-process ``segment_image``
and the pipelines' stages take whole. The drivers' flags derive from its fields (name, default, help text in the
field's metadata), except ``crf``, which the CRF options describe. Also the size an image is segmented at
(``working_size``). Torch-free: the pipelines' CPU stages carry these values."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from deeplab_core.crf_params import PAPER_PARAMS, CRFParams

# Images with more pixels than this are segmented at reduced size (aspect kept) and their masks resized back:
# one huge input must not exhaust a model actor's memory. 4.2 MP is 16 times a 512 x 512 image.
DEFAULT_MAX_PIXELS = 2048 * 2048


def working_size(height: int, width: int, max_side: int | None = None,
                 max_pixels: int | None = None) -> tuple[int, int]:
    """The size to run the model at: neither side above ``max_side``, at most ``max_pixels`` pixels, aspect kept."""
    if max_side and max(height, width) > max_side:
        ratio = max_side / max(height, width)
        height, width = max(1, round(height * ratio)), max(1, round(width * ratio))
    if max_pixels and height * width > max_pixels:
        ratio = math.sqrt(max_pixels / (height * width))
        height, width = max(1, math.floor(height * ratio)), max(1, math.floor(width * ratio))
    return height, width


# The model's arithmetic. "auto": bf16 autocast on GPUs that support it, fp32 on CPUs.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class InferenceSettings:
    """Multi-scale and flip inference, precision, batching, the working-size limits and the CRF (None: no CRF, the
    model's argmax). Checked when made: a nonsense value raises a ``ValueError`` naming the field."""

    scales: tuple[float, ...] = field(default=(1.0,), metadata={"help": "multi-scale inference, e.g. 0.5,0.75,1.0"})
    flip: bool = field(default=False, metadata={"help": "also run on the mirrored image and average"})
    precision: str = field(default="auto", metadata={
        "help": "model arithmetic: auto = bf16 on GPUs that support it, fp32 on CPUs", "choices": PRECISIONS})
    batch_size: int = field(default=8, metadata={"help": "images per model call"})
    max_side: int | None = field(default=None, metadata={
        "help": "segment images whose longer side exceeds this at reduced size"})
    max_pixels: int | None = field(default=DEFAULT_MAX_PIXELS, metadata={
        "help": "segment images with more pixels than this at reduced size (masks keep the input's size): one huge "
                "image must not exhaust a model actor's memory"})
    crf: CRFParams | None = PAPER_PARAMS  # None: no CRF, the model's argmax

    def __post_init__(self) -> None:
        scales = tuple(float(scale) for scale in self.scales)
        if not scales or any(not scale > 0 for scale in scales):
            raise ValueError(f"InferenceSettings: scales must be positive numbers, got {self.scales!r}")
        object.__setattr__(self, "scales", scales)
        if self.precision not in PRECISIONS:
            raise ValueError(f"InferenceSettings: precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.batch_size < 1:
            raise ValueError(f"InferenceSettings: batch_size must be >= 1, got {self.batch_size}")
        for name in ("max_side", "max_pixels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"InferenceSettings: {name} must be >= 1 or None, got {value}")
        if self.crf is not None and not isinstance(self.crf, CRFParams):
            raise ValueError(f"InferenceSettings: crf must be CRFParams or None, got {type(self.crf).__name__}")
