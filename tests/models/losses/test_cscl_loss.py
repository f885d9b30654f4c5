"""CSCL targets and loss on a 3x3 label map counted by hand."""

import pytest
import torch
from earthloop.models.losses.cscl import cscl_loss, cscl_targets

# label map (0 = unlabelled here, by an explicit ignore_index=0):
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
    loss = cscl_loss(s, LABELS, kernel_size=3, pos_weight=w, ignore_index=0)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_loss_formula_perfect_similarity() -> None:
    y, _ = cscl_targets(LABELS, 3, ignore_index=0)
    s = y.float() * 2 - 1  # +1 for same class, -1 otherwise
    expected = (-0.125 * P - N) / (P + N)
    loss = cscl_loss(s, LABELS, kernel_size=3, ignore_index=0)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


# Background (0) next to a parcel (1), 3x3 window:
#   0 0 1
#   0 1 1
# Every pixel is a query with 9 slots (54 pairs). Each pixel has exactly 3 same-label pixels in
# its window (itself included): P = 6 * 3 = 18, N = 54 - 18 = 36, of which the in-image
# background-vs-parcel pairs are (0,0):1 (0,1):3 (0,2):1 (1,0):1 (1,1):3 (1,2):1 = 10; the other
# 26 negatives are out-of-image slots.
BOUNDARY = torch.tensor([[[0, 0, 1], [0, 1, 1]]])


def test_background_is_a_class_by_default() -> None:
    y, mask = cscl_targets(BOUNDARY, 3, 1)
    inside = cscl_targets(torch.ones_like(BOUNDARY), 3, 1)[0]  # same label everywhere: in-image
    assert int(mask.sum()) == 54
    assert int((y & mask).sum()) == 18 and int((~y & mask).sum()) == 36
    assert int((~y & mask & inside).sum()) == 10  # parcel-vs-background pairs are contrasted
    # the background query (0,1) has its three parcel neighbours as negatives
    assert y[0, :, 0, 1].tolist() == [False, False, False, True, True, False, True, False, False]


def test_explicit_ignore_index_drops_the_background_pairs() -> None:
    y, mask = cscl_targets(BOUNDARY, 3, 1, ignore_index=0)
    inside = cscl_targets(torch.ones_like(BOUNDARY), 3, 1)[0]
    # parcel queries only: (0,2) P3 N5, (1,1) P3 N3, (1,2) P3 N5, and no in-image negative left
    assert int((y & mask).sum()) == 9 and int((~y & mask).sum()) == 13
    assert int((~y & mask & inside).sum()) == 0


def test_negative_labels_are_unlabelled() -> None:
    lab = BOUNDARY.clone()
    lab[0, 0, 0] = -1  # e.g. a cloudy pixel
    y, mask = cscl_targets(lab, 3, 1)
    assert not mask[0, :, 0, 0].any()
    # its neighbours no longer count the slot that points at it (slot 0 of (1,1) is (0,0))
    assert not bool(mask[0, 0, 1, 1]) and int(mask.sum()) == 54 - 9 - 3


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
    loss = cscl_loss(s, torch.full((1, 3, 3), -1, dtype=torch.long), kernel_size=3)
    loss.backward()
    assert loss.item() == 0.0
