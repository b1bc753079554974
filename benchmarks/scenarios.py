"""Model-output scenarios for the dense CRF's tests and benchmarks: model-like low-resolution logits for a synthetic
scene's mask, in families (confident, low temperature, noisy, uncertain, many classes, weak boundaries), so that the
CRF can be checked and timed on many realistic score maps without a trained model."""

from __future__ import annotations

import numpy as np

from deeplab_core.synthetic import make_sample


def simulated_logits(mask: np.ndarray, num_classes: int, rng: np.random.Generator, stride: int = 8,
                     sharpness: float = 12.0, noise: float = 1.0, absent_margin: float = 8.0,
                     distractors: int = 1, temperature: float = 1.0) -> np.ndarray:
    """Model-like low-resolution logits for a mask: C x ceil(H/stride) x ceil(W/stride) float32.

    The one-hot mask is averaged over stride x stride cells (a DeepLab output's blurry boundaries), scaled by
    ``sharpness``, with Gaussian ``noise`` on every class. Classes absent from the image sit ``absent_margin`` lower,
    as a trained classifier holds classes it sees no evidence for, except ``distractors`` randomly chosen absent
    classes that stay as plausible as noise makes them (the confusable class a real model hesitates over). Dividing
    by ``temperature`` > 1 makes a less confident model. For CRF tests and benchmarks that need many realistic score
    maps without a trained model.
    """
    import torch
    from torch.nn import functional as F

    height, width = mask.shape
    one_hot = F.one_hot(torch.from_numpy(mask.astype(np.int64)), num_classes).permute(2, 0, 1).float()
    one_hot = F.pad(one_hot, (0, -width % stride, 0, -height % stride))
    cells = F.avg_pool2d(one_hot[None], stride)[0].numpy()
    logits = sharpness * cells + rng.normal(0.0, noise, cells.shape)
    absent = np.setdiff1d(np.arange(num_classes), np.unique(mask[mask < num_classes]))
    quiet = absent if distractors <= 0 else np.setdiff1d(absent, rng.choice(absent, min(distractors, len(absent)),
                                                                             replace=False))
    logits[quiet] -= absent_margin
    return (logits / temperature).astype(np.float32)


# Families of model outputs the CRF must handle, as ``make_sample`` and ``simulated_logits`` keyword arguments:
# today's confident model, less confident ones (temperature), i.i.d. logit noise of several strengths, a model unsure
# of everything (soft boundaries, noise, absent classes close), scenes with many classes present, and weak shared
# boundaries: where two classes meet they share the probability (the leader holds 0.2-0.45) and every absent class
# sits only a couple of logits below them with i.i.d. noise, so that noise lets absent classes lead stray cells.
# benchmarks/crf.py adds a real DeepLab's outputs (trained_model_cases).
MODEL_OUTPUT_FAMILIES: dict[str, dict] = {
    "confident": {},
    "temperature 2": {"temperature": 2.0},
    "temperature 4": {"temperature": 4.0},
    "noise 2": {"noise": 2.0},
    "noise 3": {"noise": 3.0},
    "uncertain": {"sharpness": 6.0, "noise": 1.5, "absent_margin": 3.0},
    "many classes": {"max_shapes": 8},
    "weak boundaries": {"sharpness": 4.0, "noise": 0.8, "absent_margin": 0.0, "distractors": 0},
}


def simulated_case(rng: np.random.Generator, family: str, size: int = 512,
                   num_classes: int = 21) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, mask, C x h x w low-resolution logits at stride 8) of one ``MODEL_OUTPUT_FAMILIES`` member."""
    settings = dict(MODEL_OUTPUT_FAMILIES[family])
    image, mask = make_sample(rng, size=size, num_classes=num_classes, max_shapes=settings.pop("max_shapes", 3))
    return image, mask, simulated_logits(mask, num_classes, rng, **settings)
