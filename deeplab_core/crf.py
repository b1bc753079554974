"""Fully connected CRF refinement (Krähenbühl & Koltun), as used by DeepLab.

The defaults are the parameters released with DeepLab-v2 ResNet-101 for PASCAL VOC: 10 mean-field
iterations, bilateral kernel w=4, theta_alpha=67, theta_beta=3, Gaussian kernel w=3, theta_gamma=1.

Two implementations of the same mean-field inference: pydensecrf (Krähenbühl's code; the exact mode, the
reference) and ``deeplab_core._meanfield`` (the same arithmetic engineered for few labels; the default, with
label pruning and the narrow spatial kernel computed exactly). ``benchmarks/crf.py`` measures both against each
other.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np

from deeplab_core.crf_params import PAPER_PARAMS, CRFParams
from deeplab_core.extension import load_meanfield
from deeplab_core.resampling import cell_means, resize_bilinear, upsample_grid


# pydensecrf.utils.unary_from_softmax clips probabilities here; the exact path reproduces it bit for bit.
_MIN_PROBABILITY = 1e-5
_SUBSAMPLES = 4  # sample points per cell side when screening from low-resolution logits (refine_low_res)


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams = PAPER_PARAMS, *,
              is_logits: bool = False) -> np.ndarray:
    """Refine class probabilities with a dense CRF; returns the H x W label map (int64).

    ``image``: uint8 H x W x 3 RGB. ``probs``: float C x h x w class probabilities (or logits with
    ``is_logits=True``); when h x w is smaller than H x W it is bilinearly resized to H x W first (logits
    before the softmax). ``params``: the paper's values and pruned inference by default (``CRFParams``).
    """
    return dense_crf_marginals(image, probs, params, is_logits=is_logits)[0]


def dense_crf_marginals(image: np.ndarray, probs: np.ndarray, params: CRFParams = PAPER_PARAMS, *,
                        is_logits: bool = False, phases: dict[str, float] | None = None,
                        stats: dict[str, int] | None = None,
                        keep_kernels: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``dense_crf``'s labels and the refined C x H x W float32 marginals (0 for pruned labels, the kept labels'
    renormalised to sum to 1).

    ``phases``: when given, the seconds spent in each step are added to it (``benchmarks/crf.py`` reports them).
    ``stats``: when given, ``stats["labels"]`` is set to the number of labels the CRF ran over (the manifest's
    ``crf_labels``: what the image cost). ``keep_kernels``: keep the bilateral lattice (it depends on the image and
    the kernel widths only) for the next call on this image with the same widths, which then skips building it: for
    scoring several settings of one image (``crf_tuning``); the results are the same either way.
    """
    _check_inputs(image, probs)
    clock = _PhaseClock(phases)
    height, width = image.shape[:2]
    full = _full_size_probabilities(probs, (height, width), is_logits)
    clock.lap("probabilities at full size")
    if params.method == "exact":
        marginals = _pydensecrf_mean_field(image, _unary(full), params)
        clock.lap("pydensecrf")
        if stats is not None:
            stats["labels"] = probs.shape[0]
        return marginals.argmax(0), marginals

    kept = select_labels(image, full, params) if params.method == "pruned" else None
    rest = None
    if kept is not None:
        # The labels left out gather no support (that is why they were left out): their messages are taken as 0, so
        # in every pixel's normalisation they weigh what their unaries say, summed - their share of the probability
        # (each clipped like the unary, which 1 - kept covers to within 2e-4). Dropping that share instead would
        # inflate the kept labels' marginals and with them every message, where a confused model spreads its mass.
        full = full[kept]
        rest = np.maximum(1.0 - full.sum(0), (probs.shape[0] - len(kept)) * _MIN_PROBABILITY)
    if stats is not None:
        stats["labels"] = full.shape[0]
    clock.lap("label selection")
    pixel_marginals, native_phases = _native_mean_field(image, full, params, rest, keep_kernels)  # H x W x kept
    clock.lap("unary", native_phases)  # its time outside the extension's phases: computing -log p
    labels = _label_of_largest(pixel_marginals)
    marginals = np.zeros((probs.shape[0], height, width), dtype=np.float32)
    if kept is None:
        marginals[:] = pixel_marginals.transpose(2, 0, 1)
    else:
        labels = kept[labels]
        marginals[kept] = pixel_marginals.transpose(2, 0, 1) / pixel_marginals.sum(-1)
    clock.lap("labels and marginals")
    return labels, marginals


