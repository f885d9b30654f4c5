"""CSCL targets and loss on a 3x3 label map counted by hand."""

import pytest
import torch
from earthloop.models.losses.cscl import cscl_loss, cscl_targets

# label map (0 = unlabelled / ignore):
#   1 1 2
#   1 2 2
#   0 2 2
LABELS = torch.tensor([[[1, 1, 2], [1, 2, 2], [0, 2, 2]]])

# Hand count with a 3x3 window (dilation 1), per valid query pixel: (positives, negatives), where
# out-of-image slots are negatives and the unlabelled neighbour (2,0) is not counted:
#   (0,0): P3 N6   (0,1): P3 N6   (0,2): P3 N6
#   (1,0): P3 N5   (1,1): P5 N3   (1,2): P5 N4
#   (2,1): P4 N4   (2,2): P4 N5        -> P = 30, N = 39, pairs = 69
P, N = 30, 39


def test_targets_counted_by_hand() -> None:
    y, mask = cscl_targets(LABELS, 3, 1, ignore_index=0)
    assert y.shape == mask.shape == (1, 9, 3, 3)
    assert int((y & mask).sum()) == P and int((~y & mask).sum()) == N
    # centre pixel (1,1), label 2: window slots row-major over rows 0..2, cols 0..2
    assert y[0, :, 1, 1].tolist() == [False, False, True, False, True, True, False, True, True]
    assert mask[0, :, 1, 1].tolist() == [True] * 6 + [False] + [True] * 2  # slot 6 is the 0 label
    # the unlabelled pixel itself contributes nothing
    assert not mask[0, :, 2, 0].any()
    # corner (0,0): five slots fall outside the image and are counted as negatives
    assert mask[0, :, 0, 0].all() and int(y[0, :, 0, 0].sum()) == 3


def test_loss_formula_constant_similarity() -> None:
    s = torch.full((1, 9, 3, 3), 0.5)
    w = 0.125
    expected = 0.5 * (-w * P + N) / (P + N)
    assert cscl_loss(s, LABELS, kernel_size=3, pos_weight=w).item() == pytest.approx(
        expected, abs=1e-6
    )


def test_loss_formula_perfect_similarity() -> None:
    y, _ = cscl_targets(LABELS, 3)
    s = y.float() * 2 - 1  # +1 for same class, -1 otherwise
    expected = (-0.125 * P - N) / (P + N)
    assert cscl_loss(s, LABELS, kernel_size=3).item() == pytest.approx(expected, abs=1e-6)


def test_dilation_window_out_of_image() -> None:
    # with dilation 2 on a 3x3 map, the centre pixel's only in-image slot is itself
    y, mask = cscl_targets(LABELS, 3, 2, ignore_index=0)
    assert mask[0, :, 1, 1].all()
    assert y[0, :, 1, 1].tolist() == [False] * 4 + [True] + [False] * 4


def test_ignore_index_minus_one_makes_zero_a_class() -> None:
    y, mask = cscl_targets(LABELS, 3, 1, ignore_index=-1)
    assert int(mask.sum()) == 9 * 9
    # out-of-image neighbours are not "label 0" even though padding is zero
    assert int(y[0, :, 2, 0].sum()) == 1


def test_no_labelled_pixels_gives_zero_loss_with_grad() -> None:
    s = torch.rand(1, 9, 3, 3, requires_grad=True)
    loss = cscl_loss(s, torch.zeros(1, 3, 3, dtype=torch.long), kernel_size=3)
    loss.backward()
    assert loss.item() == 0.0
