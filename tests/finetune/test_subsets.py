"""Nested, stratified, deterministic label subsets and the zero-class check."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from earthloop.finetune.data import Pool, Sample
from earthloop.finetune.subsets import (
    EmptyClassError,
    check_class_coverage,
    nested_stratified_subset,
    subset_sizes,
)

FRACTIONS = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0]


def _pool_ids() -> tuple[list[str], list[int]]:
    # 300 samples over 4 classes of very different sizes: 200 / 70 / 25 / 5
    strata = [0] * 200 + [1] * 70 + [2] * 25 + [3] * 5
    ids = [f"chip-{i:04d}" for i in range(len(strata))]
    return ids, strata


def test_subsets_are_nested_for_every_seed() -> None:
    ids, strata = _pool_ids()
    for seed in (0, 1, 7):
        prev: set[int] = set()
        for f in FRACTIONS:
            cur = set(nested_stratified_subset(ids, strata, f, seed))
            assert prev <= cur, f"seed {seed}: subset at {f} does not contain the smaller one"
            prev = cur
        assert prev == set(range(len(ids)))  # fraction 1 is the whole pool


def test_stratified_ceil_per_class_without_replacement() -> None:
    ids, strata = _pool_ids()
    for f in FRACTIONS:
        idx = nested_stratified_subset(ids, strata, f, seed=3)
        assert len(idx) == len(set(idx))  # nothing drawn twice
        counts = Counter(strata[i] for i in idx)
        for c, n in Counter(strata).items():
            assert counts[c] == math.ceil(round(f * n, 9)), (f, c)
    # at 1 % even the 5-sample class keeps one sample
    assert Counter(strata[i] for i in nested_stratified_subset(ids, strata, 0.01, 0))[3] == 1


def test_deterministic_and_independent_of_input_order() -> None:
    ids, strata = _pool_ids()
    a = {ids[i] for i in nested_stratified_subset(ids, strata, 0.1, seed=5)}
    order = list(range(len(ids)))
    random.Random(0).shuffle(order)
    ids2, strata2 = [ids[i] for i in order], [strata[i] for i in order]
    b = {ids2[i] for i in nested_stratified_subset(ids2, strata2, 0.1, seed=5)}
    assert a == b
    c = {ids[i] for i in nested_stratified_subset(ids, strata, 0.1, seed=6)}
    assert c != a  # another seed, another draw


def test_subset_sizes_rejects_bad_fraction_and_float_noise() -> None:
    assert subset_sizes({"a": 100}, 0.07) == {"a": 7}  # not 8 from 7.000000000000001
    with pytest.raises(ValueError, match="label fraction"):
        subset_sizes({"a": 1}, 0.0)
    with pytest.raises(ValueError, match="unique"):
        nested_stratified_subset(["a", "a"], [0, 0], 0.5, 0)


def _seg_pool() -> Pool:
    """Segmentation pool where 'water' (3) only ever appears as a minority class of one chip."""
    samples = [Sample(f"c{i:02d}", "train", 1, {1: 900, 2: 100}, {}) for i in range(30)]
    samples += [Sample(f"d{i:02d}", "train", 2, {2: 1000}, {}) for i in range(10)]
    samples.append(Sample("w00", "train", 2, {2: 990, 3: 34}, {}))
    samples += [Sample(f"v{i}", "val", 1, {1: 500, 3: 500}, {}) for i in range(3)]
    names = {1: "cropland", 2: "grassland", 3: "water"}
    return Pool("chips", "segmentation", ["B02"], [1, 2, 3], names, 4, 0, samples)


def test_zero_class_error_names_class_and_fraction() -> None:
    pool = _seg_pool()
    with pytest.raises(EmptyClassError) as err:
        for seed in range(20):  # some seed's 10 % draw of grassland misses the water chip
            pool.check_subset(0.1, seed)
    msg = str(err.value)
    assert "'water'" in msg and "0.1" in msg and "allow_missing_classes" in msg
    assert len(pool.check_subset(1.0, 0)) == 41  # the whole pool has water


def test_min_class_pixels_threshold() -> None:
    pool = _seg_pool()
    # 34 water pixels in the whole train split: below the threshold the class does not count
    # as present, so no subset is required to keep it
    assert 3 not in pool.required_classes(min_count=100)
    assert len(pool.check_subset(0.1, 0, min_count=100)) == 5
    pool.samples.append(Sample("w01", "train", 2, {2: 500, 3: 524}, {}))
    assert 3 in pool.required_classes(min_count=100)
    pool.check_subset(1.0, 0, min_count=100)  # everything: 558 water pixels
    with pytest.raises(EmptyClassError, match="water"):
        for seed in range(20):
            pool.check_subset(0.1, seed, min_count=100)


def test_check_class_coverage_lists_every_missing_class() -> None:
    with pytest.raises(EmptyClassError) as err:
        check_class_coverage({1: 3}, [1, 2, 5], 0.01, {2: "urban"})
    assert "'urban' (id 2)" in str(err.value) and "'5' (id 5)" in str(err.value)
    check_class_coverage({1: 3, 2: 1}, [1, 2], 0.01)  # nothing missing: no error