class _PhaseClock:
    """Adds the seconds since its previous lap to ``phases[name]`` (nothing when ``phases`` is None)."""

    def __init__(self, phases: dict[str, float] | None) -> None:
        self.phases, self.last = phases, time.perf_counter()

    def lap(self, name: str, parts: dict[str, float] | None = None) -> None:
        """``parts``: seconds already measured inside the step, reported under their own names; the rest of the
        step's time is ``name``'s."""
        if self.phases is None:
            return
        now = time.perf_counter()
        rest = now - self.last
        for part, seconds in (parts or {}).items():
            self.phases[part] = self.phases.get(part, 0.0) + seconds
            rest -= seconds
        self.phases[name] = self.phases.get(name, 0.0) + rest
        self.last = now


def select_labels(image: np.ndarray, probs: np.ndarray, params: CRFParams = PAPER_PARAMS) -> np.ndarray | None:
    """Label ids that can take pixels in the CRF's result (at least two), from the uint8 H x W x 3 image and the
    C x H x W probabilities at its size; None: keep all.

    Why a screening mean field and not a threshold on ``probs``. In densecrf's update (Potts model) the energy of
    label l at pixel i is  E_i(l) = log p_i(l) + w1 B_i[Q(l)] + w2 G_i[Q(l)],  where B and G are the normalised
    bilateral and spatial filters of the label's current marginals Q(l): kernel-weighted means of Q_j(l) over i's
    neighbours (near, and for B also alike in colour), each between 0 and about 1. l takes pixel i when E_i(l)
    beats every other label's energy: its unary deficit to the pixel's leader a, log p_i(a) - log p_i(l), must be
    made up by support, w1 (B_i[Q(l)] - B_i[Q(a)]) + w2 (G_i[Q(l)] - G_i[Q(a)]), worth up to w1 + w2 = 7 nats.
    So a pixel's probabilities alone settle nothing: along a weak boundary, where two classes share the pixel and
    the leader holds 0.3-0.45, absent classes lifted by noise come within any fixed ratio of the leader on hundreds
    of pixels (the earlier rule, within 0.2 on 64 pixels, then kept all 21 labels), yet they hold no neighbourhood,
    so their support stays near their small mean share of it; the labels that hold regions gain e^(w * support)
    at each iteration, and the noise dies out. Conversely, a label far behind on a pixel can take it if its
    neighbours hold it. Whether a label can win is a property of the dynamics over neighbourhoods.

    Those neighbourhoods are coarse next to the unary's detail: DeepLab's logits live on the output-stride grid (8
    px cells) and the bilateral kernel reaches theta_alpha = 67 px, ~8 cells. The screening therefore runs the same
    mean field (every label, the same weights and iterations) on a grid of ``params.prune_cell`` px cells, each
    cell's mean colour and mean probabilities, kernel widths measured in cells: 1/64 of the pixels, ~1 % of the
    time of the CRF over every label. It keeps every label whose screened marginal comes within
    ``params.prune_ratio`` (e^-3) of the cell's winner on some cell: a 3-nat margin for what the grid cannot see
    (colour detail inside a cell that the pixel-level bilateral kernel uses, boundaries crossing cells). Measured
    with ``benchmarks/crf.py`` on every family of model outputs, a trained model's included: the kept labels are
    those the exact CRF's result holds, at most one more (and one fewer where the exact CRF keeps a noise label on
    a few pixels).
    """
    return _screen(_cell_image(image, params.prune_cell), cell_means(probs, params.prune_cell), params)


def _cell_image(image: np.ndarray, cell: int) -> np.ndarray:
    """uint8 h x w x 3: the image's mean colour over each ``cell`` x ``cell`` cell."""
    pooled_image = cell_means(image.transpose(2, 0, 1), cell)
    return np.ascontiguousarray(np.round(pooled_image).astype(np.uint8).transpose(1, 2, 0))


def _cell_probabilities(low: np.ndarray, size: tuple[int, int], stride: int, cell: int) -> np.ndarray:
    """C x h x w: each ``cell`` x ``cell`` cell's mean class probabilities, as ``select_labels`` pools them from
    full-size probabilities, estimated from ``_SUBSAMPLES`` x ``_SUBSAMPLES`` points per cell of the stride-grid
    logits (the softmax of the logits interpolated there, as ``upsample_logits`` interpolates them). One point per
    cell would keep the grid's noise that averaging over the cell's pixels smooths, and more labels with it."""
    step = cell / _SUBSAMPLES  # pixels between sample points; this geometry is upsample_logits'
    samples = (math.ceil(size[0] / step), math.ceil(size[1] / step))
    fine = resize_bilinear(low, scale=stride / step, keep=samples)
    return cell_means(_softmax(fine), _SUBSAMPLES)


