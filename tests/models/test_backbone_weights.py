"""Backbone export/import with band metadata, and foreign checkpoint adaptation."""

import argparse
from pathlib import Path

import pytest
import torch
from earthloop.models.backbones import build_backbone
from earthloop.models.weights import FORMAT, load_backbone, load_external_state_dict, save_backbone

BANDS = ["B02", "B03", "B04", "B08"]
MEAN = [0.1, 0.2, 0.3, 0.4]
STD = [1.0, 1.1, 1.2, 1.3]


def _saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    bb = build_backbone("resnet_tiny", 4)
    path = save_backbone(
        tmp_path / "sub" / "bb.pt",
        bb,
        arch="resnet_tiny",
        bands=BANDS,
        mean=MEAN,
        std=STD,
        method="seco",
        extra={"epochs": 3, "note": ["a"]},
    )
    return path, bb


def test_round_trip_restores_weights_and_meta(tmp_path: Path) -> None:
    path, bb = _saved(tmp_path)
    loaded, meta = load_backbone(
        path, expected_bands=["blue", "green", "red", "nir"], arch="resnet_tiny"
    )
    x = torch.randn(2, 4, 32, 32)
    bb.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(bb(x), loaded(x))
    assert (
        meta["format"] == FORMAT
        and meta["bands"] == BANDS
        and meta["mean"] == MEAN
        and meta["std"] == STD
    )
    assert meta["method"] == "seco" and meta["extra"] == {"epochs": 3, "note": ["a"]}
    assert "state_dict" not in meta
    # the file is loadable without unpickling code
    assert torch.load(path, weights_only=True)["arch"] == "resnet_tiny"
    assert not list(path.parent.glob("*.tmp"))


