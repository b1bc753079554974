"""The DeepLab model: an atrous backbone (``backbone.BACKBONES``) followed by an ASPP head, and ``build_model``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from deeplab_core.models.aspp_v2 import ASPPv2
from deeplab_core.models.aspp_v3 import DeepLabV3Head, v3_rates
from deeplab_core.models.backbone import AtrousBackbone

ARCHS = ("deeplabv2", "deeplabv3")


class DeepLab(nn.Module):
    """``forward`` returns N x C x H x W logits at the input's resolution (bilinear upsampling, as torchvision).

    ``low_res_logits`` returns the head's output at 1/``output_stride`` of the input, which is what a
    pipeline should ship between machines; ``deeplab_core.inference.upsample_logits`` restores full size.
    """

    def __init__(self, backbone: AtrousBackbone, classifier: nn.Module, arch: str, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.arch = arch
        self.num_classes = num_classes

    @property
    def output_stride(self) -> int:
        return self.backbone.output_stride

    def low_res_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(images))

    def forward(self, images: torch.Tensor, low_res: bool = False) -> torch.Tensor:
        """Logits at the input's resolution; with ``low_res``, on the stride grid (``low_res_logits``) - through
        ``forward``, so that a DistributedDataParallel wrapper sees the call (multi-scale training needs it)."""
        logits = self.low_res_logits(images)
        if low_res:
            return logits
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def build_model(
    arch: str = "deeplabv2",
    backbone: str = "resnet101",
    output_stride: int = 8,
    num_classes: int = 21,
    pretrained_backbone: str | Path | bool = False,
) -> DeepLab:
    """Build DeepLab-v2 (ASPP-L) or DeepLab-v3 (ASPP + image pooling) on an atrous backbone of ``BACKBONES``.

    ``pretrained_backbone`` loads the backbone's ImageNet weights from a local file path, or with True from the
    torch hub cache; nothing is ever downloaded.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    features = AtrousBackbone(backbone, output_stride)
    if pretrained_backbone:
        features.load_imagenet_weights(pretrained_backbone)
    if arch == "deeplabv2":
        head: nn.Module = ASPPv2(features.out_channels, num_classes)
    else:
        head = DeepLabV3Head(features.out_channels, num_classes, v3_rates(output_stride, features.entry.v3_rates_at_16))
    return DeepLab(features, head, arch, num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel (or DataParallel) wrapper; the model itself otherwise."""
    return model.module if hasattr(model, "module") else model
