"""Decoding images and masks from bytes, resizing them, encoding palette PNGs, colour overlays."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from deeplab_core.labels import IGNORE_INDEX



class ImageDecodeError(ValueError):
    """The bytes of ``uri`` are not a readable image (corrupt, truncated, empty or not an image)."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(f"cannot decode image {uri}: {reason}")
        self.uri = uri
        self.reason = reason


_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP",
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"RIFF": "WebP",
}


def _open(data: bytes, uri: str) -> Image.Image:
    if not data:
        raise ImageDecodeError(uri, "the file is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # Image.open is lazy: truncation and corruption only show when pixels are read.
    except UnidentifiedImageError:
        claimed = next((name for magic, name in _SIGNATURES.items() if data.startswith(magic)), None)
        if claimed:
            raise ImageDecodeError(uri, f"corrupt {claimed} data (the header says {claimed}, the rest is unreadable)") from None
        raise ImageDecodeError(uri, "not a recognised image format") from None
    except Image.DecompressionBombError as err:  # PIL's message gives the image's size and the limit
        raise ImageDecodeError(uri, f"too large to decode: {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(uri, f"corrupt or truncated image data ({err})") from None
    return image


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Scale integer or float pixels of more than 8 bits to 0..255."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.bool_:
        return pixels.astype(np.uint8) * 255
    if np.issubdtype(pixels.dtype, np.floating):
        peak = 1.0 if pixels.max(initial=0.0) <= 1.0 else 255.0
        return np.clip(pixels / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
    # 16-bit (or wider) integers: PIL reports 16-bit PNGs as mode "I;16" or "I", spanning 0..65535.
    return (np.clip(pixels, 0, 65535).astype(np.uint32) * 255 // 65535).astype(np.uint8)


def decode_image(data: bytes, uri: str = "<bytes>") -> np.ndarray:
    """Decode image bytes to an H x W x 3 uint8 RGB array.

    Grayscale, palette, RGBA/LA (alpha dropped), CMYK, 1-bit and 16-bit images are converted to 8-bit RGB.
    Pixels are kept in stored order: EXIF orientation is not applied, so masks align with the stored pixels.
    Raises ``ImageDecodeError`` naming ``uri`` for empty, truncated, corrupt or non-image bytes.
    """
    image = _open(data, uri)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        gray = _to_uint8(np.asarray(image))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def decode_mask(data: bytes, uri: str = "<bytes>") -> np.ndarray:
    """Decode a class-id mask (palette or grayscale PNG; 255 = ignore) to an H x W uint8 array."""
    image = _open(data, uri)
    if image.mode in ("P", "L"):
        return np.asarray(image, dtype=np.uint8).copy()
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image)
        if values.max(initial=0) > IGNORE_INDEX:
            raise ImageDecodeError(uri, f"mask holds value {int(values.max())}; class ids must be 0..255")
        return values.astype(np.uint8)
    raise ImageDecodeError(
        uri, f"mask has mode {image.mode}; expected a palette or grayscale PNG whose values are class ids"
    )


def voc_colormap(size: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: ``size`` x 3 uint8, class i -> colour i (255 -> the VOC ignore colour)."""
    colours = np.zeros((size, 3), dtype=np.uint8)
    for index in range(size):
        c, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours[index] = (r, g, b)
    return colours


VOC_COLORMAP = voc_colormap()


def palette_of(colours=None) -> np.ndarray:
    """A 256 x 3 uint8 palette: ``colours`` (one RGB triple per class, in class-id order) for the first entries,
    the VOC colour map for the rest (255, the ignore label, keeps VOC's ignore colour)."""
    palette = VOC_COLORMAP.copy()
    if colours is not None and len(colours):
        given = np.asarray(colours, dtype=np.int64).reshape(-1, 3)
        if given.shape[0] > IGNORE_INDEX or given.min() < 0 or given.max() > 255:
            raise ValueError(f"a palette takes at most {IGNORE_INDEX} RGB triples of 0..255, got {given.shape[0]}")
        palette[: given.shape[0]] = given
    return palette


def encode_palette_png(labels: np.ndarray, colours=None) -> bytes:
    """Encode an H x W array of class ids (0..255) as a palette PNG: class i in ``colours[i]`` (``palette_of``;
    the VOC colour map without ``colours``)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be H x W, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"labels must be within 0..255, got {labels.min()}..{labels.max()}")
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(palette_of(colours).tobytes())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 H x W x 3 image to ``size`` = (height, width)."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an H x W label map to ``size`` = (height, width): class ids are never blended."""
    if labels.shape == tuple(size):
        return labels
    return np.asarray(Image.fromarray(labels.astype(np.uint8)).resize((size[1], size[0]), Image.NEAREST))


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5, colours=None,
            unblended: tuple[int, ...] = (0,)) -> np.ndarray:
    """Blend the colours of ``labels`` (``palette_of(colours)``) over ``image`` (uint8 H x W x 3); the classes in
    ``unblended`` (a background class) and 255 (ignore) stay as the image is."""
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape[:2]} and labels {labels.shape} differ in size")
    colours = palette_of(colours)[labels].astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    keep = np.isin(labels, (*unblended, IGNORE_INDEX))
    blended[keep] = image[keep]
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)
