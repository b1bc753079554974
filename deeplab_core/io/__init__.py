"""URI-agnostic reading and writing, image decoding, palette PNGs and overlays."""

from deeplab_core.io.images import (
    IGNORE_INDEX,
    VOC_COLORMAP,
    ImageDecodeError,
    decode_image,
    decode_mask,
    encode_jpeg,
    encode_palette_png,
    encode_png,
    overlay,
    palette_of,
    resize_image,
    resize_labels,
    voc_colormap,
)
from deeplab_core.io.uri import (
    AWS_VARIABLES,
    exists,
    filesystem,
    is_dir,
    join_uri,
    list_files,
    list_relative,
    normalize_uri,
    protocol_of,
    read_bytes,
    read_text,
    relative_path,
    s3_options,
    s3_variables,
    write_bytes,
)

__all__ = [
    "AWS_VARIABLES", "IGNORE_INDEX", "VOC_COLORMAP", "ImageDecodeError", "decode_image", "decode_mask", "encode_jpeg",
    "encode_palette_png", "encode_png", "exists", "filesystem", "is_dir", "join_uri", "list_files", "list_relative", "normalize_uri", "overlay", "palette_of",
    "protocol_of", "read_bytes", "read_text", "relative_path", "resize_image", "resize_labels", "s3_options", "s3_variables",
    "voc_colormap", "write_bytes",
]
