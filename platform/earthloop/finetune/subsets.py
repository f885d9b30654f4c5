"""Nested, class-stratified label subsets: the x-axis of every label-efficiency curve.

Why nested: "1 % of the labels" must be a *subset* of "10 % of the labels" for the same seed,
otherwise the curve mixes the effect of more labels with the luck of a different draw, and a
point can dip below its left neighbour for no reason but sampling. Why stratified: at 1 % a
plain random draw often misses a class entirely, and the curve then measures class coverage, not
representation quality.

Construction (deterministic from ``seed``): the members of every stratum (class) are sorted by
sample id, permuted by a generator keyed by ``(seed, stratum)``, and the first
``ceil(fraction * n_c)`` are taken. ``ceil`` is monotone in the fraction, so subsets nest; every
stratum with members keeps at least one; nothing is drawn twice. The permutation of one class
does not depend on the other classes, so adding a class to the pool leaves the others' draws
untouched.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["EmptyClassError", "check_class_coverage", "nested_stratified_subset", "subset_sizes"]


class EmptyClassError(ValueError):
    """A label subset would train without any example of a class the evaluation contains."""


def _key(stratum: object) -> int:
    return zlib.crc32(str(stratum).encode())


def _members(ids: Sequence[str], strata: Sequence[object]) -> dict[object, list[int]]:
    if len(ids) != len(strata):
        raise ValueError(f"{len(ids)} ids but {len(strata)} strata")
    if len(set(ids)) != len(ids):
        raise ValueError("sample ids must be unique (a sample drawn twice is not a larger budget)")
    by: dict[object, list[int]] = {}
    for i, s in enumerate(strata):
        by.setdefault(s, []).append(i)
    for members in by.values():
        members.sort(key=lambda i: ids[i])
    return by


def subset_sizes(n_per_stratum: Mapping[object, int], fraction: float) -> dict[object, int]:
    """How many samples each stratum contributes at ``fraction`` (``ceil(f * n_c)``)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    # round first: 0.07 * 100 is 7.000000000000001 in floating point, and ceil would make it 8
    return {s: min(n, math.ceil(round(fraction * n, 9))) for s, n in n_per_stratum.items()}


def nested_stratified_subset(
    ids: Sequence[str], strata: Sequence[object], fraction: float, seed: int
) -> list[int]:
    """Indices (into ``ids``) of the ``fraction`` subset; sorted, nested across fractions."""
    by = _members(ids, strata)
    sizes = subset_sizes({s: len(m) for s, m in by.items()}, fraction)
    picked: list[int] = []
    for stratum, members in by.items():
        rng = np.random.default_rng([int(seed), _key(stratum)])
        order = rng.permutation(len(members))
        picked.extend(members[i] for i in order[: sizes[stratum]])
    return sorted(picked)


def check_class_coverage(
    counts: Mapping[int, float],
    required: Sequence[int],
    fraction: float,
    names: Mapping[int, str] | None = None,
    *,
    what: str = "labelled samples",
) -> None:
    """Raise :class:`EmptyClassError` naming every required class with no example in a subset."""
    empty = [c for c in required if counts.get(c, 0) <= 0]
    if not empty:
        return
    names = names or {}
    listed = ", ".join(f"{names.get(c, str(c))!r} (id {c})" for c in empty)
    raise EmptyClassError(
        f"label fraction {fraction:g} leaves {len(empty)} class(es) with zero {what}: {listed}. "
        "Raise the fraction, or set finetune.allow_missing_classes=true to train without them."
    )
