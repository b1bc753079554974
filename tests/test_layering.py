import ast
import pickle
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imports_of(package: str, forbidden: tuple[str, ...]) -> list[str]:
    """``path: module`` for every import in ``package``'s files of a module under one of ``forbidden``."""
    offenders = []
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] in forbidden]
    return offenders


def test_deeplab_core_never_imports_ray_pipelines_or_cluster():
    assert not imports_of("deeplab_core", ("ray", "pipelines", "cluster"))


def test_importing_every_core_module_loads_no_ray():
    code = ("import importlib, pkgutil, sys, deeplab_core\n"
            "names = [m.name for m in pkgutil.walk_packages(deeplab_core.__path__, 'deeplab_core.')]\n"
            "for name in names: importlib.import_module(name)\n"
            "assert len(names) > 20, names\n"
            "assert 'ray' not in sys.modules, 'ray was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_pipelines_never_import_cluster():
    assert not imports_of("pipelines", ("cluster",))


def test_importing_a_driver_loads_no_ray():
    """Ray reads its loopback switch once, when imported: init_ray sets it, so no driver may import Ray before."""
    code = ("import sys\n"
            "import pipelines.train, pipelines.segment, pipelines.evaluate, pipelines.tune_crf, pipelines.demo\n"
            "assert 'ray' not in sys.modules, 'ray was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_training_ingest_loads_no_torch():
    """Ray Data's decode and augmentation workers import the ingest and deeplab_core.data: without torch they start
    ~2.5 s sooner and ~800 MB lighter each (the training loop imports torch, not its data)."""
    code = ("import sys\n"
            "import deeplab_core.data, deeplab_core.normalization, pipelines.training.ingest\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_decode_crf_write_and_scoring_tasks_load_no_torch(tmp_path):
    """Ray Data's CPU workers unpickle the pipelines' stages, importing their modules: the decode, CRF, write and
    scoring tasks' workers stay torch-free (~2.5-4 s sooner, ~800 MB lighter each, the CRF's included: it refines
    an image here); only the model actors import torch."""
    from deeplab_core.crf_params import CRFParams
    from deeplab_core.models import ModelSpec
    from pipelines.segmentation.scoring import Scorer
    from pipelines.segmentation.stages import ManifestWriter, ReadImages, Refiner
    from pipelines.segmentation.writers import OverlayWriter, mask_writers
    from pipelines.tuning.scoring import CRFSettingsScorer

    spec = ModelSpec("deeplabv2", "resnet50", 8, 3)
    stages = [ReadImages(512, None, 3), Refiner(spec.output_stride), Scorer(3, True),
              ManifestWriter(str(tmp_path), spec, "digest", True, [*mask_writers("both"), OverlayWriter()]),
              CRFSettingsScorer([CRFParams()], 1, spec.output_stride, 3)]
    pickled = tmp_path / "stages.pkl"
    pickled.write_bytes(pickle.dumps(stages))
    code = (f"import pickle, sys\n"
            f"import numpy as np\n"
            f"stages = pickle.loads(open({str(pickled)!r}, 'rb').read())\n"
            f"logits = np.random.default_rng(0).standard_normal((1, 3, 3, 2)).astype(np.float32)\n"
            f"mask = np.zeros((1, 20, 16), np.uint8)\n"
            f"row = {{'uri': np.array(['a.png']), 'error': np.array(['']), 'logits': logits, 'label': mask,\n"
            f"       'labels': mask, 'image': np.full((1, 20, 16, 3), 90, np.uint8)}}\n"
            f"refined = stages[1](dict(row))\n"
            f"assert refined['error'] == [''] and refined['labels_crf'][0].shape == (20, 16), refined\n"
            f"scored = stages[4]({{**row, 'chunk': np.array([0])}})\n"
            f"assert scored['error'] == [''] and scored['matrices'][0].sum() == 20 * 16, scored\n"
            f"assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
