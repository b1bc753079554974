"""A seeded synthetic dataset, in any layout: coloured shapes on textured backgrounds.

Each foreground class has its own hue and texture, so a DeepLab model learns the task in minutes on a CPU;
shape edges are sharp colour edges, so a dense CRF measurably sharpens the model's blurry boundaries. The same seed
writes the same scenes in every layout (``--layout``): VOC's, Cityscapes' (its label ids, its class names), ADE20K's,
image/mask pairs, COCO polygons, labelme JSON.

    python -m deeplab_core.synthetic --output URI [--num-images N] [--size N] [--num-classes N] [--seed N]
                                     [--layout voc|cityscapes|ade20k|pairs|coco|labelme]
"""

from __future__ import annotations

import argparse
import colorsys
import sys

import numpy as np
from PIL import Image, ImageDraw

from deeplab_core.data.ade20k import ADE20K_CLASSES
from deeplab_core.data.cityscapes import CITYSCAPES_CLASSES
from deeplab_core.classes import ClassList
from deeplab_core.data.datasets import LAYOUT_NAMES, layout_named
from deeplab_core.data.layout import SyntheticScene

SHAPES = ("ellipse", "rectangle", "triangle")
GRAIN = 8.0  # per-pixel colour noise (standard deviation, 0-255 scale)


def class_colours(num_classes: int) -> np.ndarray:
    """A muted grey for background (0), then evenly spaced saturated hues for classes 1..C-1."""
    colours = [(110, 110, 100)]
    for k in range(1, num_classes):
        r, g, b = colorsys.hsv_to_rgb((k - 1) / max(num_classes - 1, 1), 0.85, 0.9)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return np.array(colours, dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid upsampled bilinearly."""
    coarse = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    image = Image.fromarray(coarse, mode="F").resize((size, size), Image.BILINEAR)
    return np.asarray(image)


# Vertices of the polygon standing for an ellipse in layouts that store polygons (COCO, labelme).
ELLIPSE_VERTICES = 96


def _draw_shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int,
                value: int) -> tuple[str, tuple[tuple[float, float], ...]]:
    """Draw one random shape; returns it as (``polygon`` vertices | ``rectangle`` corners) in PIL's coordinates."""
    kind = SHAPES[int(rng.integers(len(SHAPES)))]
    extent = rng.uniform(0.2, 0.5) * size
    cx, cy = rng.uniform(0.15, 0.85, 2) * size
    if kind == "triangle":
        angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2.1, 4.2]) + rng.uniform(-0.3, 0.3, 3)
        points = [(cx + extent * np.cos(a), cy + extent * np.sin(a)) for a in angles]
        draw.polygon(points, fill=value)
        return "polygon", tuple((float(x), float(y)) for x, y in points)
    half_w, half_h = extent * rng.uniform(0.5, 1.0), extent * rng.uniform(0.5, 1.0)
    box = [cx - half_w, cy - half_h, cx + half_w, cy + half_h]
    if kind == "rectangle":
        draw.rectangle(box, fill=value)
        return "rectangle", ((float(box[0]), float(box[1])), (float(box[2]), float(box[3])))
    draw.ellipse(box, fill=value)
    angles = np.linspace(0, 2 * np.pi, ELLIPSE_VERTICES, endpoint=False)
    return "polygon", tuple((float(cx + half_w * np.cos(a)), float(cy + half_h * np.sin(a))) for a in angles)


def make_sample(rng: np.random.Generator, size: int = 128, num_classes: int = 4,
                max_shapes: int = 3, grain: float = GRAIN) -> tuple[np.ndarray, np.ndarray]:
    """One (uint8 H x W x 3 image, uint8 H x W mask) pair with 1..max_shapes shapes; ``grain``: the per-pixel
    colour noise's standard deviation (a noisy camera: more than the paper's CRF colour width, theta_beta = 3,
    expects)."""
    scene = make_scene(rng, "sample", size, num_classes, max_shapes, grain)
    return scene.image, scene.mask


