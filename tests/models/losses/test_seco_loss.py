"""SeCo: which key is the positive of each subspace, and which keys are extra negatives."""

import math

import pytest
import torch
from earthloop.models.losses.seco import (
    KEY_AUGMENTATION,
    KEY_SEASON,
    KEY_SEASON_AND_AUGMENTATION,
    seco_loss,
)

D = 5
E = torch.eye(D)


def grid(aligned: dict[int, int]) -> list[list[torch.Tensor]]:
    """keys[i][j] for B=1: in subspace i key ``aligned[i]`` equals e0 (the query), others e1, e2."""
    out = []
    for i in range(3):
        others = iter([E[1], E[2]])
        out.append([E[0][None] if j == aligned[i] else next(others)[None] for j in range(3)])
    return out


def terms(keys: list[list[torch.Tensor]]) -> list[float]:
    queries = [E[0][None]] * 3
    queues = [E[3][None]] * 3  # one queue negative, orthogonal to the query
    out = seco_loss(queries, keys, queues, temperature=1.0)
    assert out["loss"].item() == pytest.approx(
        sum(out[f"loss_subspace{i}"].item() for i in range(3))
    )
    return [out[f"loss_subspace{i}"].item() for i in range(3)]


def test_key_indices_follow_the_paper() -> None:
    assert (KEY_SEASON_AND_AUGMENTATION, KEY_SEASON, KEY_AUGMENTATION) == (0, 1, 2)


def test_right_positive_gives_lowest_loss_in_each_subspace() -> None:
    right = terms(grid({0: 0, 1: 1, 2: 2}))
    # subspace 0: positive k0, only the queue is negative: logits [1, 0]
    assert right[0] == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    # subspaces 1, 2: positive plus queue plus the two other keys: logits [1, 0, 0, 0]
    assert right[1] == pytest.approx(math.log(1 + 3 * math.exp(-1)), abs=1e-6)
    assert right[2] == pytest.approx(math.log(1 + 3 * math.exp(-1)), abs=1e-6)
    for wrong in (0, 1, 2):
        for i in range(3):
            if wrong == i:
                continue
            aligned = {0: 0, 1: 1, 2: 2}
            aligned[i] = wrong
            assert terms(grid(aligned))[i] > right[i] + 0.3, (i, wrong)


def test_subspace1_negatives_are_the_augmented_keys() -> None:
    # In subspace 1 (season-invariant), a query-like k0 or k2 (augmentation changed) hurts ...
    base = terms(grid({0: 0, 1: 1, 2: 2}))[1]
    keys = grid({0: 0, 1: 1, 2: 2})
    keys[1][KEY_AUGMENTATION] = E[0][None].clone()
    # logits [1 (positive), 0 (queue), 0 (k0), 1 (k2)] -> log(2 + 2/e)
    assert terms(keys)[1] == pytest.approx(math.log(2 + 2 * math.exp(-1)), abs=1e-6)
    assert terms(keys)[1] > base
    # ... while subspace 0 ignores keys k1, k2 entirely
    keys = grid({0: 0, 1: 1, 2: 2})
    keys[0][KEY_SEASON] = E[0][None].clone()
    keys[0][KEY_AUGMENTATION] = E[0][None].clone()
    assert terms(keys)[0] == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_subspace2_negatives_are_the_other_date_keys() -> None:
    base = terms(grid({0: 0, 1: 1, 2: 2}))[2]
    keys = grid({0: 0, 1: 1, 2: 2})
    keys[2][KEY_SEASON] = E[0][None].clone()
    assert terms(keys)[2] == pytest.approx(math.log(2 + 2 * math.exp(-1)), abs=1e-6)
    assert terms(keys)[2] > base


def test_extra_negatives_come_from_the_whole_batch() -> None:
    # B=2: the other location's season key (in subspace 2) is a negative for query 0 as well
    q = [torch.stack([E[0], E[4]])] * 3
    keys = [
        [torch.stack([E[0], E[4]]) if j == i else torch.stack([E[1], E[2]]) for j in range(3)]
        for i in range(3)
    ]
    before = seco_loss(q, keys, None, temperature=1.0)["loss_subspace2"].item()
    keys[2][KEY_SEASON] = torch.stack(
        [E[1], E[0]]
    )  # location 1's season key now looks like query 0
    after = seco_loss(q, keys, None, temperature=1.0)["loss_subspace2"].item()
    assert after > before


def test_accuracy_and_shape_errors() -> None:
    out = seco_loss([E[0][None]] * 3, grid({0: 0, 1: 1, 2: 2}), [E[3][None]] * 3, temperature=1.0)
    assert [out[f"acc_subspace{i}"].item() for i in range(3)] == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="3 query"):
        seco_loss([E[0][None]] * 2, grid({0: 0, 1: 1, 2: 2}))
