"""The ingest rate of every dataset layout beside VOC's, measured side by side in one run on the same scenes; and how
long listing a large pairs dataset takes.

    python -m benchmarks.ingest [--images 200] [--size 512] [--repeats 3]
    python -m benchmarks.ingest --list-pairs 100000 [--root URI]

The first form writes the same scenes (``deeplab_core.synthetic``, one seed) in each layout and times what a Ray
Data read task does per sample (``read_labelled_sample``: read the bytes, decode the image, read the label and map
it to class ids or rasterise its polygons, check it), on one core, in one process. The layouts take turns for
``--repeats`` rounds; each layout's figure is its fastest round. Prints images/s per layout and the ratio to VOC's.
Cityscapes' images are PNG, as the dataset ships them; the other layouts' are JPEG; "voc, PNG images" is VOC's
layout with the same scenes as PNG, the like-for-like baseline of a PNG dataset (decoding a PNG costs about twice
a JPEG of the same pixels: a property of the files, not of the layout).

The second form writes ``--list-pairs`` tiny image/mask pairs under ``--root`` (a local temporary folder by default;
an ``s3://`` prefix with the AWS variables set, e.g. after ``eval "$(python -m cluster.local env)"``), then times
``open_dataset`` listing them (the same listing every driver does before Ray starts).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time

import numpy as np
from PIL import Image

from deeplab_core.data import LAYOUT_NAMES, open_dataset, read_labelled_sample
from deeplab_core.data.voc import IMAGE_DIR
from deeplab_core.io import (
    decode_image, encode_png, filesystem, join_uri, list_files, protocol_of, read_bytes, write_bytes,
)
from deeplab_core.synthetic import generate


VOC_PNG = "voc, PNG images"


def voc_with_png_images(folder: str) -> None:
    """Re-encode a VOC root's JPEG images as PNG (the layout takes any image extension): the like-for-like baseline
    of a layout whose images are PNG, as Cityscapes' are."""
    for uri in list_files(join_uri(folder, IMAGE_DIR), {".jpg"}):
        write_bytes(uri[: -len(".jpg")] + ".png", encode_png(decode_image(read_bytes(uri), uri)))
        os.remove(uri)


def ingest_rates(root: str, images: int, size: int, repeats: int) -> dict[str, float]:
    """images/s of reading every sample of each layout's train split, its fastest of ``repeats`` rounds."""
    samples = {}
    for layout in (*LAYOUT_NAMES, VOC_PNG):
        folder = join_uri(root, layout.replace(", ", "-").replace(" ", "_"))
        generate(folder, num_images=images, size=size, num_classes=8, seed=0, val_fraction=0.1,
                 layout="voc" if layout == VOC_PNG else layout)
        if layout == VOC_PNG:
            voc_with_png_images(folder)
        data = open_dataset(folder, "train")
        samples[layout] = (data.samples, len(data.classes))
    best = {layout: float("inf") for layout in samples}
    for _ in range(repeats):
        for layout, (listed, num_classes) in samples.items():
            started = time.perf_counter()
            for sample in listed:
                read_labelled_sample(sample, num_classes)
            best[layout] = min(best[layout], time.perf_counter() - started)
    return {layout: len(samples[layout][0]) / seconds for layout, seconds in best.items()}


def write_tiny_pairs(root: str, count: int) -> None:
    """``count`` 8 x 8 pairs under ``root`` (pairs layout, nested 1,000 to a folder), written in batches."""
    image = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image, format="JPEG")
    mask = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(mask, format="PNG")
    fs, base = filesystem(root)
    batch: dict[str, bytes] = {}
    for index in range(count):
        name = f"{index // 1000:03d}/{index:06d}"
        batch[f"{base}/images/{name}.jpg"] = image.getvalue()
        batch[f"{base}/masks/{name}.png"] = mask.getvalue()
        if len(batch) >= 2000 or index == count - 1:
            if protocol_of(root) == "file":
                for path in {p.rsplit("/", 1)[0] for p in batch}:
                    fs.makedirs(path, exist_ok=True)
            fs.pipe(batch)
            batch = {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--list-pairs", type=int, default=0, help="time listing this many pairs instead")
    parser.add_argument("--root", default=None, help="where to write (default: a temporary local folder)")
    args = parser.parse_args(argv)
    root = args.root or tempfile.mkdtemp(prefix="ingest-")
    try:
        if args.list_pairs:
            started = time.perf_counter()
            write_tiny_pairs(root, args.list_pairs)
            written = time.perf_counter() - started
            started = time.perf_counter()
            data = open_dataset(root, "train")
            listed = time.perf_counter() - started
            print(f"{len(data)} pairs under {root}: listed and matched in {listed:.2f} s "
                  f"({len(data) / listed:,.0f} pairs/s); writing them took {written:.1f} s")
            return 0
        rates = ingest_rates(root, args.images, args.size, args.repeats)
        print(f"ingest per sample (read + decode + map/rasterise + check), {args.size} x {args.size}, one core, "
              f"fastest of {args.repeats} rounds:")
        for layout, rate in rates.items():
            print(f"  {layout:<16} {rate:8.1f} images/s   {rate / rates['voc']:.2f}x VOC   "
                  f"{rate / rates[VOC_PNG]:.2f}x VOC with PNG images")
        return 0
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