def _screen(cell_image: np.ndarray, cell_probs: np.ndarray, params: CRFParams) -> np.ndarray | None:
    """``select_labels`` on the cell grid: the screening mean field and the labels it keeps."""
    classes, cell = cell_probs.shape[0], params.prune_cell
    screening = replace(params, method="pruned", bilateral_xy_std=params.bilateral_xy_std / cell,
                        gaussian_xy_std=params.gaussian_xy_std / cell)
    marginals, _ = _native_mean_field(cell_image, np.ascontiguousarray(cell_probs), screening)  # h x w x C
    closeness = (marginals / marginals.max(-1, keepdims=True)).reshape(-1, classes).max(0)
    wanted = closeness >= params.prune_ratio
    if wanted.sum() < 2:  # a CRF needs two labels: add the closest runner-up
        closeness[wanted] = np.inf
        wanted[np.argsort(-closeness, kind="stable")[:2]] = True
    if wanted.all():
        return None
    return np.flatnonzero(wanted)


def _check_inputs(image: np.ndarray, probs: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        described = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"dense_crf: image must be a uint8 H x W x 3 RGB array, got {described}")
    if not isinstance(probs, np.ndarray) or probs.ndim != 3 or not np.issubdtype(probs.dtype, np.floating):
        described = f"{probs.shape} {probs.dtype}" if isinstance(probs, np.ndarray) else type(probs).__name__
        raise ValueError(f"dense_crf: probs must be a float C x h x w array, got {described}")
    classes, height, width = probs.shape
    if classes < 2:
        raise ValueError(f"dense_crf: probs needs at least 2 classes, got {classes}")
    if height > image.shape[0] or width > image.shape[1] or height < 1 or width < 1:
        raise ValueError(
            f"dense_crf: probs are {height} x {width} but the image is {image.shape[0]} x {image.shape[1]}; "
            "probs must be at the image's size or smaller (they are upsampled inside)"
        )


def _full_size_probabilities(probs: np.ndarray, size: tuple[int, int], is_logits: bool) -> np.ndarray:
    """float32 C x H x W probabilities at the image's size (logits are resized, then soft-maxed)."""
    values = np.asarray(probs, dtype=np.float32)
    if values.shape[1:] != size:
        values = resize_bilinear(values, size)
    return _softmax(values) if is_logits else values


def _softmax(logits: np.ndarray) -> np.ndarray:
    """float32 softmax over the first (class) axis."""
    exponentials = logits - logits.max(0)
    np.exp(exponentials, out=exponentials)
    exponentials /= exponentials.sum(0)
    return exponentials


def _logsumexp(logits: np.ndarray) -> np.ndarray:
    """1 x H x W: the log of the summed exponentials of C x H x W logits."""
    largest = logits.max(0, keepdims=True)
    return largest + np.log(np.exp(logits - largest).sum(0, keepdims=True))


def _unary(probs: np.ndarray) -> np.ndarray:
    """Negative log probabilities, float32 C x (H*W), exactly as ``pydensecrf.utils.unary_from_softmax``."""
    clipped = np.clip(probs, _MIN_PROBABILITY, 1.0)
    return np.ascontiguousarray(-np.log(clipped).reshape(probs.shape[0], -1), dtype=np.float32)


def _pydensecrf_mean_field(image: np.ndarray, unary: np.ndarray, settings: CRFParams) -> np.ndarray:
    import pydensecrf.densecrf as dcrf  # compiled extension: imported where used

    height, width = image.shape[:2]
    classes = unary.shape[0]
    crf = dcrf.DenseCRF2D(width, height, classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=settings.gaussian_xy_std, compat=settings.gaussian_weight)
    crf.addPairwiseBilateral(sxy=settings.bilateral_xy_std, srgb=settings.bilateral_rgb_std, rgbim=_writable(image),
                             compat=settings.bilateral_weight)
    marginals = np.asarray(crf.inference(settings.iterations), dtype=np.float32)
    return marginals.reshape(classes, height, width)


