"""Every dataset layout through the real pipelines on the local Ray cluster: `--data ROOT` and nothing else trains
(a few iterations: the point is the data path, not learning), the checkpoint names the dataset's classes, evaluate
reports them by name, segment draws them in the dataset's colours, and a bad mask is one line naming it."""

import io
import json

import numpy as np
import pytest
from PIL import Image
from pyarrow import parquet

from deeplab_core.checkpoint import load_checkpoint, save_checkpoint
from deeplab_core.data import open_dataset
from deeplab_core.io import read_bytes, write_bytes
from deeplab_core.models import ModelSpec
from deeplab_core.synthetic import generate, layout_classes
from pipelines import evaluate, segment, train, tune_crf
from pipelines.segmentation.manifest import manifest_classes, read_manifest
from pipelines.segmentation.writers import decode_rle
from tests.helpers import FROM_SCRATCH, png_bytes

pytestmark = pytest.mark.integration

TINY_RUN = ["--arch", "deeplabv2", "--backbone", "resnet50", "--output-stride", "16", "--crop-size", "32",
            "--batch-size", "2", "--iterations", "2", "--val-every", "2", *FROM_SCRATCH,
            "--workers", "1"]

# The second backbone family goes the same way (evaluate, segment, tune_crf) in one of the layouts' runs; it trains
# through Ray Train in tests/test_elastic.py.
MOBILENET = ("deeplabv3", "mobilenet_v3_large")
MODEL_FOR_LAYOUT = {"labelme": MOBILENET}


# One layout trains through Ray Train (the training ingest reads every layout the same way, through
# read_labelled_sample: tests/test_layouts.py feeds each layout's root to it without Ray); every layout is evaluated
# and segmented through the pipelines, the others with a model that has the dataset's classes but was not trained.
TRAINED_LAYOUT = "cityscapes"


@pytest.mark.parametrize("layout", ["cityscapes", "ade20k", "pairs", "coco", "labelme"])
def test_a_root_in_each_layout_goes_through_the_pipelines_with_its_classes(ray_cluster, tmp_path, layout, capsys):
    root, run = str(tmp_path / "data"), str(tmp_path / "run")
    generate(root, num_images=6, size=40, num_classes=3, seed=11, layout=layout)
    expected = layout_classes(layout, 3)

    arch, backbone = MODEL_FOR_LAYOUT.get(layout, ("deeplabv2", "resnet50"))
    if layout == TRAINED_LAYOUT:
        assert train.main(["--data", root, "--val-data", root, "--output", run, *TINY_RUN]) == 0
        assert f"({layout} layout)" in capsys.readouterr().out
    else:
        classes = open_dataset(root, "train").classes
        spec = ModelSpec(arch, backbone, 16, len(classes), classes.names, class_colours=classes.colours)
        save_checkpoint(f"{run}/best_model.pt", spec.build(), spec)
    spec = load_checkpoint(run).spec
    assert spec.class_names == expected.names and spec.class_colours == expected.colours
    assert (spec.arch, spec.backbone) == (arch, backbone)
    _evaluate_and_segment(root, run, tmp_path, layout)
    if layout in MODEL_FOR_LAYOUT:
        tuned = str(tmp_path / "tuned")
        assert tune_crf.main(["--data", root, "--checkpoint", run, "--output", tuned, "--num-images", "2",
                              "--grid", "w1=3,4", "--no-refine"]) == 0
        assert "w1" in read_bytes(f"{tuned}/crf_params.yaml").decode()


def _evaluate_and_segment(root: str, run: str, tmp_path, layout: str) -> None:
    expected = layout_classes(layout, 3)
    report_folder = str(tmp_path / "evaluation")
    assert evaluate.main(["--data", root, "--checkpoint", run, "--output", report_folder, "--no-crf"]) == 0
    report = json.loads(read_bytes(f"{report_folder}/report.json"))
    assert report["layout"] == layout and report["images"] == 2 and not report["failed"]
    assert set(report["without_crf"]["per_class_iou"]) == set(expected.names)

    images = [sample.image for sample in open_dataset(root, "val").samples]
    listing = str(tmp_path / "inputs.txt")
    write_bytes(listing, "\n".join(images).encode())
    output = str(tmp_path / "segmented")
    assert segment.main(["--input", listing, "--output", output, "--checkpoint", run, "--no-crf",
                         "--output-format", "both"]) == 0
    manifest = read_manifest(output)
    assert manifest.column("status").to_pylist() == ["ok", "ok"]
    mask = Image.open(io.BytesIO(read_bytes(manifest.column("mask_uri")[0].as_py())))
    row = manifest.slice(0, 1).to_pylist()[0]
    assert np.array_equal(decode_rle(row["rle"], row["height"], row["width"]), np.asarray(mask))
    palette = np.asarray(mask.getpalette()[: 3 * len(expected)]).reshape(-1, 3)
    assert [tuple(colour) for colour in palette] == list(expected.colours)  # road is (128, 64, 128) in cityscapes
    written = parquet.read_schema(next((tmp_path / "segmented" / "manifest").rglob("*.parquet")))
    assert manifest_classes(written) == list(expected.names)


def test_a_bad_mask_in_a_pairs_root_is_refused_in_one_line_naming_it(ray_cluster, tmp_path, capsys):
    root = tmp_path / "pairs"
    generate(str(root), num_images=6, size=40, num_classes=3, seed=11, layout="pairs")
    bad = root / "masks" / "train" / "synthetic_00000.png"  # the first listed: read before any worker starts
    write_bytes(str(bad), png_bytes(Image.fromarray(np.full((40, 40), 7, np.uint8))))
    assert train.main(["--data", str(root), "--output", str(tmp_path / "run"), *TINY_RUN]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {bad}: mask holds class ids [7] but num_classes is 3 (valid: 0..2, and 255 = ignore)"]
