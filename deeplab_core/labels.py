"""Label conventions shared by datasets, losses, metrics and mask files."""

# Pixels labelled with this value carry no class (VOC marks object borders with it): losses, metrics and the CRF's
# evaluation leave them out, and mask files may hold it beside the class ids.
IGNORE_INDEX = 255
