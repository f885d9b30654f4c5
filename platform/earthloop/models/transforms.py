"""Tensor augmentations that track where every output pixel came from.

Pixel-level contrast (Embedding Earth, dense pretraining) needs, for each pixel of one augmented
view, the pixel of the other view that shows the *same ground location*. Rather than inverting
interpolations, every geometric transform here is integer-exact (flips, 90-degree rotations,
integer crops, nearest-neighbour up-scaling by integer factors) and is applied to a
:class:`View`'s ``coords`` grid alongside the image: ``coords[:, y, x]`` is always the
(row, col) in the original, untransformed image. Correspondences are then a table look-up
(:func:`correspondence`), exact by construction.

Design:

* A :class:`Transform` splits into ``sample`` (draw parameters from a ``torch.Generator``) and
  ``apply`` (deterministic). ``sample_and_apply`` returns the parameters, so the same augmentation
  can be replayed on another image — SeCo's season-only key is "another date, same augmentation".
* Images may carry leading dims (``(C, H, W)`` or ``(T, C, H, W)``); geometry acts on the last two.
* Photometric transforms assume band-standardised input (zero mean, unit variance per band, as the
  stream delivers), so brightness is an additive shift in standard deviations and contrast a
  scaling about the per-band image mean. RGB-only augmentations from the ImageNet recipe
  (colour jitter hue/saturation, grayscale) have no meaning for 13 bands and are not provided.
* Gaussian noise is replayable because its parameters store a seed, not the noise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "BandDropout",
    "BrightnessContrast",
    "Compose",
    "GaussianNoise",
    "Identity",
    "Params",
    "RandomApply",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomRot90",
    "RandomVerticalFlip",
    "Transform",
    "View",
    "correspondence",
    "identity_coords",
]

Params = dict[str, Any]


def identity_coords(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """``(2, H, W)`` long grid whose ``[:, y, x]`` is ``(y, x)``."""
    rows = torch.arange(height, device=device).view(height, 1).expand(height, width)
    cols = torch.arange(width, device=device).view(1, width).expand(height, width)
    return torch.stack([rows, cols]).long()


@dataclass(frozen=True)
class View:
    """An image together with the ground coordinates of its pixels (and optional validity).

    ``image``: ``(..., C, H, W)`` float; ``coords``: ``(2, H, W)`` long, (row, col) in the original
    image; ``valid``: optional ``(H, W)`` bool (clouds, no-data), moved with the geometry.
    """

    image: Tensor
    coords: Tensor
    valid: Tensor | None = None

    @classmethod
    def from_image(cls, image: Tensor, valid: Tensor | None = None) -> View:
        h, w = int(image.shape[-2]), int(image.shape[-1])
        if valid is not None and tuple(valid.shape) != (h, w):
            raise ValueError(f"valid must be ({h}, {w}), got {tuple(valid.shape)}")
        return cls(image, identity_coords(h, w, image.device), valid)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[-2]), int(self.image.shape[-1])

    def map_spatial(self, fn: Callable[[Tensor], Tensor]) -> View:
        """Apply the same spatial function (acting on the last two dims) to every field."""
        return View(fn(self.image), fn(self.coords), None if self.valid is None else fn(self.valid))


def _uniform(generator: torch.Generator | None, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator | None, high: int) -> int:
    """Uniform integer in ``[0, high)``."""
    return int(torch.randint(high, (), generator=generator))


class Transform(ABC):
    """A replayable augmentation: ``sample`` parameters, then ``apply`` them deterministically."""

    @abstractmethod
    def sample(self, view: View, generator: torch.Generator | None = None) -> Params:
        """Draw this transform's random parameters for ``view``."""

    @abstractmethod
    def apply(self, view: View, params: Params) -> View:
        """Apply with fixed parameters (replay)."""

    def sample_and_apply(
        self, view: View, generator: torch.Generator | None = None
    ) -> tuple[View, Params]:
        params = self.sample(view, generator)
        return self.apply(view, params), params

    def __call__(self, view: View, generator: torch.Generator | None = None) -> View:
        return self.sample_and_apply(view, generator)[0]


class Identity(Transform):
    """No-op, e.g. to disable augmentation in a method."""

    def sample(self, view: View, generator: torch.Generator | None = None) -> Params:
        return {}

    def apply(self, view: View, params: Params) -> View:
        return view


