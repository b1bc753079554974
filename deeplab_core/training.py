"""The paper's training recipe as plain PyTorch pieces: loss, poly LR, SGD with a 10x head, frozen BN."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops.misc import FrozenBatchNorm2d

from deeplab_core.labels import IGNORE_INDEX
from deeplab_core.models import unwrap


@dataclass(frozen=True)
class Recipe:
    """Defaults from the papers: DeepLab-v2 (PASCAL VOC, ResNet-101) and DeepLab-v3."""

    lr: float
    weight_decay: float
    crop_size: int
    momentum: float = 0.9
    lr_power: float = 0.9
    head_lr_multiplier: float = 10.0
    min_scale: float = 0.5
    max_scale: float = 2.0


RECIPES = {
    "deeplabv2": Recipe(lr=2.5e-4, weight_decay=5e-4, crop_size=321, max_scale=1.5),  # v2 scales 0.5-1.5
    "deeplabv3": Recipe(lr=7e-3, weight_decay=1e-4, crop_size=513),
}

# Small models trained from scratch on synthetic scenes (the demo, the tests, the CRF benchmark's real model): the
# papers' 10x head LR is tuned for an ImageNet-pretrained backbone and unstable from scratch; a larger base LR with a
# 1x head learns the scenes in minutes on a CPU.
FROM_SCRATCH_LR = 0.005
FROM_SCRATCH_HEAD_LR_MULTIPLIER = 1.0


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Pixel-wise cross-entropy; target pixels equal to ``ignore_index`` do not count."""
    return F.cross_entropy(logits, target.long(), ignore_index=ignore_index)


def poly_lr_factor(iteration: int, max_iterations: int, power: float = 0.9) -> float:
    """The "poly" policy: the base LR is multiplied by (1 - iteration / max_iterations) ** power."""
    if max_iterations <= 0:
        raise ValueError(f"max_iterations must be positive, got {max_iterations}")
    return (1.0 - min(iteration, max_iterations) / max_iterations) ** power


def poly_lr_scheduler(optimizer: torch.optim.Optimizer, max_iterations: int,
                      power: float = 0.9) -> torch.optim.lr_scheduler.LambdaLR:
    """Step once per iteration; every parameter group keeps its own multiplier of the base LR."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: poly_lr_factor(it, max_iterations, power))


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, momentum: float = 0.9,
                    head_lr_multiplier: float = 10.0) -> torch.optim.SGD:
    """SGD with momentum; the randomly initialised head (``model.classifier``) learns ``head_lr_multiplier`` x faster.

    ``model`` may be wrapped (DistributedDataParallel): its ``.module`` is used. Frozen parameters are left out.
    """
    net = unwrap(model)
    backbone = [p for p in net.backbone.parameters() if p.requires_grad]
    head = [p for p in net.classifier.parameters() if p.requires_grad]
    return torch.optim.SGD(
        [{"params": backbone, "lr": lr}, {"params": head, "lr": lr * head_lr_multiplier}],
        lr=lr, momentum=momentum, weight_decay=weight_decay,
    )


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d with a FrozenBatchNorm2d holding its statistics (the paper's setting, since
    small per-GPU batches give poor batch statistics). The state dict keeps the same keys."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        with torch.no_grad():
            frozen.weight.copy_(module.weight)
            frozen.bias.copy_(module.bias)
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        replacement = freeze_batchnorm(child)
        if replacement is not child:
            setattr(module, name, replacement)
    return module
