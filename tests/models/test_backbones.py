"""Backbones: any band count, torchvision-compatible names and sizes, stage shapes."""

import pytest
import torch
from earthloop.models.backbones import ARCHITECTURES, build_backbone


@pytest.mark.parametrize("bands", [1, 4, 12])
def test_tiny_backbone_any_band_count(bands: int) -> None:
    model = build_backbone("resnet_tiny", bands)
    x = torch.randn(2, bands, 64, 64)
    assert model(x).shape == (2, model.num_features) == (2, 128)
    feats = model.forward_features(x)
    assert [f.shape[1] for f in feats] == model.feature_channels == [16, 16, 32, 64, 128]
    assert [64 // f.shape[-1] for f in feats] == model.feature_strides == [2, 4, 8, 16, 32]


@pytest.mark.parametrize(
    ("name", "bands", "width"), [("resnet18", 1, 512), ("resnet18", 12, 512), ("resnet50", 4, 2048)]
)
def test_full_size_backbones_output_width(name: str, bands: int, width: int) -> None:
    model = build_backbone(name, bands).eval()
    with torch.no_grad():
        out = model(torch.randn(2, bands, 32, 32))
    assert out.shape == (2, width) and model.num_features == width


def test_parameter_names_and_counts_match_torchvision() -> None:
    # torchvision's resnet18/50 have 11,689,512 / 25,557,032 parameters including the 1000-class
    # fc (513,000 / 2,049,000); without it the trunks must match exactly for checkpoints to map.
    r18 = build_backbone("resnet18", 3)
    r50 = build_backbone("resnet50", 3)
    assert sum(p.numel() for p in r18.parameters()) == 11_689_512 - 513_000
    assert sum(p.numel() for p in r50.parameters()) == 25_557_032 - 2_049_000
    keys18 = set(r18.state_dict())
    assert len(keys18) == 120  # torchvision: 122 including fc.weight / fc.bias
    assert {
        "conv1.weight",
        "bn1.running_mean",
        "layer2.0.downsample.0.weight",
        "layer4.1.bn2.bias",
    } <= keys18
    assert "layer1.0.downsample.0.weight" not in keys18
    assert not any(k.startswith("fc.") for k in keys18)
    assert "layer1.0.conv3.weight" in r50.state_dict()
    assert r18.conv1.weight.shape == (64, 3, 7, 7)


def test_first_conv_follows_band_count() -> None:
    assert build_backbone("resnet18", 13).conv1.weight.shape == (64, 13, 7, 7)
    assert build_backbone("resnet50", 1).conv1.weight.shape == (64, 1, 7, 7)


def test_registry_and_errors() -> None:
    assert {"resnet18", "resnet50", "resnet_tiny"} <= set(ARCHITECTURES)
    assert build_backbone(" ResNet_Tiny ", 2).arch == "resnet_tiny"
    with pytest.raises(KeyError, match="available"):
        build_backbone("resnet10t", 3)
    with pytest.raises(ValueError, match="in_channels"):
        build_backbone("resnet18", 0)
    with pytest.raises(ValueError, match=r"expects \(B, 4, H, W\)"):
        build_backbone("resnet_tiny", 4)(torch.randn(1, 3, 32, 32))
