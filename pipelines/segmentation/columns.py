"""The columns rows carry between the stages of the segmentation and evaluation pipelines, named once.

A row starts with the input's ``URI`` (and ``LABEL_URI`` when scored) and its ``ERROR`` ("" while fine); each stage
adds what it computes. The manifest's own columns are ``pipelines.segmentation.manifest.SCHEMA``.
"""

URI = "uri"
ERROR = "error"
NAME = "name"  # the input's output name (pipelines.segmentation.inputs)
LABEL_URI = "label_uri"  # a labelled sample's label: a mask, or the annotation file (deeplab_core.data.Sample)
LAYOUT = "layout"  # the dataset layout that reads the label
ANNOTATION = "annotation"  # the image's annotations as JSON, for layouts that keep them in one file
IMAGE = "image"  # uint8 H x W x 3 at the working size
HEIGHT, WIDTH = "height", "width"  # the input's own size
LABEL = "label"  # ground truth, at the input's size
LOGITS = "logits"  # low-resolution, TRANSPORT_DTYPE
LABELS = "labels"  # the model's argmax, uint8, at the working size
LABELS_CRF = "labels_crf"  # the CRF's, uint8, at the working size
SECONDS_MODEL = "seconds_model"  # the image's share of its model batch
SECONDS_CRF = "seconds_crf"
CRF_LABELS = "crf_labels"  # how many labels the image's CRF ran over
PRECISION = "precision"
STATUS = "status"  # the manifest's "ok" or "error"
