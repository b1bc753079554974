"""DeepLab semantic segmentation in plain PyTorch + numpy (Chen et al., TPAMI 2017).

This package never imports Ray: every piece works in a notebook. The Ray drivers live in ``pipelines``.
"""

__version__ = "0.1.0"