class Compose(Transform):
    """Run transforms in order; parameters are the list of each step's parameters.

    Later steps' parameters depend on earlier outputs (a crop changes the size), so ``sample``
    alone is not defined for a composition: use ``sample_and_apply`` / ``__call__`` and ``apply``.
    """

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def sample(self, view: View, generator: torch.Generator | None = None) -> Params:
        raise TypeError("Compose parameters depend on intermediate views; use sample_and_apply")

    def sample_and_apply(
        self, view: View, generator: torch.Generator | None = None
    ) -> tuple[View, Params]:
        steps: list[Params] = []
        for t in self.transforms:
            view, p = t.sample_and_apply(view, generator)
            steps.append(p)
        return view, {"steps": steps}

    def apply(self, view: View, params: Params) -> View:
        steps = params["steps"]
        if len(steps) != len(self.transforms):
            raise ValueError("parameters were sampled for a different composition")
        for t, p in zip(self.transforms, steps, strict=True):
            view = t.apply(view, p)
        return view


class RandomApply(Transform):
    """Apply ``transform`` with probability ``p`` (the torchvision ``RandomApply`` idea)."""

    def __init__(self, transform: Transform, p: float = 0.5) -> None:
        self.transform, self.p = transform, p

    def sample(self, view: View, generator: torch.Generator | None = None) -> Params:
        raise TypeError(
            "RandomApply parameters depend on the inner transform; use sample_and_apply"
        )

    def sample_and_apply(
        self, view: View, generator: torch.Generator | None = None
    ) -> tuple[View, Params]:
        if _uniform(generator) >= self.p:
            return view, {"applied": False}
        out, inner = self.transform.sample_and_apply(view, generator)
        return out, {"applied": True, "inner": inner}

    def apply(self, view: View, params: Params) -> View:
        return self.transform.apply(view, params["inner"]) if params["applied"] else view


# --- geometry (integer-exact, coordinates tracked) ---------------------------------------------


class RandomHorizontalFlip(Transform):
    """Mirror left-right with probability ``p`` (overhead imagery has no canonical orientation)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def sample(self, view: View, generator: torch.Generator | None = None) -> Params:
        return {"flip": _uniform(generator) < self.p}

    def apply(self, view: View, params: Params) -> View:
        return view.map_spatial(lambda t: t.flip(-1)) if params["flip"] else view


class RandomVerticalFlip(Transform):
    """Mirror top-bottom with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def sample(self, view: View, generator: torch.Generator | None = None) -> Params:
        return {"flip": _uniform(generator) < self.p}

    def apply(self, view: View, params: Params) -> View:
        return view.map_spatial(lambda t: t.flip(-2)) if params["flip"] else view


class RandomRot90(Transform):
    """Rotate by ``k * 90`` degrees, ``k`` uniform in {0, 1, 2, 3} (needs square images to batch)."""

    def sample(self, view: View, generator: torch.Generator | None = None) -> Params:
        return {"k": _randint(generator, 4)}

    def apply(self, view: View, params: Params) -> View:
        k = int(params["k"]) % 4
        if k == 0:
            return view
        return view.map_spatial(lambda t: torch.rot90(t, k, dims=(-2, -1)))


def _crop(view: View, top: int, left: int, height: int, width: int) -> View:
    h, w = view.size
    if top < 0 or left < 0 or top + height > h or left + width > w:
        raise ValueError(f"crop {height}x{width}@({top},{left}) outside a {h}x{w} view")
    return view.map_spatial(lambda t: t[..., top : top + height, left : left + width])


def _upscale(view: View, factor: int) -> View:
    """Nearest-neighbour x``factor`` enlargement: every pixel becomes a ``factor``-square block."""
    if factor == 1:
        return view
    return view.map_spatial(
        lambda t: t.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    )


class RandomCrop(Transform):
    """Crop a random ``size x size`` window at integer offsets."""

    def __init__(self, size: int) -> None:
        self.size = size

    def sample(self, view: View, generator: torch.Generator | None = None) -> Params:
        h, w = view.size
        if self.size > h or self.size > w:
            raise ValueError(f"crop size {self.size} larger than the {h}x{w} view")
        return {
            "top": _randint(generator, h - self.size + 1),
            "left": _randint(generator, w - self.size + 1),
        }

    def apply(self, view: View, params: Params) -> View:
        return _crop(view, params["top"], params["left"], self.size, self.size)


