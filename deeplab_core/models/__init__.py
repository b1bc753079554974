"""DeepLab models: atrous ResNet backbones and the v2 / v3 ASPP heads."""

from deeplab_core.models.aspp_v2 import V2_RATES, ASPPv2
from deeplab_core.models.aspp_v3 import ASPP, ASPPConv, ASPPPooling, DeepLabV3Head, v3_rates
from deeplab_core.models.backbone import OUTPUT_STRIDES, AtrousResNet, imagenet_weights_path
from deeplab_core.models.deeplab import ARCHS, BACKBONES, DeepLab, build_model, count_parameters, unwrap
from deeplab_core.models.spec import ModelSpec

__all__ = [
    "ARCHS", "ASPP", "ASPPConv", "ASPPPooling", "ASPPv2", "AtrousResNet", "BACKBONES", "DeepLab",
    "DeepLabV3Head", "ModelSpec", "OUTPUT_STRIDES", "V2_RATES", "build_model", "count_parameters", "imagenet_weights_path",
    "unwrap", "v3_rates",
]
