"""SeCo module: view construction, momentum key encoder, queues, a few optimisation steps."""

from typing import Any

import pytest
import torch
from earthloop.models.augment import SeCoAugment
from earthloop.models.backbones import build_backbone
from earthloop.models.methods.seco import SeCo
from earthloop.models.transforms import Identity


def tiny(**kw: Any) -> SeCo:
    torch.manual_seed(0)
    kw.setdefault("seed", 0)
    return SeCo(build_backbone("resnet_tiny", 3), feature_dim=16, queue_size=16, **kw)


def test_defaults_follow_the_seco_reference() -> None:
    m = SeCo(build_backbone("resnet_tiny", 3))
    assert (m.temperature, m.momentum) == (0.07, 0.999)
    assert [q.queue.shape for q in m.subspace_queues()] == [(16384, 128)] * 3
    assert len(m.heads) == 3 and m.heads[0].hidden_dim == m.backbone.num_features
    assert SeCo.default_optimizer == "sgd"
    assert SeCo.default_optimizer_params == {"lr": 0.03, "momentum": 0.9, "weight_decay": 1e-4}


def test_views_without_augmentation_pick_the_right_dates() -> None:
    m = tiny(augment=Identity(), crop_factors=(1,), date_sampling="first")
    x = torch.randn(2, 4, 3, 32, 32)
    q, (k0, k1, k2) = m.make_views(x)
    assert torch.equal(q, x[:, 0])  # query: t0
    assert torch.equal(k0, x[:, 1])  # season + augmentation key: t1
    assert torch.equal(k1, x[:, 2])  # season-only key: t2
    assert torch.equal(k2, x[:, 0])  # augmentation-only key: t0


def test_season_key_replays_the_query_augmentation() -> None:
    m = tiny(date_sampling="first")
    assert isinstance(m.augment, SeCoAugment)  # the reference recipe by default
    base = torch.randn(2, 1, 3, 32, 32)
    x = torch.cat([base, torch.randn_like(base), base], dim=1)  # t2 shows what t0 shows
    q, (k0, k1, k2) = m.make_views(x)
    # the season-only key replays the query's crop, flips and colour: only the date may differ
    torch.testing.assert_close(k1, q)
    assert not torch.allclose(k2, q)  # same date, different augmentation
    assert q.shape == k0.shape == (2, 3, 32, 32)
    # independent crops: same colour parameters, another crop
    m2 = tiny(date_sampling="first", independent_crops=True)
    q2, (_, k1b, _) = m2.make_views(x)
    assert not torch.allclose(k1b, q2)


def test_forward_outputs_and_queue_updates() -> None:
    m = tiny()
    key_before = m.key_backbone.conv1.weight.clone()
    with torch.no_grad():
        m.backbone.conv1.weight.add_(1.0)
    out = m({"images": torch.randn(4, 3, 3, 32, 32)})
    assert set(out) >= {
        "loss",
        "loss_subspace0",
        "loss_subspace1",
        "loss_subspace2",
        "embedding",
        "projection",
    }
    assert out["loss"].ndim == 0 and out["loss"].requires_grad
    assert out["embedding"].shape == (4, 128) and not out["embedding"].requires_grad
    assert out["projection"].shape == (4, 16)
    assert all(int(q.ptr) == 4 for q in m.subspace_queues())
    torch.testing.assert_close(
        m.key_backbone.conv1.weight, key_before * 0.999 + (key_before + 1.0) * 0.001
    )
    assert not any(p.requires_grad for p in m.key_backbone.parameters())
    assert {id(p) for p in m.trainable_parameters()}.isdisjoint(
        {id(p) for p in m.key_backbone.parameters()}
    )
    # eval mode: neither the queues nor the key encoder move
    m.eval()
    queues = [q.queue.clone() for q in m.subspace_queues()]
    key_w = m.key_backbone.conv1.weight.clone()
    m({"images": torch.randn(4, 3, 3, 32, 32)})
    assert all(torch.equal(a, q.queue) for a, q in zip(queues, m.subspace_queues(), strict=True))
    assert torch.equal(key_w, m.key_backbone.conv1.weight)
    assert "queues.0.queue" in m.state_dict()


def test_needs_three_dates() -> None:
    with pytest.raises(ValueError, match="T >= 3"):
        tiny()({"images": torch.randn(2, 2, 3, 32, 32)})


def test_few_steps_reduce_the_loss() -> None:
    m = tiny(momentum=0.9)
    x = torch.randn(4, 3, 3, 32, 32)
    fixed = [q.queue.clone() for q in m.subspace_queues()]
    opt = torch.optim.Adam(m.trainable_parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        # same views and same negatives every step: a fixed objective to descend
        assert m.generator is not None
        m.generator.manual_seed(0)
        for q, f in zip(m.subspace_queues(), fixed, strict=True):
            q.queue.copy_(f)
            q.ptr.zero_()
        loss = m({"images": x})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
