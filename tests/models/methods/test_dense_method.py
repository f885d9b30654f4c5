"""Dense contrastive module: outputs, validity masking, a few optimisation steps."""

from typing import Any

import pytest
import torch
from earthloop.models.backbones import build_backbone
from earthloop.models.methods.dense import DenseContrastive
from earthloop.models.unet import UNet


def tiny(**kw: Any) -> DenseContrastive:
    torch.manual_seed(0)
    return DenseContrastive(
        UNet(build_backbone("resnet_tiny", 3)), proj_dim=16, num_pixels=16, seed=0, **kw
    )


def test_forward_outputs() -> None:
    m = tiny()
    out = m({"images": torch.randn(2, 3, 3, 32, 32)})
    assert out["loss"].ndim == 0 and out["loss"].requires_grad
    assert out["embedding"].shape == (2, 128)
    n = int(out["num_pairs"])
    real = out["pixel_embedding"][out["pixel_valid"]]
    assert 0 < n <= 32 and real.shape == (n, 16)
    torch.testing.assert_close(real.norm(dim=1), torch.ones(n))
    assert m.backbone is m.unet.encoder


def test_all_invalid_pixels_give_no_pairs() -> None:
    m = tiny()
    out = m(
        {
            "images": torch.randn(2, 2, 3, 32, 32),
            "valid": torch.zeros(2, 2, 32, 32, dtype=torch.bool),
        }
    )
    assert int(out["num_pairs"]) == 0 and out["loss"].item() == 0.0
    out["loss"].backward()  # still a valid graph


def test_accepts_a_bare_backbone() -> None:
    m = DenseContrastive(build_backbone("resnet_tiny", 3), proj_dim=8, num_pixels=4, seed=0)
    assert isinstance(m.unet, UNet)
    assert m({"images": torch.randn(2, 2, 3, 32, 32)})["pixel_embedding"].shape[1] == 8


def test_batch_validation() -> None:
    with pytest.raises(ValueError, match="T >= 2"):
        tiny()({"images": torch.randn(2, 1, 3, 32, 32)})
    with pytest.raises(ValueError, match="valid"):
        tiny()(
            {
                "images": torch.randn(2, 2, 3, 32, 32),
                "valid": torch.ones(2, 32, 32, dtype=torch.bool),
            }
        )


def test_few_steps_reduce_the_loss() -> None:
    m = tiny()
    x = torch.randn(2, 2, 3, 32, 32)
    opt = torch.optim.Adam(m.trainable_parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        assert m.generator is not None
        m.generator.manual_seed(0)  # same views and pixels every step
        loss = m({"images": x})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses
