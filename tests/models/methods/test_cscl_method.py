"""CSCL module: outputs, fine-tuning model, a few optimisation steps."""

from typing import Any

import pytest
import torch
from earthloop.models.backbones import build_backbone
from earthloop.models.methods.cscl import CSCL
from earthloop.models.unet import UNet


def tiny(**kw: Any) -> CSCL:
    torch.manual_seed(0)
    return CSCL(UNet(build_backbone("resnet_tiny", 3)), dim=16, kernel_size=3, **kw)


def test_forward_outputs_and_parts() -> None:
    m = tiny(dilation=2)
    out = m({"image": torch.randn(2, 3, 32, 32), "label": torch.randint(0, 3, (2, 32, 32))})
    assert out["loss"].ndim == 0 and out["loss"].requires_grad
    assert out["embedding"].shape == (2, 128)
    assert -1.0 <= float(out["sim_neg"]) <= 1.0 and -1.0 <= float(out["sim_pos"]) <= 1.0
    assert m.encoder is m.unet.encoder and m.decoder is m.unet.decoder and m.backbone is m.encoder
    assert m.similarity.rel_pos.shape == (9, 16)


def test_segmentation_model_reuses_the_pretrained_unet() -> None:
    m = tiny()
    seg = m.segmentation_model(num_classes=4)
    assert seg.unet is m.unet
    logits = seg(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 4, 32, 32)
    assert not any(k.startswith("similarity") for k in seg.state_dict())


def test_accepts_a_bare_backbone() -> None:
    m = CSCL(build_backbone("resnet_tiny", 3), dim=8, kernel_size=3)
    assert isinstance(m.unet, UNet) and m.unet.out_channels == 8
    assert (
        m({"image": torch.randn(2, 3, 32, 32), "label": torch.randint(0, 3, (2, 32, 32))})[
            "loss"
        ].ndim
        == 0
    )


def test_label_shape_checked() -> None:
    with pytest.raises(ValueError, match="label"):
        tiny()(
            {"image": torch.randn(2, 3, 32, 32), "label": torch.zeros(2, 16, 16, dtype=torch.long)}
        )


def test_few_steps_reduce_the_loss() -> None:
    m = tiny(ignore_index=-1)
    image = torch.randn(2, 3, 32, 32)
    label = torch.zeros(2, 32, 32, dtype=torch.long)
    label[:, :, 16:] = 1
    label[:, :4] = -1  # an unlabelled strip
    opt = torch.optim.Adam(m.trainable_parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        loss = m({"image": image, "label": label})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # the loss lives in [-w, 1] and starts near 0 (random embeddings are nearly orthogonal)
    assert losses[-1] < losses[0] - 0.02, losses
