"""A pretraining step never makes the host wait for the device.

On a GPU the host must queue step n+1 (its batch upload, its augmentation draws) while step n
runs; every read of a device value (``.item()``, ``bool()``, ``.tolist()``, a count to slice
by) and every blocking upload (a plain ``.to(device)`` of a host tensor) drains the queue
first. SeCo kept an H200 29 % busy and dense contrast 23 % (docs/benchmarks.md).

Without a GPU the step runs on PyTorch's ``meta`` device, which holds shapes and no data: any
read of a device value raises there. Blocking uploads are counted by a torch-function mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from earthloop.config import PretrainConfig
from earthloop.models.losses.dense import PaddedPairs, dense_info_nce
from earthloop.pretrain.engine import Engine, Hooks, LossTerms, Schedule
from earthloop.pretrain.methods import build_method
from sync_helpers import BlockingUploads

C = 4
META = torch.device("meta")


def _series(t: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "images": torch.rand(4, t, C, 32, 32, generator=g),
        "valid": torch.rand(4, t, 32, 32, generator=g) > 0.1,
    }


def _chips() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.rand(4, C, 32, 32, generator=g),
        "valid": torch.rand(4, 32, 32, generator=g) > 0.1,
        "label": torch.randint(0, 4, (4, 32, 32), generator=g),
    }


BATCHES: dict[str, Callable[[], dict[str, torch.Tensor]]] = {
    "seco": lambda: _series(3),
    "dense": lambda: _series(2),
    "cscl": _chips,
}


def _engine(name: str, device: torch.device, hooks: Hooks | None = None, **sched: Any) -> Engine:
    cfg = PretrainConfig(
        method=name, backbone="resnet_tiny", queue_size=16, cscl_labelled_chips=["c0"]
    )
    method = build_method(cfg, C, seed=0)
    method.model.to(device)
    return Engine(
        method,
        Schedule(**{"epochs": 1, **sched}),
        mean=torch.full((C,), 0.5),
        std=torch.full((C,), 0.3),
        device=device,
        batch_size=4,
        hooks=hooks,
    )


@pytest.mark.parametrize("name", sorted(BATCHES))
def test_a_step_reads_nothing_back_and_uploads_without_waiting(name: str) -> None:
    engine = _engine(name, META)
    with BlockingUploads() as uploads:
        for _ in range(2):  # the second step also meets a filled queue (SeCo)
            terms, samples = engine.step(BATCHES[name]())
    assert uploads.found == [], "blocking uploads:\n" + "\n".join(uploads.found)
    assert samples == 4 and "loss" in terms and not terms.is_read
    assert all(t.device == META for t in terms.tensors.values())


def test_the_detectors_catch_what_they_look_for() -> None:
    """The two checks above can fail: a host read raises on meta, a plain upload is counted."""
    x = torch.ones(3, device=META)
    with pytest.raises((RuntimeError, NotImplementedError)):
        bool(x.sum() > 0)
    with BlockingUploads() as uploads:
        torch.ones(3).to(META)
        torch.ones(3).to(META, non_blocking=True)
    assert len(uploads.found) == 1


class _Seen(Hooks):
    def __init__(self) -> None:
        self.terms: list[LossTerms] = []
        self.read_when_seen: list[bool] = []

    def after_step(self, engine: Engine, terms: LossTerms) -> None:
        self.terms.append(terms)
        self.read_when_seen.append(terms.is_read)

    def epoch_end(self, engine: Engine, metrics: dict[str, Any]) -> None:
        self.metrics = metrics


def _batches(n: int) -> Callable[[int], list[dict[str, torch.Tensor]]]:
    return lambda _epoch: [_series(3) for _ in range(n)]


def test_the_loop_reads_losses_only_when_due_and_the_epoch_mean_is_exact() -> None:
    torch.manual_seed(0)
    seen = _Seen()
    engine = _engine("seco", torch.device("cpu"), seen, loss_every_s=math.inf)
    engine.run(_batches(5))
    assert seen.read_when_seen == [False] * 5  # nothing in the loop read a step's terms
    # the epoch's mean comes from the sums kept on the device, read once at its end
    per_step = [t["loss"] for t in seen.terms]
    assert seen.metrics["loss"] == pytest.approx(sum(per_step) / 5, rel=1e-6)


def test_loss_every_zero_reads_every_step_for_the_gauges() -> None:
    torch.manual_seed(0)
    seen = _Seen()
    engine = _engine("seco", torch.device("cpu"), seen, loss_every_s=0.0)
    engine.run(_batches(3))
    assert seen.read_when_seen == [True] * 3
    assert engine.progress.fields["loss"] == seen.terms[-1]["loss"]


def test_loss_terms_read_in_one_go_and_never_on_membership() -> None:
    terms = LossTerms({"loss": torch.tensor(2.0), "loss_a": torch.tensor(0.5)})
    assert "loss" in terms and "x" not in terms and list(terms) == ["loss", "loss_a"]
    assert not terms.is_read
    assert terms.get("x", -1.0) == -1.0 and not terms.is_read  # a missing key reads nothing
    assert terms["loss_a"] == 0.5 and terms.is_read and dict(terms) == {"loss": 2.0, "loss_a": 0.5}


def test_padded_pairs_give_the_per_image_loss_exactly() -> None:
    """The batched path's padded pairs and the per-image lists they stand for: same loss."""
    g = torch.Generator().manual_seed(1)
    b, d, k = 3, 8, 5
    emb_a = torch.randn(b, d, 6, 6, generator=g, requires_grad=True)
    emb_b = torch.randn(b, d, 6, 6, generator=g, requires_grad=True)
    idx_a = torch.stack([torch.randperm(36, generator=g)[:k] for _ in range(b)])
    idx_b = torch.stack([torch.randperm(36, generator=g)[:k] for _ in range(b)])
    valid = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    padded = PaddedPairs(idx_a, idx_b, idx_a.clone(), valid)
    for negatives in ("other_images", "all"):
        lp, _, _ = dense_info_nce(emb_a, emb_b, padded, negatives=negatives)
        ll, _, _ = dense_info_nce(emb_a, emb_b, padded.per_image(), negatives=negatives)
        torch.testing.assert_close(lp, ll)
        ga = torch.autograd.grad(lp, emb_a)[0]
        gl = torch.autograd.grad(ll, emb_a)[0]
        torch.testing.assert_close(ga, gl)
    # one image with pairs and no other: no negative anywhere, a zero that still backpropagates
    alone = PaddedPairs(idx_a, idx_b, idx_a, torch.tensor([[1] * 5, [0] * 5, [0] * 5]).bool())
    loss, _, _ = dense_info_nce(emb_a, emb_b, alone)
    assert loss.item() == 0.0 and loss.requires_grad
