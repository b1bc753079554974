"""How a trained model segments images: one frozen, checked value that the runner, the in-process ``segment_image``
and the pipelines' stages take whole (the drivers' flags take their defaults from its fields)."""

from __future__ import annotations

from dataclasses import dataclass

from deeplab_core.crf import PAPER_PARAMS, CRFParams
from deeplab_core.inference import DEFAULT_MAX_PIXELS

# The model's arithmetic. "auto": bf16 autocast on GPUs that support it, fp32 on CPUs.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class InferenceSettings:
    """Multi-scale and flip inference, precision, batching, the working-size limits and the CRF (None: no CRF, the
    model's argmax). Checked when made: a nonsense value raises a ``ValueError`` naming the field."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    precision: str = "auto"
    batch_size: int = 8  # images per model call
    max_side: int | None = None  # images with a longer side are segmented at reduced size
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # and those with more pixels than this
    crf: CRFParams | None = PAPER_PARAMS

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