class RandomResizedCrop(Transform):
    """Crop ``size // f`` square at a random integer offset, then nearest-upscale by ``f``.

    The integer analogue of torchvision's ``RandomResizedCrop``: zoom factors are drawn from
    ``factors`` (each must divide ``size``) so that the output is always ``size x size`` and every
    output pixel maps to exactly one input pixel. Factors whose crop would not fit are skipped.
    """

    def __init__(self, size: int, factors: Sequence[int] = (1, 2)) -> None:
        if not factors or any(f < 1 or size % f for f in factors):
            raise ValueError(
                f"every zoom factor must be >= 1 and divide size={size}, got {factors}"
            )
        self.size, self.factors = size, tuple(int(f) for f in factors)

    def sample(self, view: View, generator: torch.Generator | None = None) -> Params:
        h, w = view.size
        usable = [f for f in self.factors if self.size // f <= min(h, w)]
        if not usable:
            raise ValueError(f"no zoom factor of {self.factors} fits output {self.size} in {h}x{w}")
        f = usable[_randint(generator, len(usable))]
        c = self.size // f
        return {
            "factor": f,
            "top": _randint(generator, h - c + 1),
            "left": _randint(generator, w - c + 1),
        }

    def apply(self, view: View, params: Params) -> View:
        f = int(params["factor"])
        c = self.size // f
        return _upscale(_crop(view, params["top"], params["left"], c, c), f)


# --- photometric (coordinates untouched) --------------------------------------------------------


def _band_shape(image: Tensor) -> tuple[int, ...]:
    """Broadcast shape for one value per band of a ``(..., C, H, W)`` image."""
    return (int(image.shape[-3]), 1, 1)


class BrightnessContrast(Transform):
    """Per-band (or global) contrast scaling about the band mean plus an additive brightness shift.

    ``x' = (x - mean) * c + mean + b`` with ``c ~ U(1 - contrast, 1 + contrast)`` and
    ``b ~ U(-brightness, brightness)``. Per band by default: atmospheric and phenological changes
    act differently on each wavelength, which a single RGB-style factor cannot mimic.
    """

    def __init__(
        self, brightness: float = 0.2, contrast: float = 0.2, *, per_band: bool = True
    ) -> None:
        self.brightness, self.contrast, self.per_band = brightness, contrast, per_band

    def sample(self, view: View, generator: torch.Generator | None = None) -> Params:
        n = int(view.image.shape[-3]) if self.per_band else 1
        c = 1.0 + self.contrast * (2 * torch.rand(n, generator=generator) - 1)
        b = self.brightness * (2 * torch.rand(n, generator=generator) - 1)
        return {"contrast": c, "brightness": b}

    def apply(self, view: View, params: Params) -> View:
        img = view.image
        shape = _band_shape(img) if params["contrast"].numel() > 1 else (1, 1, 1)
        c = params["contrast"].to(img.device, img.dtype).view(shape)
        b = params["brightness"].to(img.device, img.dtype).view(shape)
        mean = img.mean(dim=(-2, -1), keepdim=True)
        return replace(view, image=(img - mean) * c + mean + b)


class GaussianNoise(Transform):
    """Additive N(0, std^2) noise (sensor noise); replayable because params keep the seed."""

    def __init__(self, std: float = 0.05) -> None:
        self.std = std

    def sample(self, view: View, generator: torch.Generator | None = None) -> Params:
        return {"seed": int(torch.randint(2**62, (), generator=generator))}

    def apply(self, view: View, params: Params) -> View:
        g = torch.Generator().manual_seed(int(params["seed"]))
        noise = torch.randn(view.image.shape, generator=g, dtype=view.image.dtype)
        return replace(view, image=view.image + self.std * noise.to(view.image.device))


class BandDropout(Transform):
    """Zero each band with probability ``p``, never all of them.

    Forces the encoder not to rely on one band (e.g. when a band is missing or saturated); the fill
    value 0 is the band mean of standardised input.
    """

    def __init__(self, p: float = 0.1, fill: float = 0.0) -> None:
        self.p, self.fill = p, fill

    def sample(self, view: View, generator: torch.Generator | None = None) -> Params:
        n = int(view.image.shape[-3])
        drop = torch.rand(n, generator=generator) < self.p
        if bool(drop.all()):
            drop[_randint(generator, n)] = False
        return {"drop": drop}

    def apply(self, view: View, params: Params) -> View:
        drop = params["drop"].to(view.image.device)
        if not bool(drop.any()):
            return view
        img = view.image.clone()
        img[..., drop, :, :] = self.fill
        return replace(view, image=img)


# --- correspondences ------------------------------------------------------------------------------


def correspondence(coords_a: Tensor, coords_b: Tensor, ground_size: tuple[int, int]) -> Tensor:
    """For each pixel of view A, the flat index ``y * W_b + x`` of the pixel in view B that shows the
    same ground location, or -1 where B does not contain it.

    ``coords_*``: ``(2, H, W)`` ground (row, col) grids of two views of an image of ``ground_size``.
    If several B pixels show the same ground pixel (B was up-scaled), one of them is returned;
    they carry identical input values.
    """
    gh, gw = ground_size
    flat_b = (coords_b[0] * gw + coords_b[1]).reshape(-1)
    lookup = torch.full((gh * gw,), -1, dtype=torch.long, device=coords_b.device)
    lookup[flat_b] = torch.arange(flat_b.numel(), device=coords_b.device)
    flat_a = coords_a[0] * gw + coords_a[1]
    return lookup[flat_a]