def _native_mean_field(image: np.ndarray, probs: np.ndarray, settings: CRFParams, rest: np.ndarray | None = None,
                       keep_kernels: bool = False) -> tuple[np.ndarray, dict[str, float]]:
    """Marginals, float32 H x W x C, from C x H x W probabilities, with ``deeplab_core._meanfield``; and the
    seconds it spent in each phase. ``rest``: H x W probability of labels left out, in the normalisation only.
    ``keep_kernels``: keep the bilateral lattice for a next call on the same image and kernel widths."""
    mean_field = load_meanfield().mean_field
    classes, height, width = probs.shape
    # The extension works pixel-major (a pixel's labels adjacent): write the unary straight into that layout.
    unary = np.empty((height, width, classes), dtype=np.float32)
    np.clip(probs.transpose(1, 2, 0), _MIN_PROBABILITY, 1.0, out=unary)
    np.log(unary, out=unary)
    np.negative(unary, out=unary)
    rest_energy = b"" if rest is None else np.log(rest, dtype=np.float32)
    marginals = np.empty_like(unary)
    phases = mean_field(unary, rest_energy, np.ascontiguousarray(image), marginals, height=height, width=width,
                        labels=classes, iterations=settings.iterations, bilateral_weight=settings.bilateral_weight,
                        bilateral_xy_std=settings.bilateral_xy_std, bilateral_rgb_std=settings.bilateral_rgb_std,
                        gaussian_weight=settings.gaussian_weight, gaussian_xy_std=settings.gaussian_xy_std,
                        separable_spatial_kernel=settings.method == "pruned", keep_bilateral=keep_kernels)
    return marginals, phases


def _label_of_largest(pixel_marginals: np.ndarray) -> np.ndarray:
    """``pixel_marginals.argmax(-1)`` (ties to the first label) of H x W x L marginals; with two labels, the count
    pruning keeps most often, one comparison: numpy's argmax over so short a last axis took ~1 ms per 512 x 512."""
    if pixel_marginals.shape[-1] == 2:
        return (pixel_marginals[..., 1] > pixel_marginals[..., 0]).astype(np.intp)
    return pixel_marginals.argmax(-1)


def _writable(image: np.ndarray) -> np.ndarray:
    # pydensecrf's typed memoryviews reject read-only buffers (Ray Data's zero-copy arrays are read-only).
    return np.require(image, dtype=np.uint8, requirements=["C_CONTIGUOUS", "WRITEABLE"])


def refine_low_res(image: np.ndarray, low_res_logits: np.ndarray, stride: int,
                   params: CRFParams = PAPER_PARAMS, stats: dict[str, int] | None = None,
                   phases: dict[str, float] | None = None, keep_kernels: bool = False) -> np.ndarray:
    """Dense-CRF labels (H x W int64) from low-resolution logits on the stride grid of ``image`` (see
    ``deeplab_core.inference``): what the pipelines' CRF stage runs.

    The logits are upsampled with the grid's exact geometry (``upsample_logits``), not stretched to the image.
    Pruned (the default), the labels are screened on the logits' own grid first (``select_labels``' rule, each
    cell's mean probabilities estimated from points of the interpolated logits inside it), and only the kept labels
    are brought to full size, with one more channel for the labels left out: their log-sum-exp on the grid,
    upsampled like the rest. A kept label's probability is then what the full softmax gives it, up to how the
    left-out labels' share is interpolated; that share is small by construction (they were left out for being far
    behind) and enters only the normalisation. This spares upsampling and soft-maxing every class at full size
    (~5 % of a 512 x 512 image's time with 21 classes); the labels kept and the results match ``dense_crf``'s on
    every family of model outputs (tests/test_crf.py).
    ``stats``, ``phases``, ``keep_kernels``: as ``dense_crf_marginals``'.
    """
    low = np.asarray(low_res_logits, dtype=np.float32)
    size = image.shape[:2]
    if params.method != "pruned":
        logits = upsample_grid(low, size, stride)
        return dense_crf_marginals(image, logits, params, is_logits=True, stats=stats, phases=phases,
                                   keep_kernels=keep_kernels)[0]
    _check_inputs(image, low)
    clock = _PhaseClock(phases)
    classes, cell = low.shape[0], params.prune_cell
    kept = _screen(_cell_image(image, cell), _cell_probabilities(low, size, stride, cell), params)
    if kept is None:
        kept = np.arange(classes)
    clock.lap("label selection")
    left_out = np.setdiff1d(np.arange(classes), kept)
    channels = low[kept]
    if len(left_out):
        channels = np.concatenate([channels, _logsumexp(low[left_out])])
    probs = _softmax(upsample_grid(channels, size, stride))
    rest = None
    if len(left_out):
        rest = np.maximum(probs[-1], len(left_out) * _MIN_PROBABILITY)
        probs = probs[:-1]
    if stats is not None:
        stats["labels"] = len(kept)
    clock.lap("probabilities at full size")
    pixel_marginals, native_phases = _native_mean_field(image, probs, params, rest, keep_kernels)
    clock.lap("unary", native_phases)
    labels = kept[_label_of_largest(pixel_marginals)]
    clock.lap("labels")
    return labels
