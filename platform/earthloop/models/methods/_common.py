"""Helpers shared by the pretraining methods (date selection, default augmentations)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from earthloop.models.transforms import (
    BrightnessContrast,
    Compose,
    GaussianNoise,
    RandomApply,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRot90,
    RandomVerticalFlip,
    Transform,
)

DATE_SAMPLING = ("random", "first")


def make_generator(seed: int | None) -> torch.Generator | None:
    """A private CPU generator when seeded (reproducible augmentation), else the global RNG.

    Under data parallelism pass a different seed per rank (e.g. ``seed + rank``), otherwise every
    rank draws the same dates and augmentations for its (different) samples.
    """
    return None if seed is None else torch.Generator().manual_seed(seed)


def check_time_series(images: Tensor, min_dates: int, name: str = "images") -> None:
    if images.ndim != 5:
        raise ValueError(f"batch[{name!r}] must be (B, T, C, H, W), got {tuple(images.shape)}")
    if images.shape[1] < min_dates:
        raise ValueError(
            f"batch[{name!r}] needs T >= {min_dates} dates per location, got T={images.shape[1]}"
        )


def select_dates(
    batch_size: int, num_dates: int, k: int, mode: str, generator: torch.Generator | None
) -> Tensor:
    """``(B, k)`` distinct date indices per location: random, or the first ``k``."""
    if mode not in DATE_SAMPLING:
        raise ValueError(f"date_sampling must be one of {DATE_SAMPLING}, got {mode!r}")
    if mode == "first":
        return torch.arange(k).expand(batch_size, k).clone()
    return torch.stack(
        [torch.randperm(num_dates, generator=generator)[:k] for _ in range(batch_size)]
    )


def crop_for(size: int, factors: Sequence[int]) -> Transform:
    """An integer ``RandomResizedCrop`` to ``size``, keeping only zoom factors that divide it."""
    usable = [f for f in factors if f >= 1 and size % f == 0] or [1]
    return RandomResizedCrop(size, usable)


def default_geometric() -> Transform:
    """Flips and 90-degree rotations: nadir imagery has no preferred orientation."""
    return Compose([RandomHorizontalFlip(), RandomVerticalFlip(), RandomRot90()])


def default_photometric() -> Transform:
    """Multispectral stand-in for MoCo-v2's colour jitter (p=0.8) plus sensor-like noise (p=0.5)."""
    return Compose(
        [
            RandomApply(BrightnessContrast(0.2, 0.2, per_band=True), p=0.8),
            RandomApply(GaussianNoise(0.05), p=0.5),
        ]
    )
