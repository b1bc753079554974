import io

import numpy as np
import pytest
from PIL import Image

from deeplab_core.io import (
    ImageDecodeError, decode_image, decode_mask, encode_jpeg, encode_palette_png, join_uri, list_files, overlay,
    read_bytes, relative_path, s3_options, voc_colormap, write_bytes,
)
from tests.helpers import png_bytes




RGB = np.random.default_rng(0).integers(0, 255, (12, 16, 3), dtype=np.uint8)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (encode_jpeg(RGB)[:200], "truncated"),
    (png_bytes(Image.fromarray(RGB))[:-40], "truncated"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(200)), "corrupt"),
    (b"this is a text file, not a picture\n" * 3, "not a recognised image"),
])
def test_bad_image_bytes_raise_a_clear_error_naming_the_uri(data, reason):
    with pytest.raises(ImageDecodeError, match=reason) as caught:
        decode_image(data, "s3://bucket/photos/bad.jpg")
    assert "s3://bucket/photos/bad.jpg" in str(caught.value)
    assert caught.value.uri == "s3://bucket/photos/bad.jpg"


def test_every_colour_model_decodes_to_rgb_uint8():
    gray = Image.fromarray(RGB[..., 0])
    palette = Image.fromarray(RGB).convert("P")
    rgba = Image.fromarray(np.dstack([RGB, np.full(RGB.shape[:2], 128, np.uint8)]), mode="RGBA")
    sixteen = Image.fromarray(RGB[..., 1].astype(np.uint16) * 257)
    cmyk = Image.fromarray(RGB).convert("CMYK")
    for source in (gray, palette, rgba, sixteen, cmyk, Image.fromarray(RGB[..., 0] > 100)):
        fmt = "JPEG" if source.mode == "CMYK" else "PNG"
        buffer = io.BytesIO()
        source.save(buffer, format=fmt)
        decoded = decode_image(buffer.getvalue(), "x")
        assert source.mode != "I;16" or Image.open(io.BytesIO(buffer.getvalue())).mode.startswith("I")
        assert decoded.shape == (12, 16, 3) and decoded.dtype == np.uint8, source.mode
    assert np.array_equal(decode_image(png_bytes(gray))[..., 2], RGB[..., 0])
    assert np.array_equal(decode_image(png_bytes(rgba)), RGB)
    assert np.array_equal(decode_image(png_bytes(sixteen))[..., 0], RGB[..., 1])  # 16-bit scaled, not clipped


def test_palette_png_round_trip_with_the_voc_colours():
    labels = np.array([[0, 1, 2], [15, 20, 255]], dtype=np.uint8)
    data = encode_palette_png(labels)
    assert np.array_equal(decode_mask(data), labels)
    image = Image.open(io.BytesIO(data))
    assert image.mode == "P"
    assert tuple(np.asarray(image.convert("RGB"))[0, 1]) == (128, 0, 0)  # VOC aeroplane red
    assert tuple(voc_colormap()[15]) == (192, 128, 128)  # VOC person
    with pytest.raises(ValueError):
        encode_palette_png(np.full((2, 2), 300))


def test_grayscale_mask_reads_as_class_ids_and_rgb_mask_is_rejected():
    labels = np.array([[0, 3], [255, 1]], dtype=np.uint8)
    assert np.array_equal(decode_mask(png_bytes(Image.fromarray(labels))), labels)
    with pytest.raises(ImageDecodeError, match="mode RGB"):
        decode_mask(png_bytes(Image.fromarray(RGB)), "mask.png")


def test_overlay_blends_foreground_only():
    image = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[0, 1], [255, 1]], dtype=np.uint8)
    out = overlay(image, labels, alpha=0.5)
    assert np.array_equal(out[0, 0], image[0, 0]) and np.array_equal(out[1, 0], image[1, 0])
    assert tuple(out[0, 1]) == (114, 50, 50)


@pytest.mark.parametrize("root_kind", ["local", "memory"])
def test_uri_helpers_write_list_and_read(tmp_path, root_kind):
    root = str(tmp_path / "root") if root_kind == "local" else "memory://bucket/root"
    write_bytes(join_uri(root, "a", "b", "one.PNG"), b"1")
    write_bytes(join_uri(root, "two.jpg"), b"22")
    write_bytes(join_uri(root, "notes.txt"), b"x")
    found = list_files(root, {".png", ".jpg"})
    assert [relative_path(root, uri) for uri in found] == ["a/b/one.PNG", "two.jpg"]
    assert read_bytes(found[1]) == b"22"
    if root_kind == "memory":
        assert all(uri.startswith("memory://") for uri in found)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        list_files(join_uri(root, "missing"))


def test_s3_options_come_from_the_standard_aws_variables(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_REGION",
                 "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert s3_options() == {}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8333")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert s3_options() == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:8333", "region_name": "eu-west-1"},
                            "key": "key", "secret": "secret"}


def test_ray_train_storage_on_s3_uses_the_same_settings_as_every_other_s3_access(monkeypatch):
    from pipelines.common.runtime import pyarrow_storage

    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_REGION",
                 "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8333")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")  # without its secret: no explicit keys, as for s3fs
    path, storage = pyarrow_storage("s3://bucket/runs/one/")
    settings = storage.__reduce__()[1][0]  # pyarrow's own record of how the filesystem was made
    assert path == "bucket/runs/one"
    assert (settings["endpoint_override"], settings["scheme"], settings["region"]) == ("127.0.0.1:8333", "http",
                                                                                       "eu-west-1")
    assert not settings["access_key"]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    settings = pyarrow_storage("s3://bucket/runs/one")[1].__reduce__()[1][0]
    assert (settings["access_key"], settings["secret_key"]) == ("key", "secret")
