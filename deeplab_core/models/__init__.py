"""DeepLab models: atrous backbones (the ``BACKBONES`` table) and the v2 / v3 ASPP heads."""

from deeplab_core.models.aspp_v2 import V2_RATES, ASPPv2
from deeplab_core.models.aspp_v3 import ASPP, ASPPConv, ASPPPooling, DeepLabV3Head, v3_rates
from deeplab_core.models.backbone import BACKBONES, AtrousBackbone, Backbone, backbone_help, imagenet_weights_path
from deeplab_core.models.deeplab import ARCHS, DeepLab, build_model, count_parameters, unwrap
from deeplab_core.models.spec import ModelSpec

# Every output stride some backbone supports (a flag's choices; ModelSpec checks the backbone's own).
OUTPUT_STRIDES = tuple(sorted({stride for entry in BACKBONES.values() for stride in entry.output_strides}))

__all__ = [
    "ARCHS", "ASPP", "ASPPConv", "ASPPPooling", "ASPPv2", "AtrousBackbone", "BACKBONES", "Backbone", "DeepLab",
    "DeepLabV3Head", "ModelSpec", "OUTPUT_STRIDES", "V2_RATES", "backbone_help", "build_model", "count_parameters",
    "imagenet_weights_path", "unwrap", "v3_rates",
]
