import re
from pathlib import Path

import pytest
import torch
from torchvision.models import mobilenet_v3_large, resnet50
from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large, deeplabv3_resnet50, deeplabv3_resnet101

from deeplab_core.models import BACKBONES, ASPPv2, build_model, count_parameters, imagenet_weights_path

ARCHITECTURE_DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


@pytest.mark.parametrize("arch", ["deeplabv2", "deeplabv3"])
@pytest.mark.parametrize("output_stride, grid", [(8, 65), (16, 33)])
def test_513_input_gives_paper_grid_and_full_size_logits(arch, output_stride, grid):
    model = build_model(arch, "resnet50", output_stride, num_classes=5).eval()
    images = torch.randn(1, 3, 513, 513)
    with torch.no_grad():
        low = model.low_res_logits(images)
        full = model(images)
    assert low.shape == (1, 5, grid, grid)
    assert isinstance(full, torch.Tensor) and full.shape == (1, 5, 513, 513)


def _torchvision_resnet_without_fc(constructor) -> int:
    net = constructor(weights=None)
    return count_parameters(net) - count_parameters(net.fc)


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101"])
def test_parameter_counts_match_independent_computation(backbone):
    tv = {"resnet50": deeplabv3_resnet50, "resnet101": deeplabv3_resnet101}[backbone]
    expected_v3 = count_parameters(tv(weights=None, weights_backbone=None, num_classes=21, aux_loss=False))
    assert count_parameters(build_model("deeplabv3", backbone, 8, 21)) == expected_v3
    # ASPP-L: four 3x3 convolutions 2048 -> 21 with bias, on top of the ResNet without its fc layer.
    from torchvision.models import resnet101
    resnet_params = _torchvision_resnet_without_fc({"resnet50": resnet50, "resnet101": resnet101}[backbone])
    expected_v2 = resnet_params + 4 * (2048 * 9 * 21 + 21)
    assert count_parameters(build_model("deeplabv2", backbone, 8, 21)) == expected_v2


def test_documented_parameter_table_is_true():
    text = ARCHITECTURE_DOC.read_text()
    for arch in ("deeplabv2", "deeplabv3"):
        for backbone, entry in BACKBONES.items():
            row = re.search(rf"\|\s*{arch}\s*\|\s*{backbone}\s*\|\s*([\d,]+)\s*\|", text)
            assert row, f"docs/architecture.md lacks the parameter-count row for {arch}/{backbone}"
            model = build_model(arch, backbone, entry.default_output_stride, 21)
            assert int(row.group(1).replace(",", "")) == count_parameters(model)


TORCHVISION_DEEPLABV3 = {"resnet50": (deeplabv3_resnet50, 8), "resnet101": (deeplabv3_resnet101, 8),
                         "mobilenet_v3_large": (deeplabv3_mobilenet_v3_large, 16)}


@pytest.mark.parametrize("backbone", list(TORCHVISION_DEEPLABV3))
def test_torchvision_deeplabv3_weights_load_strictly_and_give_equal_outputs(backbone):
    constructor, stride = TORCHVISION_DEEPLABV3[backbone]
    torch.manual_seed(0)
    reference = constructor(weights=None, weights_backbone=None, num_classes=21, aux_loss=False).eval()
    ours = build_model("deeplabv3", backbone, output_stride=stride, num_classes=21).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    images = torch.randn(2, 3, 97, 130)
    with torch.no_grad():
        assert torch.equal(ours(images), reference(images)["out"])


def test_v2_head_sums_four_atrous_class_predictors():
    head = ASPPv2(in_channels=8, num_classes=3)
    assert [b.dilation for b in head.branches] == [(6, 6), (12, 12), (18, 18), (24, 24)]
    features = torch.randn(1, 8, 30, 30)
    assert torch.allclose(head(features), sum(branch(features) for branch in head.branches))


def test_v3_rates_double_at_output_stride_8():
    def rates(model):
        return [branch[0].dilation[0] for branch in model.classifier[0].convs[1:4]]
    assert rates(build_model("deeplabv3", "resnet50", 16, 3)) == [6, 12, 18]
    assert rates(build_model("deeplabv3", "resnet50", 8, 3)) == [12, 24, 36]


