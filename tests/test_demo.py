import json

import pytest

from deeplab_core.data import read_split
from pipelines import demo
from pipelines.segmentation.manifest import read_manifest

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end_and_writes_what_it_promises(ray_cluster, tmp_path, capsys):
    assert demo.main(["--output", str(tmp_path), "--iterations", "10"]) == 0
    (run,) = tmp_path.iterdir()
    report = json.loads((run / "evaluation" / "report.json").read_text())
    assert report["images"] == 14 and report["split"] == "test" and "with_crf" in report and "without_crf" in report
    splits = {name: set(read_split(str(run / "data"), name)) for name in ("train", "val", "test")}
    assert not splits["test"] & (splits["train"] | splits["val"])  # held out from training and model selection
    assert (run / "evaluation" / "confusion_matrix.png").stat().st_size > 0
    masks = list((run / "segmentation" / "masks").rglob("*.png"))
    overlays = list((run / "segmentation" / "overlays").rglob("*.png"))
    assert len(masks) == len(overlays) == 14
    manifest = read_manifest(str(run / "segmentation"))
    assert manifest.num_rows == 14 and set(manifest.column("status").to_pylist()) == {"ok"}
    assert (run / "run" / "best_model.pt").exists()
    checkpoints = [path for path in (run / "run" / "train").glob("checkpoint_*") if path.is_dir()]
    assert len(checkpoints) == 1  # one ~180 MB checkpoint beside best_model.pt, not two
    printed = capsys.readouterr().out
    for step in ("1/4", "2/4", "3/4", "4/4", "done"):
        assert step in printed
