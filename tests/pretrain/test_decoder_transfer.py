"""What dense contrast and CSCL pretrain in the U-Net decoder reaches the fine-tuning model.

The path is the production one: a pretraining checkpoint -> ``runner.export_backbone`` ->
``finetune.model.resolve_init`` / ``build_encoder`` -> ``TaskModel``. A backbone-only export
(SeCo) still gives a fresh decoder; the files load with ``weights_only=True``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from earthloop.checkpoints import save_checkpoint
from earthloop.config import InitSpec, PretrainConfig, load_config
from earthloop.finetune.model import build_encoder, resolve_init
from earthloop.models import UNet, load_backbone, load_unet
from earthloop.models.task import TaskModel
from earthloop.pretrain.engine import Engine, Schedule
from earthloop.pretrain.methods import build_method
from earthloop.pretrain.runner import PretrainPlan, export_backbone

BANDS = ["B02", "B03", "B04", "B08"]


def _export(tmp_path: Path, method_name: str) -> tuple[Path, dict[str, torch.Tensor]]:
    """Pretraining export of a method whose weights were perturbed (so 'restored' means it)."""
    pc = PretrainConfig(
        method=method_name, backbone="resnet_tiny", queue_size=16, cscl_labelled_chips=["c"]
    )
    torch.manual_seed(0)
    method = build_method(pc, len(BANDS))
    with torch.no_grad():
        for p in method.model.parameters():
            p.add_(torch.randn_like(p))
    engine = Engine(
        method,
        Schedule(epochs=1),
        mean=torch.zeros(4),
        std=torch.ones(4),
        device=torch.device("cpu"),
        batch_size=2,
    )
    ckpt = tmp_path / f"ckpt-{method_name}"
    ckpt.mkdir()
    save_checkpoint(ckpt, engine.training_state(engine.pos, {}, 0, []), {"step": 0})
    cfg = load_config(None, [f"workdir={tmp_path}"])
    plan = PretrainPlan(cfg, pc, type(method), BANDS, f"run-{method_name}", "", "", None)
    out = tmp_path / f"{method_name}.pt"
    export_backbone(str(ckpt), plan, [0.1] * 4, [1.0] * 4, str(out))
    return out, {k: v.clone() for k, v in method.model.state_dict().items()}


@pytest.mark.parametrize("name", ["dense", "cscl"])
def test_decoder_weight_survives_from_pretraining_into_fine_tuning(
    tmp_path: Path, name: str
) -> None:
    path, pretrained = _export(tmp_path, name)
    init = resolve_init(InitSpec(name=name, path=str(path)), "resnet_tiny", BANDS)
    assert init.decoder and init.method == name
    start = build_encoder(init)
    assert isinstance(start, UNet)
    model = TaskModel("segmentation", start, 5, frozen=False)
    tuned = model.state_dict()
    # a weight deep in the decoder and one in the encoder come back exactly
    dec_key = "unet.decoder.blocks.4.block.3.weight"
    assert torch.equal(tuned[f"net.{dec_key}"], pretrained[dec_key])
    assert torch.equal(
        tuned["net.unet.encoder.conv1.weight"], pretrained["unet.encoder.conv1.weight"]
    )
    # every decoder tensor, BN statistics included, is the pretrained one
    decoder = {k: v for k, v in pretrained.items() if k.startswith("unet.decoder.")}
    assert decoder and all(torch.equal(tuned[f"net.{k}"], v) for k, v in decoder.items())
    # only the output layer is new; the method's own heads are not part of the task model
    new = {k.removeprefix("net.") for k in tuned} - set(pretrained)
    assert new and all(k.startswith("head.") for k in new), new
    # classification takes the pretrained encoder alone
    clf = TaskModel("classification", build_encoder(init), 3, frozen=True)
    assert torch.equal(clf.encoder.conv1.weight, pretrained["unet.encoder.conv1.weight"])


def test_backbone_only_export_still_loads_with_a_fresh_decoder(tmp_path: Path) -> None:
    path, pretrained = _export(tmp_path, "seco")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["format_version"] == 1 and "decoder_state_dict" not in payload
    init = resolve_init(InitSpec(name="seco", path=str(path)), "resnet_tiny", BANDS)
    assert not init.decoder
    encoder = build_encoder(init)
    assert not isinstance(encoder, UNet)
    assert torch.equal(encoder.conv1.weight, pretrained["backbone.conv1.weight"])
    unet, meta = load_unet(path)
    assert meta["decoder_loaded"] is False and isinstance(unet, UNet)


def test_decoder_export_loads_with_weights_only_and_load_backbone(tmp_path: Path) -> None:
    path, _ = _export(tmp_path, "dense")
    payload = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code
    assert payload["format_version"] == 2 and payload["decoder_channels"]
    backbone, meta = load_backbone(path, expected_bands=BANDS, arch="resnet_tiny")
    assert (
        "decoder_state_dict" not in meta and meta["decoder_channels"] == payload["decoder_channels"]
    )
    # a decoder that does not fit its declared widths is a clear error, not a half-loaded model
    payload["decoder_channels"] = [c * 2 for c in payload["decoder_channels"]]
    with tempfile.TemporaryDirectory() as d:
        bad = Path(d) / "bad.pt"
        torch.save(payload, bad)
        with pytest.raises(ValueError, match="decoder does not fit"):
            load_unet(bad)
