"""Brush RLE: exact round trips and refusal of malformed streams (no server needed)."""

from __future__ import annotations

import numpy as np
import pytest
from earthloop.labelstudio.rle import RleError, decode, encode, mask_to_rle, rle_to_mask


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: np.zeros((64, 64), bool),
        lambda rng: np.ones((64, 48), bool),
        lambda rng: rng.random((64, 64)) > 0.5,  # many length-1 runs: literal blocks
        lambda rng: rng.random((300, 300)) > 0.999,  # runs longer than 65 536 bytes: split
    ],
)
def test_mask_round_trip_is_exact(make) -> None:  # type: ignore[no-untyped-def]
    mask = make(np.random.default_rng(0))
    assert np.array_equal(rle_to_mask(mask_to_rle(mask), *mask.shape), mask)


def test_any_byte_values_round_trip() -> None:
    values = np.random.default_rng(1).integers(0, 256, size=5000).astype(np.uint8)
    values[1000:3000] = 7
    assert np.array_equal(decode(encode(values)), values)


def test_alpha_threshold_reads_antialiased_strokes() -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3], rgba[1, 0, 3] = 255, 200, 100
    mask = rle_to_mask(encode(rgba), 2, 2)
    assert mask.tolist() == [[True, True], [False, False]]


def test_wrong_size_and_truncation_are_refused() -> None:
    rle = mask_to_rle(np.ones((8, 8), bool))
    with pytest.raises(RleError, match="8x9"):
        rle_to_mask(rle, 8, 9)
    noisy = mask_to_rle(np.random.default_rng(2).random((8, 8)) > 0.5)
    with pytest.raises(RleError, match="ends before"):
        rle_to_mask(noisy[: len(noisy) // 2], 8, 8)
    with pytest.raises(RleError):
        decode([1, 2, 300])
    with pytest.raises(RleError):
        decode(["a"] * 8)  # type: ignore[list-item]
