import pytest
import torch

from deeplab_core.checkpoint import (
    BEST_MODEL_FILE, CHECKPOINT_FILE, CheckpointError, load_checkpoint, load_model, model_config, save_checkpoint,
)
from deeplab_core.io import join_uri, write_bytes
from deeplab_core.models import build_model, count_parameters
from deeplab_core.training import freeze_batchnorm


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("deeplabv3", "resnet50", output_stride=16, num_classes=3).eval()


@pytest.mark.parametrize("root_kind", ["local", "memory"])
def test_round_trip_rebuilds_an_identical_model(tmp_path, model, root_kind):
    root = str(tmp_path) if root_kind == "local" else "memory://checkpoints/run1"
    uri = join_uri(root, "model.pt")
    config = model_config(model, class_names=["bg", "cat", "dog"])
    save_checkpoint(uri, model, config, iteration=42, metrics={"miou": 0.5})
    restored, checkpoint = load_model(uri)
    assert checkpoint.config == config and checkpoint.state["iteration"] == 42
    assert (restored.arch, restored.output_stride, restored.num_classes) == ("deeplabv3", 16, 3)
    images = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(restored(images), model(images))
    assert len(checkpoint.digest) == 16 and load_checkpoint(uri).digest == checkpoint.digest


def test_digest_changes_with_the_weights(model):
    save_checkpoint("memory://digest/a.pt", model)
    other = build_model("deeplabv3", "resnet50", output_stride=16, num_classes=3)
    save_checkpoint("memory://digest/b.pt", other)
    assert load_checkpoint("memory://digest/a.pt").digest != load_checkpoint("memory://digest/b.pt").digest


def test_training_output_and_ray_checkpoint_folders_resolve(tmp_path, model):
    save_checkpoint(str(tmp_path / "run" / BEST_MODEL_FILE), model)
    save_checkpoint(str(tmp_path / "run" / "checkpoint_000003" / CHECKPOINT_FILE), model)
    assert load_checkpoint(str(tmp_path / "run")).uri.endswith(BEST_MODEL_FILE)
    assert load_checkpoint(str(tmp_path / "run" / "checkpoint_000003")).uri.endswith(CHECKPOINT_FILE)


def test_frozen_batchnorm_checkpoint_loads_into_a_plain_model():
    frozen = freeze_batchnorm(build_model("deeplabv2", "resnet50", 16, 3)).eval()
    save_checkpoint("memory://frozen/model.pt", frozen)
    restored, _ = load_model("memory://frozen/model.pt")
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(restored(images), frozen(images), atol=1e-5)


def test_bad_checkpoints_give_clear_errors(tmp_path, model):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(str(tmp_path / "nothing.pt"))
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "empty_run" / "log.txt").write_text("x")
    with pytest.raises(CheckpointError, match="without best_model.pt"):
        load_checkpoint(str(tmp_path / "empty_run"))
    write_bytes(str(tmp_path / "garbage.pt"), b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt: not a readable checkpoint"):
        load_checkpoint(str(tmp_path / "garbage.pt"))
    torch.save({"weights": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a deeplab-ray checkpoint"):
        load_checkpoint(str(tmp_path / "foreign.pt"))
    with pytest.raises(CheckpointError, match="config lacks"):
        save_checkpoint(str(tmp_path / "x.pt"), model, {"arch": "deeplabv3"})
    config = model_config(model) | {"num_classes": 5, "class_names": [str(k) for k in range(5)],
                                    "class_colours": [[k, k, k] for k in range(5)]}
    save_checkpoint(str(tmp_path / "mismatch.pt"), model, config)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(str(tmp_path / "mismatch.pt"))


def test_model_spec_is_the_typed_config_and_round_trips_the_on_disk_dict(tmp_path):
    from deeplab_core.models import ModelSpec

    model = build_model("deeplabv2", "resnet50", 16, 3)
    path = str(tmp_path / "m.pt")
    save_checkpoint(path, model, model_config(model, class_names=["bg", "cat", "dog"]))
    checkpoint = load_checkpoint(path)
    spec = checkpoint.spec
    assert (spec.arch, spec.backbone, spec.output_stride, spec.num_classes) == ("deeplabv2", "resnet50", 16, 3)
    assert spec.class_names == ("bg", "cat", "dog") and spec.to_config() == checkpoint.config
    assert count_parameters(spec.build()) == count_parameters(model)
    with pytest.raises(ValueError, match="output_stride"):
        ModelSpec("deeplabv2", "resnet50", 32, 3)
    with pytest.raises(ValueError, match="3 classes need as many names"):
        ModelSpec("deeplabv2", "resnet50", 16, 3, ("bg", "cat"))