def make_scene(rng: np.random.Generator, key: str, size: int = 128, num_classes: int = 4, max_shapes: int = 3,
               grain: float = GRAIN) -> SyntheticScene:
    """``make_sample``'s image and mask with the shapes drawn, for layouts that store polygons."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    mask_image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask_image)
    shapes = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        value = int(rng.integers(1, num_classes))
        shapes.append((value, *_draw_shape(draw, rng, size, value)))
    mask = np.asarray(mask_image, dtype=np.uint8).copy()

    colours = class_colours(num_classes)
    jitter = rng.uniform(-20, 20, (num_classes, 3)).astype(np.float32)
    image = colours[mask] + jitter[mask]
    # Texture: a blotchy low-frequency field, stronger on the background, plus per-pixel grain.
    blotches = _smooth_noise(rng, size, cells=6)[..., None] * np.where(mask == 0, 35.0, 15.0)[..., None]
    noise = rng.normal(0.0, grain, image.shape).astype(np.float32)
    image = np.clip(image + blotches + noise, 0, 255).astype(np.uint8)
    return SyntheticScene(key, image, mask, tuple(shapes))


def layout_classes(layout: str, num_classes: int) -> ClassList:
    """The classes a synthetic dataset in ``layout`` names: Cityscapes' and ADE20K's own (the scenes use the first
    ``num_classes``), else background and class_1 ... class_{C-1}."""
    fixed = {"cityscapes": CITYSCAPES_CLASSES, "ade20k": ADE20K_CLASSES}.get(layout)
    if fixed is not None:
        if num_classes > len(fixed):
            raise ValueError(f"the {layout} layout has {len(fixed)} classes; num_classes {num_classes} is too many")
        return fixed
    return ClassList(("background", *(f"class_{k}" for k in range(1, num_classes))))


def generate(output: str, num_images: int = 40, size: int = 128, num_classes: int = 4, seed: int = 0,
             val_fraction: float = 0.25, test_fraction: float = 0.0, grain: float = GRAIN,
             layout: str = "voc") -> dict[str, list[str]]:
    """Write a dataset in ``layout`` under ``output`` (any URI); returns the ids of each split: train, val and, with
    ``test_fraction`` > 0, test (images no training decision has seen, for a truly held-out score). ``grain``: the
    per-pixel colour noise (``make_sample``). The same seed draws the same scenes in every layout."""
    num_test = round(num_images * test_fraction) if test_fraction > 0 else 0
    num_val = max(1, round(num_images * val_fraction))
    if num_images - num_val - num_test < 1 or (test_fraction > 0 and num_test < 1):
        raise ValueError(f"num_images {num_images} is too few for a train split and val_fraction {val_fraction}"
                         + (f", test_fraction {test_fraction}" if test_fraction > 0 else "") + ": add images")
    writer = layout_named(layout)
    classes = layout_classes(layout, num_classes)
    rng = np.random.default_rng(seed)
    ids = [f"synthetic_{index:05d}" for index in range(num_images)]
    num_train = num_images - num_val - num_test
    splits = {"train": ids[:num_train], "val": ids[num_train:num_train + num_val]}
    if num_test:
        splits["test"] = ids[num_train + num_val:]
    scenes = {sample_id: make_scene(rng, sample_id, size, num_classes, grain=grain) for sample_id in ids}
    writer.write(output, {split: [scenes[i] for i in split_ids] for split, split_ids in splits.items()}, classes)
    return splits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deeplab_core.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="dataset root: local path, s3://bucket/prefix, any fsspec URI")
    parser.add_argument("--num-images", type=int, default=40)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--num-classes", type=int, default=4, help="including background")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.25)
    parser.add_argument("--test-fraction", type=float, default=0.0, help="also write a test split this large")
    parser.add_argument("--grain", type=float, default=GRAIN,
                        help="per-pixel colour noise (standard deviation, 0-255): a noisy camera, e.g. 30, wants other "
                             "CRF parameters than the paper's (pipelines.tune_crf)")
    parser.add_argument("--layout", choices=LAYOUT_NAMES, default="voc",
                        help="the dataset layout to write the scenes in (cityscapes and ade20k: their own classes, the "
                             "first --num-classes of them)")
    args = parser.parse_args(argv)
    try:
        splits = generate(args.output, args.num_images, args.size, args.num_classes, args.seed, args.val_fraction,
                          args.test_fraction, args.grain, args.layout)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{len(ids)} {name}" for name, ids in splits.items())
    print(f"wrote {sum(map(len, splits.values()))} images ({counts}, {args.num_classes} classes) to {args.output} "
          f"in the {args.layout} layout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
