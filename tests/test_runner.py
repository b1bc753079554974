"""deeplab_core.runner: device-side preprocessing, batching policy, labels on the device, precisions."""

import numpy as np
import pytest
import torch

from deeplab_core.inference import TRANSPORT_DTYPE, normalize, predict_low_res, upsample_logits
from deeplab_core.models import build_model
from deeplab_core.inference_settings import InferenceSettings
from deeplab_core.runner import ModelRunner, resolve_precision
from deeplab_core.segmentation import segment_image


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("deeplabv2", "resnet50", output_stride=16, num_classes=4).eval()


def _images(*sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def test_uint8_batch_is_normalised_and_zero_padded_like_each_image_alone(model):
    runner = ModelRunner(model, device="cpu")
    a, b = _images((20, 30), (35, 10))
    batch = runner.normalised_batch([a, b])
    assert batch.shape == (2, 3, 48, 32)
    assert torch.equal(batch[0, :, :20, :30], normalize(a))
    assert torch.equal(batch[1, :, :35, :10], normalize(b))
    assert batch[0, :, 20:].abs().sum() == 0 and batch[0, :, :, 30:].abs().sum() == 0
    assert batch[1, :, :, 10:].abs().sum() == 0
    with pytest.raises(ValueError, match="uint8"):
        runner.normalised_batch([a.astype(np.float32)])


def test_batched_logits_equal_each_image_alone(model):
    runner = ModelRunner(model, device="cpu")
    images = _images((40, 50), (33, 60), (48, 64))  # one padded size at stride 16: 48 x 64
    batched = runner.low_res(images)
    for image, low in zip(images, batched):
        alone = predict_low_res(model, normalize(image)[None])[0].numpy().astype(TRANSPORT_DTYPE)
        assert low.dtype == TRANSPORT_DTYPE and low.shape == alone.shape
        np.testing.assert_allclose(low.astype(np.float32), alone.astype(np.float32), rtol=2e-3, atol=2e-3)


def test_device_labels_equal_the_argmax_of_the_transported_logits(model):
    runner = ModelRunner(model, device="cpu")
    images = _images((37, 53), (40, 60), seed=1)
    for image, labels, low in zip(images, runner.labels(images), runner.low_res(images)):
        assert labels.shape == image.shape[:2] and labels.dtype == np.uint8
        reference = upsample_logits(torch.from_numpy(low.astype(np.float32)), image.shape[:2], 16).argmax(0)
        assert np.array_equal(labels, reference.numpy().astype(np.uint8))


def test_plan_groups_by_padded_size_within_the_batch_and_pixel_budgets(model):
    runner = ModelRunner(model, InferenceSettings(batch_size=3), "cpu", batch_pixels=64 * 64 * 2)
    sizes = [(64, 64)] * 5 + [(30, 30)] * 2 + [(200, 200)]
    calls = runner.plan(sizes)
    assert sorted(i for call in calls for i in call) == list(range(len(sizes)))
    for call in calls:
        assert len({(sizes[i][0] + 15) // 16 * 16 for i in call}) == 1  # one padded size per call
        assert len(call) <= 3
        padded = ((sizes[call[0]][0] + 15) // 16 * 16) ** 2
        assert len(call) == 1 or padded * len(call) <= 64 * 64 * 2
    assert [7] in calls  # larger than the budget alone: a call of its own
    assert sum(1 for call in calls if sizes[call[0]] == (64, 64)) == 3  # 5 images, 2 per call


def test_precisions_resolve_and_bf16_runs_on_cpu(model):
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int8", cpu)
    runner = ModelRunner(model, InferenceSettings(precision="bf16"), "cpu")
    image = _images((48, 48))[0]
    fp32 = ModelRunner(model, device="cpu").low_res([image])[0].astype(np.float32)
    bf16 = runner.low_res([image])[0].astype(np.float32)
    assert not np.array_equal(fp32, bf16)  # the precision really changed the arithmetic
    assert np.abs(fp32 - bf16).max() < 0.1 * np.abs(fp32).max()


def test_segment_image_returns_labels_at_the_input_size_even_when_shrunk(model):
    image = _images((37, 53), seed=2)[0]
    labels = segment_image(model, image, InferenceSettings(crf=None))
    assert labels.shape == (37, 53) and labels.dtype == np.uint8 and labels.max() < 4
    shrunk = segment_image(model, image, InferenceSettings(crf=None, max_pixels=20 * 20))
    assert shrunk.shape == (37, 53)


def test_a_batch_shape_is_autotuned_on_gpus_only_once_it_recurs():
    runner = ModelRunner(build_model("deeplabv2", "resnet50", 8, 3), device="cpu", autotune_after=2)
    shape = (8, 3, 512, 512)
    assert not runner.autotune(shape)  # never on a CPU
    runner.on_gpu = True  # the policy alone: which calls a GPU would tune
    runner.calls_by_shape[shape] = 2
    assert not runner.autotune(shape) and not runner.autotune((8, 3, 384, 512))
    runner.calls_by_shape[shape] = 3
    assert runner.autotune(shape)
