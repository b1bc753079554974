"""Dataset layouts: each reads the scenes ``deeplab_core.synthetic`` wrote in it back as the masks they were drawn from;
the Cityscapes and ADE20K tables on hand-made masks; every refusal names its file."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from deeplab_core.classes import ClassList, parse_class_file
from deeplab_core.data import (
    LAYOUT_NAMES, DatasetError, ListOptions, Sample, detect_layout, open_dataset, read_labelled_sample,
)
from deeplab_core.data.ade20k import ADE20K_CLASSES
from deeplab_core.data.cityscapes import CITYSCAPES_CLASSES
from deeplab_core.io import encode_jpeg, encode_png, read_bytes, write_bytes
from deeplab_core.synthetic import generate, make_scene
from tests.helpers import png_bytes

NUM_IMAGES, SEED = 12, 5


def drawn_masks(size: int) -> dict[int, np.ndarray]:
    """The masks ``generate(..., seed=SEED)`` draws, by scene number."""
    rng = np.random.default_rng(SEED)
    return {index: make_scene(rng, "", size, 4).mask for index in range(NUM_IMAGES)}


def scene_number(sample: Sample) -> int:
    return int(sample.key.rsplit("_", 1)[-1])


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_each_layout_reads_back_the_scenes_it_was_written_with(tmp_path, layout):
    # Mask layouts store the class ids themselves: exact. COCO and labelme store polygons, rasterised by pycocotools
    # and by labelme's PIL drawing: the boundary pixels may differ (an ellipse is a 96-gon there).
    size = 256 if layout in ("coco", "labelme") else 64
    root = str(tmp_path / layout)
    splits = generate(root, num_images=NUM_IMAGES, size=size, num_classes=4, seed=SEED, layout=layout)
    truth = drawn_masks(size)
    assert detect_layout(root).name == layout
    seen = []
    for split in ("train", "val"):
        data = open_dataset(root, split)
        assert data.layout == layout and len(data) == len(splits[split])
        for sample in data.samples:
            image, mask = read_labelled_sample(sample, len(data.classes))
            assert image.shape == (size, size, 3)
            agreement = float((mask == truth[scene_number(sample)]).mean())
            assert agreement >= (0.99 if layout in ("coco", "labelme") else 1.0), (sample.key, agreement)
            seen.append(scene_number(sample))
    assert sorted(seen) == list(range(NUM_IMAGES))
    expected = {"cityscapes": CITYSCAPES_CLASSES, "ade20k": ADE20K_CLASSES}.get(
        layout, ClassList(("background", "class_1", "class_2", "class_3")))
    assert data.classes.names == expected.names


def test_cityscapes_label_ids_map_to_the_19_train_ids(tmp_path):
    root = str(tmp_path / "cs")
    generate(root, num_images=4, size=40, num_classes=3, seed=1, layout="cityscapes")
    sample = open_dataset(root, "train").samples[0]
    label_ids = np.arange(40 * 40).reshape(40, 40) % 34  # every label id 0..33
    label_ids[0, :3] = (7, 26, 33)
    write_bytes(sample.label, png_bytes(Image.fromarray(label_ids.astype(np.uint8))))
    _, mask = read_labelled_sample(sample, 19)
    assert mask[0, :3].tolist() == [0, 13, 18]  # road, car, bicycle
    train_ids = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    for label_id in range(34):
        assert np.all(mask[label_ids == label_id] == train_ids.get(label_id, 255)), label_id
    assert CITYSCAPES_CLASSES.names[0] == "road" and CITYSCAPES_CLASSES.colours[0] == (128, 64, 128)
    write_bytes(sample.label, png_bytes(Image.fromarray(np.full((40, 40), 40, np.uint8))))
    with pytest.raises(DatasetError, match=f"{sample.label}: holds values \\[40\\], which are no Cityscapes"):
        read_labelled_sample(sample, 19)


def test_ade20k_other_becomes_ignore_and_classes_shift_down(tmp_path):
    root = str(tmp_path / "ade")
    generate(root, num_images=4, size=40, num_classes=3, seed=1, layout="ade20k")
    assert detect_layout(root).name == "ade20k"
    assert detect_layout(str(tmp_path / "ade" / "ADEChallengeData2016")).name == "ade20k"
    sample = open_dataset(root, "val").samples[0]
    annotation = np.zeros((40, 40), np.uint8)
    annotation[0, :4] = (0, 1, 13, 150)
    write_bytes(sample.label, png_bytes(Image.fromarray(annotation)))
    _, mask = read_labelled_sample(sample, 150)
    assert mask[0, :4].tolist() == [255, 0, 12, 149] and ADE20K_CLASSES.names[12] == "person"
    annotation[1, 1] = 151
    write_bytes(sample.label, png_bytes(Image.fromarray(annotation)))
    with pytest.raises(DatasetError, match="holds values \\[151\\], which are no ADE20K classes"):
        read_labelled_sample(sample, 150)


def test_class_file_names_and_colours():
    classes = parse_class_file("background\nroad 128 64 128\nchest of drawers\n\n")
    assert classes.names == ("background", "road", "chest of drawers")
    assert classes.colours == ((0, 0, 0), (128, 64, 128), (0, 128, 0))  # unnamed colours: the VOC colour map's
    with pytest.raises(ValueError, match="line 2: a colour's values are 0..255"):
        parse_class_file("a\nb 1 2 300\n")


def test_pairs_hold_out_a_seeded_val_share_without_split_files(tmp_path):
    root = str(tmp_path / "pairs")
    generate(root, num_images=10, size=32, num_classes=3, seed=2, layout="pairs")
    shutil.rmtree(tmp_path / "pairs" / "splits")
    everything = open_dataset(root, "train")
    assert len(everything) == 10 and everything.samples[0].key.startswith("train/")
    options = ListOptions(val_fraction=0.3)
    train, val = open_dataset(root, "train", options=options), open_dataset(root, "val", options=options)
    assert (len(train), len(val)) == (7, 3) and not {s.key for s in train.samples} & {s.key for s in val.samples}
    assert open_dataset(root, "val", options=options).samples == val.samples  # the same share every time
    with pytest.raises(DatasetError, match="every sample is in train; pass --val-fraction"):
        open_dataset(root, "val")


def test_pairs_refusals_name_the_file(tmp_path):
    root = tmp_path / "pairs"
    generate(str(root), num_images=6, size=32, num_classes=3, seed=2, layout="pairs")
    image = root / "images" / "train" / "synthetic_00000.jpg"
    mask = root / "masks" / "train" / "synthetic_00000.png"
    write_bytes(str(root / "images" / "train" / "synthetic_00000.png"), encode_png(np.zeros((32, 32, 3), np.uint8)))
    with pytest.raises(DatasetError, match="one sample under two extensions"):
        open_dataset(str(root), "train")
    os.remove(root / "images" / "train" / "synthetic_00000.png")
    os.remove(image)
    with pytest.raises(DatasetError, match=f"{mask}: mask without its image"):
        open_dataset(str(root), "train")
    write_bytes(str(image), encode_jpeg(np.zeros((32, 32, 3), np.uint8)))
    os.remove(mask)
    with pytest.raises(DatasetError, match=f"{image}: no mask"):
        open_dataset(str(root), "train")
    write_bytes(str(mask), png_bytes(Image.fromarray(np.full((32, 32), 9, np.uint8))))
    data = open_dataset(str(root), "train")
    sample = next(s for s in data.samples if s.label == str(mask))
    with pytest.raises(DatasetError, match=f"{mask}: mask holds class ids \\[9\\] but num_classes is 3"):
        read_labelled_sample(sample, len(data.classes))
    write_bytes(str(root / "splits" / "empty.txt"), b"\n")
    with pytest.raises(DatasetError, match="split 'empty' holds no samples"):
        open_dataset(str(root), "empty")


def _coco(root, document):
    write_bytes(str(root / "annotations" / "train.json"), json.dumps(document).encode())


def test_coco_crowd_regions_are_ignored_and_later_annotations_lie_on_top(tmp_path):
    root = tmp_path / "coco"
    write_bytes(str(root / "images" / "a.jpg"), encode_jpeg(np.zeros((20, 30, 3), np.uint8)))
    square = lambda x0, y0, x1, y1: [[x0, y0, x1, y0, x1, y1, x0, y1]]  # noqa: E731
    crowd = {"size": [20, 30], "counts": [0, 20 * 5, 20 * 25]}  # uncompressed RLE: columns 0-4, column-major
    _coco(root, {"images": [{"id": 7, "file_name": "a.jpg", "width": 30, "height": 20}],
                 "categories": [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}],
                 "annotations": [
                     {"id": 1, "image_id": 7, "category_id": 1, "segmentation": square(0, 0, 20, 10), "iscrowd": 0},
                     {"id": 2, "image_id": 7, "category_id": 3, "segmentation": square(10, 0, 30, 10), "iscrowd": 0},
                     {"id": 3, "image_id": 7, "category_id": 3, "segmentation": crowd, "iscrowd": 1}]})
    data = open_dataset(str(root), "train")
    assert data.layout == "coco" and data.classes.names == ("background", "dog", "cat")
    _, mask = read_labelled_sample(data.samples[0], 3)
    assert mask[5, 7] == 1 and mask[5, 15] == 2  # dog below, the later cat over it
    assert mask[15, 2] == 255 and mask[5, 2] == 1  # the crowd is ignored where no ordinary annotation covers it
    assert mask[15, 20] == 0


def test_coco_refusals_name_the_file(tmp_path):
    root = tmp_path / "coco"
    generate(str(root), num_images=4, size=32, num_classes=3, seed=2, layout="coco")
    uri = str(root / "annotations" / "train.json")
    good = json.loads(read_bytes(uri))
    broken = json.loads(json.dumps(good))
    broken["images"][0]["file_name"] = "nowhere.jpg"
    _coco(root, broken)
    with pytest.raises(DatasetError, match=f"{uri}: image 1 names 'nowhere.jpg', which is not under"):
        open_dataset(str(root), "train")
    broken = json.loads(json.dumps(good))
    broken["annotations"][0]["image_id"] = 99
    _coco(root, broken)
    with pytest.raises(DatasetError, match=f"{uri}: annotation 1 names image 99, which the file does not list"):
        open_dataset(str(root), "train")
    broken = json.loads(json.dumps(good))
    broken["annotations"][0]["segmentation"] = [[0, 0, 80, 0, 80, 5]]
    _coco(root, broken)
    with pytest.raises(DatasetError, match=f"{uri}: annotation 1: point \\(80, 0\\) lies outside its 32 x 32 image"):
        open_dataset(str(root), "train")


def test_labelme_classes_from_labels_found_or_classes_txt_and_its_refusals(tmp_path):
    root = tmp_path / "labelme"
    write_bytes(str(root / "pics" / "a.png"), encode_png(np.zeros((20, 20, 3), np.uint8)))
    document = {"shapes": [
        {"label": "zebra", "points": [[10, 10], [14, 10]], "shape_type": "circle"},
        {"label": "apple", "points": [[0, 0], [5, 5]], "shape_type": "rectangle"},
        {"label": "__ignore__", "points": [[15, 0], [19, 0], [19, 4]], "shape_type": "polygon"}],
        "imagePath": "a.png", "imageHeight": 20, "imageWidth": 20}
    annotation = root / "pics" / "a.json"
    write_bytes(str(annotation), json.dumps(document).encode())
    data = open_dataset(str(root), "train")
    assert data.layout == "labelme" and data.classes.names == ("background", "apple", "zebra")
    _, mask = read_labelled_sample(data.samples[0], 3)
    assert mask[2, 2] == 1 and mask[10, 12] == 2 and mask[10, 7] == 2 and mask[10, 5] == 0 and mask[1, 18] == 255
    write_bytes(str(root / "classes.txt"), b"__ignore__\nbackground\nzebra 1 2 3\n")
    with pytest.raises(DatasetError, match=f"{annotation}: shape 1 \\('apple'\\): label 'apple' is not among"):
        open_dataset(str(root), "train")
    os.remove(root / "classes.txt")
    document["imagePath"] = "../elsewhere/a.png"
    write_bytes(str(annotation), json.dumps(document).encode())
    with pytest.raises(DatasetError, match=f"{annotation}: its imagePath '../elsewhere/a.png' names .* does not"):
        open_dataset(str(root), "train")


def test_an_unknown_or_ambiguous_root_lists_the_layouts(tmp_path):
    (tmp_path / "empty" / "stuff").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no dataset layout recognised; pass --layout, one of: voc: JPEGImages"):
        detect_layout(str(tmp_path / "empty"))
    for folder in ("JPEGImages", "images", "masks"):
        (tmp_path / "both" / folder).mkdir(parents=True)
    with pytest.raises(DatasetError, match="looks like several layouts \\(voc, pairs\\); pass --layout"):
        detect_layout(str(tmp_path / "both"))
    with pytest.raises(DatasetError, match="no such folder"):
        detect_layout(str(tmp_path / "missing"))
    with pytest.raises(DatasetError, match="both/images: no images found"):  # named, pairs is listed: no ambiguity
        open_dataset(str(tmp_path / "both"), "train", layout="pairs")
    with pytest.raises(DatasetError, match="is not laid out as --layout coco expects: annotations/<split>.json"):
        open_dataset(str(tmp_path / "both"), "train", layout="coco")


def test_old_checkpoints_without_colours_take_the_voc_colour_map():
    from deeplab_core.models import ModelSpec

    config = ModelSpec("deeplabv2", "resnet50", 16, 3).to_config()
    del config["class_colours"]
    assert ModelSpec.from_config(config).class_colours == ((0, 0, 0), (128, 0, 0), (0, 128, 0))


def test_rle_writer_round_trips_the_png_mask(tmp_path):
    from pipelines.segmentation.writers import MaskWriter, RLEWriter, decode_rle

    rng = np.random.default_rng(3)
    mask = make_scene(rng, "", 48, 5).mask.copy()
    mask[:2, :2] = 255
    written = MaskWriter(ClassList(("a", "b", "c", "d", "e")).colours).write(str(tmp_path), "x.png", None, mask, mask)
    png = np.asarray(Image.open(written["mask_uri"]))
    rle = RLEWriter().write(str(tmp_path), "x.png", None, mask, mask)["rle"]
    assert sorted(entry["class_id"] for entry in rle) == sorted(np.unique(mask).tolist())
    assert np.array_equal(decode_rle(rle, 48, 48), png) and np.array_equal(png, mask)


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_the_training_ingest_reads_every_layout_into_crops_of_its_classes(tmp_path, layout):
    """What Ray Data's training tasks run (pipelines.training.ingest.TrainingSampleLoader), on each layout's root."""
    from pipelines.training.ingest import TrainingSampleLoader, training_items

    root = str(tmp_path / layout)
    generate(root, num_images=6, size=40, num_classes=3, seed=11, layout=layout)
    data = open_dataset(root, "train")
    loader = TrainingSampleLoader(tuple(data.samples), 32, 0.5, 1.5, len(data.classes))
    items = training_items(len(data.samples), 4, seed=0)
    batch = loader({"index": np.array([item["index"] for item in items]),
                    "seed": np.array([item["seed"] for item in items])})
    assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.uint8
    values = set(np.unique(batch["mask"]).tolist())
    assert values <= set(range(len(data.classes))) | {255} and values & {1, 2}, values