def test_load_mismatch_errors(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    with pytest.raises(ValueError, match=r"4 bands.*3 bands"):
        load_backbone(path, expected_bands=["B02", "B03", "B04"])
    with pytest.raises(ValueError, match="band mismatch"):
        load_backbone(path, expected_bands=["B04", "B03", "B02", "B08"])
    with pytest.raises(ValueError, match=r"architecture mismatch.*resnet_tiny.*resnet18"):
        load_backbone(path, arch="resnet18")


def test_save_validates_inputs(tmp_path: Path) -> None:
    bb = build_backbone("resnet_tiny", 4)
    with pytest.raises(ValueError, match="4 bands"):
        save_backbone(
            tmp_path / "x.pt",
            bb,
            arch="resnet_tiny",
            bands=BANDS[:3],
            mean=MEAN,
            std=STD,
            method="m",
        )
    with pytest.raises(ValueError, match="built as"):
        save_backbone(
            tmp_path / "x.pt", bb, arch="resnet18", bands=BANDS, mean=MEAN, std=STD, method="m"
        )
    with pytest.raises(TypeError, match="extra"):
        save_backbone(
            tmp_path / "x.pt",
            bb,
            arch="resnet_tiny",
            bands=BANDS,
            mean=MEAN,
            std=STD,
            method="m",
            extra={"t": object()},
        )


def test_bare_state_dict_needs_arch() -> None:
    bb = build_backbone("resnet_tiny", 2)
    with pytest.raises(ValueError, match="arch="):
        load_backbone(bb.state_dict())
    loaded, meta = load_backbone(bb.state_dict(), arch="resnet_tiny")
    assert meta == {"arch": "resnet_tiny", "in_channels": 2}
    assert torch.equal(loaded.conv1.weight, bb.conv1.weight)


def test_external_prefixed_moco_checkpoint(tmp_path: Path) -> None:
    src = build_backbone("resnet_tiny", 3)
    ckpt = {f"module.encoder_q.{k}": v for k, v in src.state_dict().items()}
    ckpt.update({f"module.encoder_k.{k}": v for k, v in src.state_dict().items()})
    ckpt["module.encoder_q.fc.weight"] = torch.zeros(10, 128)
    ckpt["module.queue"] = torch.zeros(128, 16)
    path = tmp_path / "moco.pth"
    torch.save({"state_dict": ckpt, "epoch": 200}, path)
    bb, report = load_external_state_dict(path, "resnet_tiny", 3)
    assert torch.equal(
        bb.state_dict()["layer4.0.conv2.weight"], src.state_dict()["layer4.0.conv2.weight"]
    )
    assert report.missing_keys == [] and report.unexpected_keys == [] and report.loaded_all
    assert (
        "module.encoder_q.fc.weight" in report.dropped_keys
        and "module.queue" in report.dropped_keys
    )
    assert any(k.startswith("module.encoder_k.") for k in report.dropped_keys)
    assert report.stripped_prefixes == ["module.", "encoder_q."]


@pytest.mark.parametrize("prefix", ["", "backbone.", "model.", "encoder."])
def test_external_plain_prefixes(prefix: str) -> None:
    src = build_backbone("resnet_tiny", 4)
    sd = {f"{prefix}{k}": v for k, v in src.state_dict().items()}
    sd[f"{prefix}fc.weight"] = torch.zeros(3, 128)
    sd[f"{prefix}fc.bias"] = torch.zeros(3)
    bb, report = load_external_state_dict(sd, "resnet_tiny", 4)
    assert torch.equal(bb.conv1.weight, src.conv1.weight)
    assert report.missing_keys == [] and {f"{prefix}fc.weight", f"{prefix}fc.bias"} <= set(
        report.dropped_keys
    )


def test_external_sequential_numbering_as_in_seco_reference() -> None:
    src = build_backbone("resnet_tiny", 3)
    index = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
    sd = {}
    for k, v in src.state_dict().items():
        head, _, rest = k.partition(".")
        sd[f"encoder_q.{index[head]}.{rest}"] = v
    sd["heads_q.0.0.weight"] = torch.zeros(128, 128)
    bb, report = load_external_state_dict({"state_dict": sd}, "resnet_tiny", 3)
    assert torch.equal(
        bb.state_dict()["layer3.0.downsample.0.weight"],
        src.state_dict()["layer3.0.downsample.0.weight"],
    )
    assert report.missing_keys == [] and "heads_q.0.0.weight" in report.dropped_keys


def test_external_errors(tmp_path: Path) -> None:
    rgb = build_backbone("resnet_tiny", 3).state_dict()
    with pytest.raises(ValueError, match=r"conv1 takes 3 input bands.*in_channels=4"):
        load_external_state_dict(rgb, "resnet_tiny", 4)
    with pytest.raises(ValueError, match="does not fit 'resnet18'"):
        load_external_state_dict(rgb, "resnet18", 3)
    with pytest.raises(ValueError, match="no checkpoint entry matches"):
        load_external_state_dict({"foo.weight": torch.zeros(2)}, "resnet_tiny", 3)
    partial = {k: v for k, v in rgb.items() if not k.startswith("layer4")}
    _, report = load_external_state_dict(partial, "resnet_tiny", 3)
    assert report.missing_keys and all(k.startswith("layer4") for k in report.missing_keys)


def test_external_pickled_checkpoint_needs_trust(tmp_path: Path) -> None:
    path = tmp_path / "lightning.ckpt"
    torch.save(
        {
            "state_dict": build_backbone("resnet_tiny", 3).state_dict(),
            "hparams": argparse.Namespace(lr=0.1),
        },
        path,
    )
    with pytest.raises(ValueError, match="trust_pickle"):
        load_external_state_dict(path, "resnet_tiny", 3)
    bb, report = load_external_state_dict(path, "resnet_tiny", 3, trust_pickle=True)
    assert report.loaded_all


RAN: list[str] = []


def _mark_ran(what: str) -> None:
    RAN.append(what)


class _Payload:
    """Stands for any class a malicious checkpoint could make torch.load import and call."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_mark_ran, ("code ran",))


def test_trust_pickle_still_refuses_arbitrary_globals(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": build_backbone("resnet_tiny", 3).state_dict(), "x": _Payload()}, path)
    with pytest.raises(ValueError, match=r"_mark_ran'\], which earthloop does not rebuild"):
        load_external_state_dict(path, "resnet_tiny", 3, trust_pickle=True)
    assert RAN == []
