import numpy as np
import pytest

from deeplab_core.data import (
    VOC_CLASSES, DatasetError, VOCSegmentation, dataset_classes, read_class_names, train_transform,
)
from deeplab_core.data.voc import image_uri, mask_uri
from deeplab_core.io import encode_palette_png, join_uri, read_bytes, write_bytes
from deeplab_core.synthetic import generate, main, make_sample


@pytest.fixture()
def dataset_root(tmp_path):
    root = str(tmp_path / "voc")
    generate(root, num_images=8, size=48, num_classes=3, seed=7)
    return root


def test_synthetic_dataset_has_the_voc_layout_and_is_seeded(dataset_root, tmp_path):
    train = VOCSegmentation(dataset_root, "train", num_classes=3)
    val = VOCSegmentation(dataset_root, "val", num_classes=3)
    assert (len(train), len(val)) == (6, 2) and not set(train.ids) & set(val.ids)
    image, mask = train[0]
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8 and mask.shape == (48, 48)
    assert set(np.unique(mask)) <= {0, 1, 2}
    assert read_class_names(dataset_root) == ["background", "class_1", "class_2"]
    again = str(tmp_path / "again")
    generate(again, num_images=8, size=48, num_classes=3, seed=7)
    assert read_bytes(mask_uri(again, train.ids[3])) == read_bytes(mask_uri(dataset_root, train.ids[3]))


def test_every_class_appears_and_shapes_have_sharp_colour_edges():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(20):
        image, mask = make_sample(rng, size=64, num_classes=4)
        seen |= set(np.unique(mask).tolist())
        foreground_mean = image[mask > 0].mean(0)
        background_mean = image[mask == 0].mean(0)
        if (mask > 0).any() and (mask == 0).any():
            assert np.abs(foreground_mean - background_mean).max() > 30
    assert seen == {0, 1, 2, 3}


def test_dataset_on_an_fsspec_memory_filesystem_with_a_transform():
    generate("memory://datasets/syn", num_images=4, size=40, num_classes=3, seed=1)
    dataset = VOCSegmentation("memory://datasets/syn", "train", transform=train_transform(32))
    image, mask = dataset[0]
    assert image.shape == (32, 32, 3) and mask.shape == (32, 32)


def test_cli_writes_a_dataset(tmp_path, capsys):
    assert main(["--output", str(tmp_path / "cli"), "--num-images", "4", "--size", "32", "--num-classes", "5"]) == 0
    assert "wrote 4 images" in capsys.readouterr().out
    assert len(VOCSegmentation(str(tmp_path / "cli"), "train")) == 3


def test_missing_split_file_names_it_and_lists_the_splits(dataset_root):
    with pytest.raises(DatasetError, match=r"test.txt not found \(available splits: \['train', 'val'\]"):
        VOCSegmentation(dataset_root, "test")


def test_missing_mask_is_named_before_any_pixel_is_read(dataset_root):
    dataset = VOCSegmentation(dataset_root, "train")
    victim = mask_uri(dataset_root, dataset.ids[2])
    import os
    os.remove(victim)
    with pytest.raises(DatasetError, match=f"{victim}: mask missing"):
        VOCSegmentation(dataset_root, "train")


def test_mask_with_wrong_size_or_out_of_range_class_is_named(dataset_root):
    dataset = VOCSegmentation(dataset_root, "train", num_classes=3)
    wrong_size = mask_uri(dataset_root, dataset.ids[0])
    write_bytes(wrong_size, encode_palette_png(np.zeros((10, 12), np.uint8)))
    with pytest.raises(DatasetError, match=f"{wrong_size}: mask is 10 x 12 but its image is 48 x 48"):
        dataset[0]
    out_of_range = mask_uri(dataset_root, dataset.ids[1])
    write_bytes(out_of_range, encode_palette_png(np.full((48, 48), 7, np.uint8)))
    with pytest.raises(DatasetError, match=f"{out_of_range}: mask holds class ids \\[7\\]"):
        dataset[1]
    ignore_only = mask_uri(dataset_root, dataset.ids[2])
    write_bytes(ignore_only, encode_palette_png(np.full((48, 48), 255, np.uint8)))
    assert dataset[2][1].max() == 255


def test_a_root_without_images_is_an_error(tmp_path):
    write_bytes(join_uri(str(tmp_path), "ImageSets", "Segmentation", "train.txt"), b"a\nb\n")
    with pytest.raises(DatasetError, match="no images found"):
        VOCSegmentation(str(tmp_path), "train")
    write_bytes(image_uri(str(tmp_path), "a"), b"x")
    write_bytes(mask_uri(str(tmp_path), "a"), b"x")
    with pytest.raises(DatasetError, match="b.jpg: image listed in the split but missing"):
        VOCSegmentation(str(tmp_path), "train")


def test_class_names_come_from_the_dataset_else_voc_else_the_ids(dataset_root, tmp_path):
    assert dataset_classes(dataset_root) == ["background", "class_1", "class_2"]
    assert dataset_classes(dataset_root, 5) == ["0", "1", "2", "3", "4"]  # classes.txt does not fit 5 classes
    assert dataset_classes(str(tmp_path)) == list(VOC_CLASSES)  # no classes.txt: PASCAL VOC's 21
    assert dataset_classes(str(tmp_path), 3) == ["0", "1", "2"]


def test_the_mask_folder_is_an_option(dataset_root, tmp_path):
    import shutil

    from deeplab_core.data import MASK_DIR

    root = tmp_path / "aug"
    shutil.copytree(dataset_root, root)
    (root / MASK_DIR).rename(root / "SegmentationClassAug")
    with pytest.raises(DatasetError, match="SegmentationClass: no masks found"):
        VOCSegmentation(str(root), "train")
    dataset = VOCSegmentation(str(root), "train", num_classes=3, mask_folder="SegmentationClassAug")
    image, mask = dataset[0]
    assert image.shape[:2] == mask.shape
