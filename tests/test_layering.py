import ast
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