def test_pretrained_backbone_loads_from_a_file_and_from_the_torch_cache(tmp_path, monkeypatch):
    imagenet = resnet50(weights=None)
    weights_file = tmp_path / "my_resnet50.pth"
    torch.save(imagenet.state_dict(), weights_file)
    model = build_model("deeplabv2", "resnet50", 16, 3, pretrained_backbone=weights_file)
    assert torch.equal(model.backbone.layer3[0].conv2.weight, imagenet.layer3[0].conv2.weight)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cached = imagenet_weights_path("resnet50")
    assert str(cached).startswith(str(tmp_path / "torch_home"))
    with pytest.raises(FileNotFoundError, match=re.escape(str(cached))):
        build_model("deeplabv2", "resnet50", 16, 3, pretrained_backbone=True)
    cached.parent.mkdir(parents=True)
    torch.save(imagenet.state_dict(), cached)
    model = build_model("deeplabv3", "resnet50", 8, 3, pretrained_backbone=True)
    assert torch.equal(model.backbone.conv1.weight, imagenet.conv1.weight)


def test_mobilenet_backbone_loads_imagenet_weights_from_torchvisions_file(tmp_path):
    torch.manual_seed(0)
    imagenet = mobilenet_v3_large(weights=None)
    weights_file = tmp_path / "mobilenet_v3_large.pth"
    torch.save(imagenet.state_dict(), weights_file)  # features.* and classifier.*, as torchvision's file
    model = build_model("deeplabv3", "mobilenet_v3_large", 16, 3, pretrained_backbone=weights_file)
    assert torch.equal(model.backbone[16][0].weight, imagenet.features[16][0].weight)
    assert torch.equal(model.backbone[4].block[0][0].weight, imagenet.features[4].block[0][0].weight)


def test_mobilenet_runs_at_output_stride_16_with_the_v2_head_too():
    model = build_model("deeplabv2", "mobilenet_v3_large", 16, 4).eval()
    with torch.no_grad():
        assert model.low_res_logits(torch.randn(1, 3, 129, 129)).shape == (1, 4, 9, 9)


@pytest.mark.parametrize("kwargs, message", [
    ({"arch": "deeplabv4"}, "unknown arch"),
    ({"backbone": "resnet18"}, "unknown backbone"),
    ({"output_stride": 32}, "output_stride"),
    ({"backbone": "mobilenet_v3_large", "output_stride": 8}, r"output_stride of mobilenet_v3_large .*\(16,\)"),
    ({"num_classes": 1}, "num_classes"),
])
def test_bad_model_arguments_are_rejected_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(**{"arch": "deeplabv2", "backbone": "resnet50", "output_stride": 16, "num_classes": 3, **kwargs})


@pytest.mark.parametrize("backbone", ["resnet50", "mobilenet_v3_large"])
def test_torchvision_voc_weights_become_a_checkpoint_with_equal_outputs(backbone, tmp_path, monkeypatch, capsys):
    """Saved the way torchvision's hub file is (a state dict, auxiliary head included), with random weights."""
    from deeplab_core.checkpoint import load_model
    from deeplab_core.data import VOC_CLASSES
    from deeplab_core.pretrained import main, torchvision_file

    constructor, stride = TORCHVISION_DEEPLABV3[backbone]
    torch.manual_seed(0)
    reference = constructor(weights=None, weights_backbone=None, num_classes=21, aux_loss=True).eval()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert main(["--backbone", backbone, "--output", str(tmp_path / "voc.pt")]) == 2  # not in the cache yet
    assert "download " + torchvision_file(backbone) in capsys.readouterr().err
    cached = tmp_path / "torch" / "hub" / "checkpoints" / torchvision_file(backbone)
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    assert main(["--backbone", backbone, "--output", str(tmp_path / "voc.pt")]) == 0
    model, checkpoint = load_model(str(tmp_path / "voc.pt"))
    assert checkpoint.spec.class_names == tuple(VOC_CLASSES) and checkpoint.spec.output_stride == stride
    images = torch.randn(1, 3, 97, 130)
    with torch.no_grad():
        assert torch.equal(model(images), reference(images)["out"])
    torch.save({"not": torch.zeros(1)}, tmp_path / "other.pt")
    other = ["--weights", str(tmp_path / "other.pt"), "--output", str(tmp_path / "x.pt")]
    assert main(["--backbone", backbone, *other]) == 2
    assert f"not torchvision's DeepLab-v3 {backbone} weights" in capsys.readouterr().err
