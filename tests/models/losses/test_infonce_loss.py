"""InfoNCE against hand-computed values."""

import math

import pytest
import torch
from earthloop.models.losses.infonce import info_nce, info_nce_in_batch, info_nce_logits

E0, E1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])


def test_one_negative() -> None:
    # logits [1, 0] / t; loss = -log(e^(1/t) / (e^(1/t) + 1)) = log(1 + e^(-1/t))
    loss = info_nce(E0[None], E0[None], E1[None], temperature=1.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    loss = info_nce(E0[None], E0[None], E1[None], temperature=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)


def test_two_negatives_and_normalisation() -> None:
    # negatives e1 and -e0: logits [1, 0, -1] -> log(1 + e^-1 + e^-2); inputs are rescaled first
    loss = info_nce(3 * E0[None], 0.5 * E0[None], torch.stack([2 * E1, -E0]), temperature=1.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1) + math.exp(-2)), abs=1e-6)


def test_per_query_negatives_and_reduction() -> None:
    q = torch.stack([E0, E1])
    pos = torch.stack([E0, E1])
    negs = torch.stack([torch.stack([E1]), torch.stack([E1])])  # (N=2, M=1, D)
    per = info_nce(q, pos, negs, temperature=1.0, reduction="none")
    # query 0: logits [1, 0]; query 1: its negative equals its positive: logits [1, 1] -> log 2
    assert per.tolist() == pytest.approx([math.log(1 + math.exp(-1)), math.log(2)], abs=1e-6)
    logits = info_nce_logits(q, pos, negs, temperature=0.5)
    torch.testing.assert_close(logits, torch.tensor([[2.0, 0.0], [2.0, 2.0]]))


def test_in_batch_and_exclusion() -> None:
    q = torch.stack([E0, E1])
    base = math.log(1 + math.exp(-1))
    assert info_nce_in_batch(q, q, temperature=1.0).item() == pytest.approx(base, abs=1e-6)
    exclude = torch.tensor([[False, True], [False, False]])  # drop key 1 from query 0's negatives
    loss = info_nce_in_batch(q, q, temperature=1.0, exclude=exclude, reduction="none")
    assert loss.tolist() == pytest.approx([0.0, base], abs=1e-6)
    # the diagonal is never excluded
    assert torch.isfinite(info_nce_in_batch(q, q, exclude=torch.ones(2, 2, dtype=torch.bool))).all()


def test_gradient_pulls_query_to_positive() -> None:
    q = torch.tensor([[1.0, 1.0]], requires_grad=True)
    info_nce(q, E0[None], E1[None], temperature=0.1).backward()
    assert q.grad is not None and q.grad[0, 0] < 0 < q.grad[0, 1]


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="temperature"):
        info_nce(E0[None], E0[None], temperature=0.0)
    with pytest.raises(ValueError, match="negatives"):
        info_nce(E0[None], E0[None], torch.zeros(1, 1, 1, 2))
