"""The input statistics the ImageNet-pretrained backbones were trained with (torchvision's): images are normalised
with them before the model, and training crops are padded with the mean colour.

Without torch, so that Ray Data's decode and augmentation workers, which import ``deeplab_core.data``, stay light.
"""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
