"""A pretrained VOC model on day one: torchvision's published DeepLab-v3 weights as one of our checkpoints.

torchvision publishes DeepLab-v3 weights (trained on COCO with the 21 PASCAL VOC labels) for ResNet-50, ResNet-101
and MobileNetV3-Large. Module for module our ``deeplabv3`` on each backbone, at the output stride the table gives
(``BACKBONES[name].voc_output_stride``), is their model without the auxiliary head, so their file loads strictly
once that head is dropped. Nothing is downloaded: give the file, or let it be found where torchvision caches it.

    python -m deeplab_core.pretrained --backbone resnet101 --output models/voc-deeplabv3-r101.pt [--weights PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from deeplab_core.checkpoint import save_checkpoint
from deeplab_core.data import VOC_CLASSES
from deeplab_core.models import BACKBONES, ModelSpec

AUXILIARY_PREFIX = "aux_classifier."


def torchvision_file(backbone: str) -> str:
    """The file name of torchvision's DeepLab-v3 VOC weights for ``backbone``."""
    return Path(BACKBONES[backbone].voc_weights.url).name


def torchvision_weights_path(backbone: str) -> Path:
    """Where torchvision keeps the weights file of ``backbone`` once downloaded (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / torchvision_file(backbone)


def voc_spec(backbone: str) -> ModelSpec:
    return ModelSpec("deeplabv3", backbone, BACKBONES[backbone].voc_output_stride, len(VOC_CLASSES), tuple(VOC_CLASSES))


def convert_torchvision_weights(backbone: str, output: str, weights: str | Path | None = None) -> ModelSpec:
    """Write torchvision's DeepLab-v3 ``backbone`` VOC weights (``weights``, else torchvision's cache) to ``output``
    as our checkpoint with the VOC class names; returns its spec. A missing or mismatched file raises a
    ``ValueError`` that says where the file goes or what it holds."""
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {backbone!r}")
    path = Path(weights) if weights else torchvision_weights_path(backbone)
    if not path.is_file():
        raise ValueError(f"{path}: no such weights file; download {torchvision_file(backbone)} from torchvision "
                         f"({BACKBONES[backbone].voc_weights.url}) to "
                         f"{torchvision_weights_path(backbone)} or pass its path with --weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
        raise ValueError(f"{path}: not a readable weights file ({type(err).__name__})") from None
    state = {key: value for key, value in state.items() if not key.startswith(AUXILIARY_PREFIX)}
    spec = voc_spec(backbone)
    model = spec.build()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        details = " ".join(str(err).split())[:240]
        raise ValueError(f"{path}: not torchvision's DeepLab-v3 {backbone} weights ({details})") from None
    save_checkpoint(output, model, spec, source=str(path))
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deeplab_core.pretrained", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", choices=tuple(BACKBONES), default="resnet101")
    parser.add_argument("--weights", help="torchvision's weights file (default: torchvision's cache, "
                                          "$TORCH_HOME/hub/checkpoints/)")
    parser.add_argument("--output", required=True, help="where to write the checkpoint (local path or any URI)")
    args = parser.parse_args(argv)
    try:
        spec = convert_torchvision_weights(args.backbone, args.output, args.weights)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {spec.arch}/{spec.backbone}, output stride {spec.output_stride}, "
          f"{spec.num_classes} VOC classes; segment with pipelines.segment --checkpoint {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
