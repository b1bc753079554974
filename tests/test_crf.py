import numpy as np
import pytest
import torch
from torch.nn import functional as F

from deeplab_core.crf import PAPER_PARAMS, dense_crf
from deeplab_core.metrics import ConfusionMatrix
from deeplab_core.synthetic import make_sample


def _blurry_noisy_probs(mask: np.ndarray, num_classes: int, rng: np.random.Generator, stride: int = 8) -> np.ndarray:
    """Mimic a DeepLab output: class scores at 1/stride resolution (blurred boundaries) with noise."""
    one_hot = F.one_hot(torch.from_numpy(mask.astype(np.int64)), num_classes).permute(2, 0, 1).float()
    low = F.avg_pool2d(one_hot[None], stride)[0]
    logits = 4.0 * low + torch.from_numpy(rng.normal(0, 0.6, low.shape).astype(np.float32))
    return torch.softmax(logits, 0).numpy()


def test_paper_defaults():
    assert (PAPER_PARAMS.iterations, PAPER_PARAMS.bilateral_weight, PAPER_PARAMS.bilateral_xy_std,
            PAPER_PARAMS.bilateral_rgb_std, PAPER_PARAMS.gaussian_weight, PAPER_PARAMS.gaussian_xy_std) == (
        10, 4.0, 67.0, 3.0, 3.0, 1.0)


def test_crf_improves_miou_over_argmax_on_blurry_noisy_unaries():
    rng = np.random.default_rng(0)
    num_classes = 4
    before, after = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)
    for _ in range(6):
        image, mask = make_sample(rng, size=96, num_classes=num_classes)
        probs = _blurry_noisy_probs(mask, num_classes, rng)
        upsampled = F.interpolate(torch.from_numpy(probs)[None], size=mask.shape, mode="bilinear",
                                  align_corners=False)[0]
        before.update(upsampled.argmax(0).numpy(), mask)
        after.update(dense_crf(image, probs), mask)
    assert after.miou() > before.miou() + 0.02, (before.miou(), after.miou())


def test_accepts_low_resolution_logits_and_returns_marginals():
    rng = np.random.default_rng(1)
    image, mask = make_sample(rng, size=64, num_classes=3)
    logits = np.log(_blurry_noisy_probs(mask, 3, rng))
    labels, marginals = dense_crf(image, logits, is_logits=True, return_probs=True)
    assert labels.shape == (64, 64)
    assert marginals.shape == (3, 64, 64) and marginals.dtype == np.float32
    assert np.allclose(marginals.sum(0), 1.0, atol=1e-4)
    assert np.array_equal(labels, marginals.argmax(0))


def test_without_pairwise_terms_the_crf_is_the_argmax_of_the_upsampled_unary():
    rng = np.random.default_rng(2)
    image, mask = make_sample(rng, size=64, num_classes=3)
    probs = _blurry_noisy_probs(mask, 3, rng)
    labels = dense_crf(image, probs, bilateral_weight=0.0, gaussian_weight=0.0, iterations=1)
    upsampled = F.interpolate(torch.from_numpy(probs)[None], size=(64, 64), mode="bilinear", align_corners=False)[0]
    assert np.array_equal(labels, upsampled.argmax(0).numpy())


@pytest.mark.parametrize("image, probs, message", [
    (np.zeros((8, 8, 3), np.float32), np.full((2, 8, 8), 0.5, np.float32), "uint8 H x W x 3"),
    (np.zeros((8, 8), np.uint8), np.full((2, 8, 8), 0.5, np.float32), "uint8 H x W x 3"),
    (np.zeros((8, 8, 4), np.uint8), np.full((2, 8, 8), 0.5, np.float32), "uint8 H x W x 3"),
    (np.zeros((8, 8, 3), np.uint8), np.full((2, 8), 0.5, np.float32), "C x h x w"),
    (np.zeros((8, 8, 3), np.uint8), np.ones((2, 8, 8), np.int64), "float"),
    (np.zeros((8, 8, 3), np.uint8), np.ones((1, 8, 8), np.float32), "at least 2 classes"),
    (np.zeros((8, 8, 3), np.uint8), np.full((2, 9, 8), 0.5, np.float32), "image's size or smaller"),
])
def test_bad_shapes_and_dtypes_are_rejected(image, probs, message):
    with pytest.raises(ValueError, match=message):
        dense_crf(image, probs)


def test_unknown_parameter_is_rejected():
    with pytest.raises(TypeError):
        dense_crf(np.zeros((8, 8, 3), np.uint8), np.full((2, 8, 8), 0.5, np.float32), theta=3)
