"""Fully connected CRF refinement (Krähenbühl & Koltun), as used by DeepLab, through pydensecrf.

The defaults are the parameters released with DeepLab-v2 ResNet-101 for PASCAL VOC: 10 mean-field
iterations, bilateral kernel w=4, theta_alpha=67, theta_beta=3, Gaussian kernel w=3, theta_gamma=1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class CRFParams:
    iterations: int = 10
    bilateral_weight: float = 4.0  # w1
    bilateral_xy_std: float = 67.0  # theta_alpha
    bilateral_rgb_std: float = 3.0  # theta_beta
    gaussian_weight: float = 3.0  # w2
    gaussian_xy_std: float = 1.0  # theta_gamma


PAPER_PARAMS = CRFParams()
_MIN_PROBABILITY = 1e-8


def dense_crf(image: np.ndarray, probs: np.ndarray, *, is_logits: bool = False, return_probs: bool = False,
              **params) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Refine class probabilities with a dense CRF; returns the H x W label map (int64).

    ``image``: uint8 H x W x 3 RGB. ``probs``: float C x h x w class probabilities (or logits with
    ``is_logits=True``); when h x w is smaller than H x W it is bilinearly resized to H x W first (logits
    before the softmax). Keyword arguments override ``CRFParams`` (the paper's values). With
    ``return_probs`` also returns the refined C x H x W float32 marginals.
    """
    settings = CRFParams(**params)
    _check_inputs(image, probs, settings)
    height, width = image.shape[:2]
    unary = _unary(probs, (height, width), is_logits)
    marginals = _mean_field(image, unary, settings)
    labels = marginals.argmax(0)
    if return_probs:
        return labels, marginals
    return labels


def _check_inputs(image: np.ndarray, probs: np.ndarray, settings: CRFParams) -> None:
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
    if settings.iterations < 1:
        raise ValueError(f"dense_crf: iterations must be >= 1, got {settings.iterations}")


def _unary(probs: np.ndarray, size: tuple[int, int], is_logits: bool) -> np.ndarray:
    """Negative log probabilities, float32 C x (H*W), C-contiguous as pydensecrf wants them."""
    values = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32))
    if values.shape[1:] != size:
        values = F.interpolate(values[None], size=size, mode="bilinear", align_corners=False)[0]
    if is_logits:
        neg_log = -torch.log_softmax(values, dim=0)
    else:
        neg_log = -torch.log(values.clamp_(min=_MIN_PROBABILITY))
    return neg_log.reshape(values.shape[0], -1).numpy()


def _mean_field(image: np.ndarray, unary: np.ndarray, settings: CRFParams) -> np.ndarray:
    import pydensecrf.densecrf as dcrf  # compiled extension: imported where used

    height, width = image.shape[:2]
    classes = unary.shape[0]
    crf = dcrf.DenseCRF2D(width, height, classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=settings.gaussian_xy_std, compat=settings.gaussian_weight)
    crf.addPairwiseBilateral(sxy=settings.bilateral_xy_std, srgb=settings.bilateral_rgb_std,
                             rgbim=np.ascontiguousarray(image), compat=settings.bilateral_weight)
    marginals = np.asarray(crf.inference(settings.iterations), dtype=np.float32)
    return marginals.reshape(classes, height, width)


def refine_low_res(image: np.ndarray, low_res_logits: np.ndarray, stride: int, **params) -> np.ndarray:
    """Dense CRF from low-resolution logits on the stride grid of ``image`` (see ``deeplab_core.inference``).

    The logits are upsampled with the grid's exact geometry (``upsample_logits``), not stretched to the image.
    """
    from deeplab_core.inference import upsample_logits

    logits = upsample_logits(torch.from_numpy(np.asarray(low_res_logits, dtype=np.float32)), image.shape[:2], stride)
    return dense_crf(image, logits.numpy(), is_logits=True, **params)
