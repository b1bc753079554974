from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from deeplab_core.crf import (
    PAPER_PARAMS, CRFParams, _label_of_largest, _native_mean_field, dense_crf, dense_crf_marginals, refine_low_res,
    select_labels,
)
from deeplab_core.metrics import ConfusionMatrix
from benchmarks.scenarios import MODEL_OUTPUT_FAMILIES, simulated_case, simulated_logits
from deeplab_core.synthetic import make_sample


def _blurry_noisy_probs(mask: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Mimic a DeepLab output: class scores at 1/8 resolution (blurred boundaries) with noise."""
    logits = simulated_logits(mask, num_classes, rng, sharpness=4.0, noise=0.6)
    return torch.softmax(torch.from_numpy(logits), 0).numpy()


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
    labels, marginals = dense_crf_marginals(image, logits, is_logits=True)
    assert labels.shape == (64, 64)
    assert marginals.shape == (3, 64, 64) and marginals.dtype == np.float32
    assert np.allclose(marginals.sum(0), 1.0, atol=1e-4)
    assert np.array_equal(labels, marginals.argmax(0))


def test_without_pairwise_terms_the_crf_is_the_argmax_of_the_upsampled_unary():
    rng = np.random.default_rng(2)
    image, mask = make_sample(rng, size=64, num_classes=3)
    probs = _blurry_noisy_probs(mask, 3, rng)
    labels = dense_crf(image, probs, CRFParams(bilateral_weight=0.0, gaussian_weight=0.0, iterations=1))
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


def test_read_only_inputs_are_accepted():
    rng = np.random.default_rng(5)
    image, mask = make_sample(rng, size=32, num_classes=3)
    probs = _blurry_noisy_probs(mask, 3, rng)
    image.setflags(write=False)
    probs.setflags(write=False)
    before = probs.copy()
    assert dense_crf(image, probs).shape == (32, 32)
    assert dense_crf(image, probs, CRFParams(method="exact")).shape == (32, 32)
    assert np.array_equal(probs, before)


@pytest.mark.parametrize("width", ["bilateral_xy_std", "bilateral_rgb_std", "gaussian_xy_std"])
def test_kernel_widths_must_be_positive(width):
    with pytest.raises(ValueError, match=f"{width} is a kernel width"):
        CRFParams(**{width: 0.0})


def test_unknown_parameter_is_rejected():
    with pytest.raises(TypeError):
        CRFParams(theta=3)


def _model_like_probs(rng: np.random.Generator, size: int, num_classes: int = 21):
    """A 21-class image holding a few classes, and model-like probabilities at 1/8 resolution."""
    image, mask = make_sample(rng, size=size, num_classes=num_classes)
    return image, mask, torch.softmax(torch.from_numpy(simulated_logits(mask, num_classes, rng)), 0).numpy()


def test_exact_mode_reproduces_pydensecrf_bit_for_bit():
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    rng = np.random.default_rng(3)
    image, _, low = _model_like_probs(rng, 64)
    probs = F.interpolate(torch.from_numpy(low)[None], size=(64, 64), mode="bilinear", align_corners=False)[0].numpy()
    crf = dcrf.DenseCRF2D(64, 64, 21)
    crf.setUnaryEnergy(unary_from_softmax(probs))
    crf.addPairwiseGaussian(sxy=1, compat=3)
    crf.addPairwiseBilateral(sxy=67, srgb=3, rgbim=np.ascontiguousarray(image), compat=4)
    reference = np.array(crf.inference(10), dtype=np.float32).reshape(21, 64, 64)
    labels, marginals = dense_crf_marginals(image, probs, CRFParams(method="exact"))
    assert np.array_equal(marginals, reference)
    assert np.array_equal(labels, reference.argmax(0))


def _crf_of_path(path: str, image: np.ndarray, low: np.ndarray, params: CRFParams,
                 stats: dict | None = None) -> np.ndarray:
    if path == "refine_low_res":  # the pipelines' CRF: stride-grid logits, screened on their own grid
        return refine_low_res(image, low, 8, params, stats)
    return dense_crf_marginals(image, low, params, is_logits=True, stats=stats)[0]  # logits resized to the image


@pytest.mark.parametrize("path", ["dense_crf", "refine_low_res"])
@pytest.mark.parametrize("family", list(MODEL_OUTPUT_FAMILIES))
def test_label_pruning_agrees_with_the_exact_crf_on_every_family_of_model_outputs(family, path):
    """Agreement overall (the issue's bar), and against what the CRF does: the exact CRF moves only 1-2 % of these
    pixels away from the model's argmax, so a CRF with 3 iterations instead of 10, or theta_beta 6 instead of 3,
    still agrees on >= 99.8 %; but it differs on 2.3-8 % as many pixels as the exact CRF moves, the pruned one on
    <= 0.7 %. Both ways in: full-size probabilities (``dense_crf``) and the pipelines' low-resolution logits."""
    rng = np.random.default_rng(4)
    agree = total = moved = 0
    kept = []
    for _ in range(2):
        image, _, low = simulated_case(rng, family, size=160)
        probs = F.interpolate(torch.from_numpy(low)[None], size=(160, 160), mode="bilinear")[0].softmax(0).numpy()
        exact = _crf_of_path(path, image, low, CRFParams(method="exact"))
        stats: dict = {}
        pruned = _crf_of_path(path, image, low, PAPER_PARAMS, stats)  # the default: pruned
        kept.append(stats["labels"])
        agree += int((exact == pruned).sum())
        total += exact.size
        moved += int((exact != probs.argmax(0)).sum())
    assert agree / total >= 0.995, agree / total
    assert moved > 0.005 * total, moved  # the CRF does change these outputs
    assert total - agree <= 0.02 * moved, (total - agree, moved)
    assert max(kept) <= 9, kept  # pruning still prunes: at most the classes present (<= 8) plus one


def _two_halves(size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A red left half and a blue right half, labels 0 and 1 leading each with 0.8, and six other labels."""
    image = np.zeros((size, size, 3), np.uint8)
    image[:, : size // 2, 0] = image[:, size // 2:, 2] = 200
    probs = np.full((8, size, size), 0.2 / 7, np.float32)
    probs[0, :, : size // 2] = probs[1, :, size // 2:] = 0.8
    return image, probs


def test_select_labels_keeps_the_labels_that_can_win_not_the_ones_noise_lifts():
    image, probs = _two_halves()
    assert select_labels(image, probs).tolist() == [0, 1]
    # Noise: label 5 leads a few scattered pixels and ties the leader on a whole weak row, but holds no region.
    noisy = probs.copy()
    noisy[5, 10, 3] = noisy[5, 30, 40] = noisy[5, 5, 20] = 0.9
    noisy[5, 24, :] = noisy[0, 24, :24] = noisy[1, 24, 24:] = 0.45
    assert select_labels(image, noisy).tolist() == [0, 1]
    labels = dense_crf(image, noisy / noisy.sum(0), CRFParams(method="exact"))
    assert set(np.unique(labels)) == {0, 1}  # and the exact CRF indeed gives it no pixel
    # A label leading a region of its own colour is kept, though that region is smaller than a 5 x 5 cell grid.
    holding = probs.copy()
    image[30:42, 30:42] = (0, 200, 0)
    holding[6, 30:42, 30:42], holding[1, 30:42, 30:42] = 0.8, 0.2 / 7
    assert select_labels(image, holding).tolist() == [0, 1, 6]
    assert set(np.unique(dense_crf(image, holding / holding.sum(0), CRFParams(method="exact")))) == {0, 1, 6}


def test_select_labels_keeps_at_least_two_and_can_keep_all():
    image, probs = _two_halves()
    probs[0], probs[1] = 0.2 / 7, 0.8  # one label everywhere: the closest runner-up joins it
    probs[4] = 0.2 / 7 + 1e-3
    assert select_labels(image, probs).tolist() == [1, 4]
    assert select_labels(image, probs, CRFParams(prune_ratio=1e-9)) is None  # every label close enough: keep all
    labels, marginals = dense_crf_marginals(image, probs / probs.sum(0))
    assert set(np.unique(labels)) <= {1, 4} and np.all(marginals[[0, 2, 3, 5, 6, 7]] == 0)
    with pytest.raises(ValueError, match="method"):
        CRFParams(method="fast")
    with pytest.raises(ValueError, match="prune_ratio"):
        CRFParams(prune_ratio=0)
    with pytest.raises(ValueError, match="prune_cell"):
        CRFParams(prune_cell=0)


@pytest.mark.parametrize("labels", [2, 3])  # two: one comparison; more: numpy's argmax
def test_the_label_of_the_largest_marginal_is_argmax_with_ties_to_the_first(labels):
    marginals = np.random.default_rng(labels).random((64, 48, labels), dtype=np.float32)
    marginals[:8, :, -1] = marginals[:8, :, 0]  # ties: the first label wins, as with argmax
    largest = _label_of_largest(marginals)
    assert largest.dtype == np.intp and largest.shape == (64, 48)
    np.testing.assert_array_equal(largest, marginals.argmax(-1))
    assert (largest[:8] != labels - 1).all() and (largest[8:] == labels - 1).any()


def test_pixels_whose_pruned_leader_took_all_the_mass_get_finite_marginals():
    # An untrained or very confident model: logits in the hundreds, so softmax gives exact zeros. Label 3 leads
    # on 9 pixels only (below the pruning's 64) and is pruned; the kept labels have nothing left there.
    logits = np.zeros((4, 32, 32), np.float32)
    logits[0, :, :16] = logits[1, :, 16:] = 300.0
    logits[3, 10:13, 10:13] = 600.0
    image = np.zeros((32, 32, 3), np.uint8)
    labels, marginals = dense_crf_marginals(image, logits, is_logits=True)
    assert np.isfinite(marginals).all()
    assert set(np.unique(labels)) == {0, 1}
    assert (labels[:, :8] == 0).all() and (labels[:, 24:] == 1).all()


@pytest.mark.parametrize("labels", [2, 3, 5, 8, 9, 21, 30])  # vector rows (2-8), scalar rows, chunks (> 24)
@pytest.mark.parametrize("size", [(37, 53), (1, 40), (512, 3)])
def test_native_mean_field_matches_pydensecrf_to_float_rounding(labels, size):
    """The same inference on every label (epsilon 0) through deeplab_core._meanfield and through pydensecrf.

    Not bit for bit: pydensecrf's Eigen exponentials and sums round differently (~1e-7), and ten iterations over
    noise-only logits amplify that to at most a few 1e-5 here."""
    rng = np.random.default_rng(labels * 100 + size[0])
    height, width = size
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image[:, : width // 2] //= 4  # an edge for the bilateral kernel
    logits = rng.normal(0, 2, (labels, height, width)).astype(np.float32)
    reference_labels, reference = dense_crf_marginals(image, logits, CRFParams(method="exact"), is_logits=True)
    native_labels, native = dense_crf_marginals(image, logits, CRFParams(method="native"), is_logits=True)
    assert native.shape == reference.shape == (labels, height, width)
    assert np.abs(native - reference).max() < 1e-4
    assert np.mean(native_labels == reference_labels) >= 0.999


@pytest.mark.parametrize("rgb_std", [3.0, 0.05])
def test_the_blur_finds_the_lattice_neighbours_pydensecrf_finds(rgb_std):
    """The blur's neighbours come from sorting the lattice's keys packed into one integer: 64 bits when the keys span
    a few hundred values per coordinate (theta_beta 3 on any image), 128 when they span tens of thousands (0.05 on
    random colours: ~15 bits per coordinate). Either way, the same inference as pydensecrf's hash lookups."""
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    image[:, :20] = image[:, :20] // 16 + 100  # a region of near-equal colours: vertices with many neighbours
    logits = rng.normal(0, 2, (4, 37, 53)).astype(np.float32)
    params = replace(PAPER_PARAMS, bilateral_rgb_std=rgb_std)
    exact_labels, exact = dense_crf_marginals(image, logits, replace(params, method="exact"), is_logits=True)
    native_labels, native = dense_crf_marginals(image, logits, replace(params, method="native"), is_logits=True)
    assert np.abs(native - exact).max() < 1e-4
    assert np.mean(native_labels == exact_labels) >= 0.999


# The separable filter is compiled for each label count up to 8 and runs at a runtime width above it: image shapes
# with 3 labels (thin, tall, the borders), then each compiled count and the runtime path.
@pytest.mark.parametrize(("labels", "size"), [(3, (37, 53)), (3, (3, 40)), (3, (512, 2)),
                                              (2, (29, 41)), (4, (29, 41)), (5, (29, 41)), (8, (29, 41)),
                                              (9, (29, 41)), (21, (17, 23))])
def test_pruned_mode_computes_the_narrow_spatial_kernel_exactly(labels, size):
    """The pruned CRF's spatial kernel (theta_gamma <= 2) is the Gaussian itself, filtered separably on the pixel
    grid, not its lattice approximation: with the bilateral kernel off it is plain mean field, written out here."""
    rng = np.random.default_rng(size[0] + labels)
    height, width = size
    probs = rng.dirichlet(np.ones(labels), (height, width)).transpose(2, 0, 1).astype(np.float32)
    params = CRFParams(method="pruned", bilateral_weight=0.0, gaussian_weight=3.0, gaussian_xy_std=1.0)
    marginals = _native_mean_field(np.zeros((height, width, 3), np.uint8), probs, params)[0].transpose(2, 0, 1)
    assert marginals.shape == (labels, height, width)

    def gaussian_matrix(n):  # the 1-D kernel between n positions, taps to 4 standard deviations
        distance = np.subtract.outer(np.arange(n), np.arange(n))
        return np.exp(-0.5 * distance ** 2) * (np.abs(distance) <= 4)

    rows, columns = gaussian_matrix(height), gaussian_matrix(width)

    def kernel(values):  # K applied to C x H x W values
        return np.einsum("ab,cbd,de->cae", rows, values, columns)

    norm = 1 / np.sqrt(kernel(np.ones((1, height, width)))[0])
    unary = -np.log(np.clip(probs, 1e-5, 1))
    q = np.exp(-unary) / np.exp(-unary).sum(0)
    for _ in range(params.iterations):
        energy = -unary + params.gaussian_weight * norm * kernel(norm * q)
        q = np.exp(energy - energy.max(0)) / np.exp(energy - energy.max(0)).sum(0)
    assert np.abs(marginals - q).max() < 1e-5


def test_native_mean_field_rejects_images_its_lattice_cannot_index():
    # theta_gamma = 0.01 puts a 1 x 20000 image's pixel coordinates beyond the lattice's 16-bit keys.
    probs = np.full((2, 1, 20000), 0.5, np.float32)
    with pytest.raises(ValueError, match="lattice coordinates overflow"):
        dense_crf(np.zeros((1, 20000, 3), np.uint8), probs, CRFParams(method="native", gaussian_xy_std=0.01))


def test_a_source_copy_without_build_outputs_loads_the_installed_extension(tmp_path):
    """`ray job submit --working-dir .` ships sources only (build outputs are git-ignored): the CRF must still run."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    source = Path(__file__).resolve().parents[1] / "deeplab_core"
    shutil.copytree(source, tmp_path / "deeplab_core", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    script = ("import numpy as np, deeplab_core.crf as crf; from deeplab_core.extension import load_meanfield; "
              "labels = crf.dense_crf(np.zeros((8, 8, 3), np.uint8), np.full((2, 8, 8), 0.5, np.float32)); "
              "print(crf.__file__, load_meanfield().__file__, labels.shape)")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    module_file, extension_file, shape = result.stdout.split(" ", 2)
    assert module_file.startswith(str(tmp_path)) and not extension_file.startswith(str(tmp_path))
    assert shape.strip() == "(8, 8)"


@pytest.mark.parametrize("method", ["pruned", "exact"])
def test_phases_account_for_the_time_of_a_call(method):
    import time

    image, _, logits = simulated_case(np.random.default_rng(3), "uncertain", size=96)
    phases: dict[str, float] = {}
    started = time.perf_counter()
    labels, _ = dense_crf_marginals(image, logits, CRFParams(method=method), is_logits=True, phases=phases)
    elapsed = time.perf_counter() - started
    expected = ({"pydensecrf"} if method == "exact" else
                {"label selection", "unary", "kernels", "spatial messages", "bilateral messages", "normalisation"})
    assert expected <= set(phases) and all(seconds >= 0 for seconds in phases.values())
    assert 0.9 * elapsed <= sum(phases.values()) <= elapsed
    # Timing changes nothing.
    assert (labels == dense_crf_marginals(image, logits, CRFParams(method=method), is_logits=True)[0]).all()


def test_the_pipelines_crf_reports_its_phases_and_timing_changes_nothing():
    import time

    image, _, logits = simulated_case(np.random.default_rng(3), "uncertain", size=96)
    phases: dict[str, float] = {}
    started = time.perf_counter()
    labels = refine_low_res(image, logits, 8, PAPER_PARAMS, phases=phases)
    elapsed = time.perf_counter() - started
    assert {"label selection", "probabilities at full size", "kernels", "bilateral messages"} <= set(phases)
    assert 0.9 * elapsed <= sum(phases.values()) <= elapsed
    assert (labels == refine_low_res(image, logits, 8, PAPER_PARAMS)).all()


def test_a_kept_bilateral_lattice_is_reused_only_for_the_same_image_and_widths():
    rng = np.random.default_rng(8)
    image, _, logits = simulated_case(rng, "uncertain", size=192)
    changed = np.ascontiguousarray(image[:, ::-1])  # the same size and colours, elsewhere
    wider = replace(PAPER_PARAMS, bilateral_rgb_std=5.0)
    reference = {name: refine_low_res(picture, logits, 8, params)  # nothing kept yet
                 for name, picture, params in (("changed", changed, PAPER_PARAMS), ("wider", image, wider))}
    first_phases: dict[str, float] = {}
    kept = refine_low_res(image, logits, 8, PAPER_PARAMS, phases=first_phases, keep_kernels=True)
    again_phases: dict[str, float] = {}
    heavier = replace(PAPER_PARAMS, bilateral_weight=6.0, iterations=5)  # other weights: the same lattice
    reused = refine_low_res(image, logits, 8, heavier, phases=again_phases, keep_kernels=True)
    assert again_phases["kernels"] < 0.3 * first_phases["kernels"], (again_phases, first_phases)
    assert (reused == refine_low_res(image, logits, 8, heavier)).all()
    assert (kept == refine_low_res(image, logits, 8, PAPER_PARAMS)).all()
    # Another image of the same size, or another colour width, must not find it (and would give other labels).
    assert (reference["changed"] != kept).any() and (reference["wider"] != kept).any()
    refine_low_res(image, logits, 8, PAPER_PARAMS, keep_kernels=True)
    assert (refine_low_res(changed, logits, 8, PAPER_PARAMS) == reference["changed"]).all()
    refine_low_res(image, logits, 8, PAPER_PARAMS, keep_kernels=True)
    assert (refine_low_res(image, logits, 8, wider) == reference["wider"]).all()


def test_the_avx2_and_generic_builds_give_the_same_marginals_bit_for_bit(tmp_path):
    """The extension runs an AVX2 build of the mean field where the CPU has it and a generic x86-64 one elsewhere
    (DEEPLAB_CRF_ISA=generic forces it): the same operations in the same order, so the same marginals."""
    import os
    import subprocess
    import sys

    script = (
        "import sys, numpy as np\n"
        "from deeplab_core.crf import CRFParams, dense_crf_marginals\n"
        "from deeplab_core.extension import load_meanfield\n"
        "from benchmarks.scenarios import simulated_case\n"
        "image, _, low = simulated_case(np.random.default_rng(6), 'uncertain', size=128)\n"
        "out = [dense_crf_marginals(image, low, CRFParams(method=m), is_logits=True)[1] for m in ('native', 'pruned')]\n"
        "out.append(dense_crf_marginals(image, low[:6], CRFParams(method='native'), is_logits=True)[1])  # 8-wide rows\n"
        "np.save(sys.argv[1], np.concatenate([marginals.ravel() for marginals in out]))\n"
        "print(load_meanfield().instruction_set())\n"
    )
    used = {}
    for isa in ("generic", "default"):
        env = dict(os.environ)
        env.pop("DEEPLAB_CRF_ISA", None)
        if isa == "generic":
            env["DEEPLAB_CRF_ISA"] = "generic"
        result = subprocess.run([sys.executable, "-c", script, str(tmp_path / f"{isa}.npy")], env=env,
                                cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, check=True)
        used[isa] = result.stdout.strip()
    assert used["generic"] == "generic" and used["default"] in ("avx2", "generic")
    assert np.array_equal(np.load(tmp_path / "generic.npy"), np.load(tmp_path / "default.npy"))
