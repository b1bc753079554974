"""The dense CRF's parameters (``CRFParams``; the paper's: ``PAPER_PARAMS``), apart from the CRF's arithmetic: what
settings, flags and parameter files hold, importable without torch (the pipelines' CPU stages and Ray Data's workers
carry them)."""

from __future__ import annotations

from dataclasses import dataclass, field

# Label pruning (method "pruned") runs the CRF over the labels that can take pixels in its result: those whose
# marginal comes within PRUNE_RATIO of the winner's on some cell of a screening mean field run over every label on a
# grid of PRUNE_CELL x PRUNE_CELL pixel cells. Why this rule, from the mean-field update: see
# deeplab_core.crf.select_labels.
PRUNE_RATIO = 0.05  # ~e^-3: the margin the cell grid's approximation of the messages must stay within
PRUNE_CELL = 8  # the output stride of DeepLab's logits: the unary holds no finer detail
# "exact": pydensecrf over every label (the reference); "native": deeplab_core._meanfield over every label, the
# same arithmetic; "pruned": the native code over the labels select_labels keeps, with the narrow spatial kernel
# (theta_gamma <= 2 pixels) computed exactly on the pixel grid rather than approximated on a lattice (faster).
METHODS = ("pruned", "native", "exact")
_KERNEL_WIDTHS = ("bilateral_xy_std", "bilateral_rgb_std", "gaussian_xy_std")


@dataclass(frozen=True)
class CRFParams:
    """The CRF's parameters (the paper's by default) and how it is computed. Checked when made."""

    # A field with help text is a pipeline flag, --crf-<name> (pipelines.common.options); the weights and widths
    # come from a --crf-params file, as pipelines.tune_crf writes it.
    iterations: int = field(default=10, metadata={"help": "mean-field iterations"})
    bilateral_weight: float = 4.0  # w1
    bilateral_xy_std: float = 67.0  # theta_alpha
    bilateral_rgb_std: float = 3.0  # theta_beta
    gaussian_weight: float = 3.0  # w2
    gaussian_xy_std: float = 1.0  # theta_gamma
    method: str = field(default="pruned", metadata={
        "choices": METHODS,
        "help": "pruned: the native CRF over the labels label pruning keeps; native: the native CRF "
                "over every label; exact: the reference, pydensecrf over every label (~5x slower); see docs/crf.md"})
    prune_ratio: float = field(default=PRUNE_RATIO, metadata={
        "help": "label pruning (method pruned): the CRF runs over the labels whose marginal, in a screening mean "
                "field on 8-pixel cells, comes within this factor of a cell's winner (smaller keeps more labels)"})
    prune_cell: int = PRUNE_CELL

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"CRFParams: method must be one of {METHODS}, got {self.method!r}")
        if self.iterations < 1:
            raise ValueError(f"CRFParams: iterations must be >= 1, got {self.iterations}")
        for width in _KERNEL_WIDTHS:
            if not getattr(self, width) > 0:
                raise ValueError(f"CRFParams: {width} is a kernel width and must be > 0, got {getattr(self, width)}")
        if not 0 < self.prune_ratio <= 1:
            raise ValueError(f"CRFParams: prune_ratio must be in (0, 1], got {self.prune_ratio}")
        if self.prune_cell < 1:
            raise ValueError(f"CRFParams: prune_cell must be >= 1 pixel, got {self.prune_cell}")


PAPER_PARAMS = CRFParams()
