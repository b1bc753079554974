"""Multi-scale inputs in training: every output gets a loss, gradients reach every scale, and the fused output is the
one inference computes."""

import pytest
import torch

from deeplab_core.inference import multi_scale_logits, predict_low_res
from deeplab_core.models import build_model
from deeplab_core.msc import MSC_SCALES, labels_on_grid, msc_losses
from pipelines.train import parse_args


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("deeplabv2", "resnet50", output_stride=16, num_classes=3)


def test_every_scale_and_the_fusion_get_a_loss_and_gradients_reach_every_scale(model):
    model.train()
    images = torch.randn(2, 3, 70, 90, requires_grad=True)
    target = torch.randint(0, 3, (2, 70, 90))
    losses = msc_losses(model, images, target, MSC_SCALES)
    assert len(losses) == len(MSC_SCALES) + 1 and all(torch.isfinite(loss) and loss > 0 for loss in losses)
    for loss in losses:  # each term's gradient flows back through its own scale's branch to the input
        (gradient,) = torch.autograd.grad(loss, images, retain_graph=True)
        assert gradient.abs().sum() > 0
    outputs = multi_scale_logits(model, images, MSC_SCALES)
    assert [tuple(logits.shape[-2:]) for logits in outputs.per_scale] == [(5, 6), (4, 4), (2, 3)]


def test_the_fused_training_output_is_what_inference_computes(model):
    model.eval()
    images = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        fused = multi_scale_logits(model, images, MSC_SCALES, fuse="max").fused
    assert torch.equal(fused, predict_low_res(model, images, MSC_SCALES, fuse="max"))


def test_labels_reach_each_grid_by_nearest_neighbour():
    target = torch.zeros(1, 20, 20, dtype=torch.long)
    target[:, :, 10:] = 2
    # 20 px pad to 24 (ignored): on the 3 x 3 grid each cell takes its first pixel (0, 8, 16)
    assert labels_on_grid(target, (3, 3), stride=8).tolist() == [[[0, 0, 2]] * 3]
    # a half-scale grid of the same padded extent: 2 x 2 cells of 12 px, first pixels 0 and 12
    assert labels_on_grid(target, (2, 2), stride=8).tolist() == [[[0, 2]] * 2]
    assert labels_on_grid(target[:, :17, :17], (3, 3), stride=8).tolist() == [[[0, 0, 2]] * 3]
    # the padding is the ignore label: a 2 x 2 image on one 8 px cell, sampled on a 2 x 2 grid (pixels 0 and 4)
    assert labels_on_grid(torch.zeros(1, 2, 2, dtype=torch.long), (2, 2), 8).tolist() == [[[0, 255], [255, 255]]]


def test_msc_is_a_training_option():
    config = parse_args(["--data", "d", "--output", "o", "--msc", "--msc-scales", "1,0.5"])
    assert config.msc and config.msc_scales == (1.0, 0.5)
    assert parse_args(["--data", "d", "--output", "o"]).msc_scales == MSC_SCALES
