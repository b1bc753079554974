import pytest
import torch
from torch import nn
from torch.nn import functional as F

from deeplab_core.models import build_model
from deeplab_core.training import (
    RECIPES, build_optimizer, freeze_batchnorm, poly_lr_factor, poly_lr_scheduler, segmentation_loss,
)


def test_poly_lr_values():
    assert poly_lr_factor(0, 100) == 1.0
    assert poly_lr_factor(50, 100) == pytest.approx(0.5**0.9)
    assert poly_lr_factor(90, 100, power=0.9) == pytest.approx(0.1**0.9)
    assert poly_lr_factor(100, 100) == 0.0 and poly_lr_factor(150, 100) == 0.0
    with pytest.raises(ValueError):
        poly_lr_factor(1, 0)


def test_optimizer_gives_the_head_ten_times_the_lr_and_the_scheduler_follows_poly():
    model = build_model("deeplabv2", "resnet50", 16, 3)
    optimizer = build_optimizer(model, lr=0.01, weight_decay=5e-4)
    backbone_group, head_group = optimizer.param_groups
    assert {id(p) for p in head_group["params"]} == {id(p) for p in model.classifier.parameters()}
    assert len(backbone_group["params"]) + len(head_group["params"]) == len(list(model.parameters()))
    assert optimizer.defaults["momentum"] == 0.9
    scheduler = poly_lr_scheduler(optimizer, max_iterations=10)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert backbone_group["lr"] == pytest.approx(0.01 * 0.6**0.9)
    assert head_group["lr"] == pytest.approx(0.1 * 0.6**0.9)


def test_recipes_follow_the_papers():
    assert (RECIPES["deeplabv2"].weight_decay, RECIPES["deeplabv2"].crop_size) == (5e-4, 321)
    assert (RECIPES["deeplabv3"].weight_decay, RECIPES["deeplabv3"].crop_size) == (1e-4, 513)


def test_loss_ignores_255():
    logits = torch.randn(1, 3, 2, 2)
    target = torch.tensor([[[255, 1], [255, 255]]])
    expected = F.cross_entropy(logits[:, :, 0, 1], torch.tensor([1]))
    assert segmentation_loss(logits, target) == pytest.approx(expected.item())


def test_frozen_batchnorm_keeps_statistics_and_outputs_in_training_mode():
    torch.manual_seed(0)
    model = build_model("deeplabv2", "resnet50", 16, 3)
    model.backbone.bn1.running_mean.uniform_(-1, 1)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.eval()(images)
    frozen = freeze_batchnorm(model).train()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    with torch.no_grad():
        assert torch.allclose(frozen(images), expected, atol=1e-5)
    assert not any(".bn" in name or name.startswith("bn") for name, _ in frozen.backbone.named_parameters())
    optimizer = build_optimizer(frozen, lr=0.01, weight_decay=0.0)
    assert all(p.requires_grad for group in optimizer.param_groups for p in group["params"])


def test_recipes_scale_as_the_papers():
    from deeplab_core.training import RECIPES

    assert (RECIPES["deeplabv2"].min_scale, RECIPES["deeplabv2"].max_scale) == (0.5, 1.5)
    assert (RECIPES["deeplabv3"].min_scale, RECIPES["deeplabv3"].max_scale) == (0.5, 2.0)
