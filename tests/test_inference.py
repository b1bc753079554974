import numpy as np
import pytest
import torch
from torch.nn import functional as F

from deeplab_core.inference import (
    IMAGENET_MEAN, IMAGENET_STD, low_res_size, normalize, predict_logits, predict_low_res, upsample_logits,
)
from deeplab_core.inference_settings import working_size
from deeplab_core.models import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("deeplabv2", "resnet50", output_stride=16, num_classes=4).eval()


def test_normalize_applies_imagenet_statistics():
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    image[0, 0] = (255, 0, 128)
    tensor = normalize(image)
    assert tensor.shape == (3, 2, 3)
    expected = [(1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], -IMAGENET_MEAN[1] / IMAGENET_STD[1],
                (128 / 255 - IMAGENET_MEAN[2]) / IMAGENET_STD[2]]
    assert torch.allclose(tensor[:, 0, 0], torch.tensor(expected))
    with pytest.raises(ValueError, match="uint8"):
        normalize(image.astype(np.float32))


def test_single_scale_equals_the_model_forward_on_stride_aligned_input(model):
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(predict_logits(model, images), model(images), atol=1e-5)


def test_upsample_logits_equals_full_forward_cropped_to_the_image(model):
    images = torch.randn(1, 3, 50, 70)  # not a multiple of 16: padded inside
    low = predict_low_res(model, images)
    assert low.shape[-2:] == low_res_size(50, 70, 16) == (4, 5)
    padded = F.pad(images, (0, 80 - 70, 0, 64 - 50))
    with torch.no_grad():
        expected = model(padded)[..., :50, :70]
    assert torch.allclose(upsample_logits(low, (50, 70), 16), expected, atol=1e-5)
    with pytest.raises(ValueError, match="does not cover"):
        upsample_logits(low, (80, 70), 16)


def test_multiscale_and_flip_equal_the_manual_computation(model):
    torch.manual_seed(1)
    images = torch.randn(2, 3, 60, 75)
    scales = (0.5, 0.75, 1.0)
    padded = F.pad(images, (0, 80 - 75, 0, 64 - 60))  # grid 4 x 5 at stride 16
    per_scale = []
    with torch.no_grad():
        for scale in scales:
            cells = (max(1, round(4 * scale)), max(1, round(5 * scale)))
            scaled = F.interpolate(padded, size=(cells[0] * 16, cells[1] * 16), mode="bilinear", align_corners=False)
            plain = model.low_res_logits(scaled)
            mirrored = torch.flip(model.low_res_logits(torch.flip(scaled, dims=[3])), dims=[3])
            both = (plain + mirrored) / 2
            per_scale.append(F.interpolate(both, size=(4, 5), mode="bilinear", align_corners=False))
    stacked = torch.stack(per_scale)
    got_max = predict_low_res(model, images, scales, flip=True, fuse="max")
    got_mean = predict_low_res(model, images, scales, flip=True, fuse="mean")
    assert torch.allclose(got_max, stacked.max(0).values, atol=1e-5)
    assert torch.allclose(got_mean, stacked.mean(0), atol=1e-5)
    assert not torch.allclose(got_max, got_mean)


def test_flip_inference_is_mirror_equivariant(model):
    images = torch.randn(1, 3, 48, 64)
    direct = predict_low_res(model, images, flip=True)
    mirrored = predict_low_res(model, images.flip(-1), flip=True)
    assert torch.allclose(direct, mirrored.flip(-1), atol=1e-5)


def test_bad_fusion_and_scales_are_rejected(model):
    images = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="fuse"):
        predict_low_res(model, images, fuse="median")
    with pytest.raises(ValueError, match="scales"):
        predict_low_res(model, images, scales=(0.0, 1.0))


def test_working_size_keeps_aspect_and_leaves_small_images():
    assert working_size(400, 300, 512) == (400, 300)
    assert working_size(2000, 1000, 500) == (500, 250)
    assert working_size(2000, 1000, None) == (2000, 1000)
    assert working_size(9000, 12000, None, 2048 * 2048) == (1773, 2364)
    height, width = working_size(9000, 12000, None, 2048 * 2048)
    assert height * width <= 2048 * 2048 and abs(width / height - 12000 / 9000) < 1e-3
    assert working_size(9000, 12000, 500, 2048 * 2048) == (375, 500)
    assert working_size(100, 100, None, 2048 * 2048) == (100, 100)
