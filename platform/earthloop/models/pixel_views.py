"""Dense contrast's default two-view augmentation, done for a whole batch at once.

Why: the per-sample pipeline of :mod:`earthloop.models.transforms` (one crop, three geometric and
two photometric steps per image, then one pair sampling per image) is a few dozen small tensor
operations per sample. On a GPU at 64 px each is a kernel launch, so a batch of 64 spent most of
its step launching kernels: dense contrast kept an H200 23-25 % busy (docs/benchmarks.md). Here
the same recipe is a fixed number of batched operations whatever the batch size.

The recipe is :func:`earthloop.models.methods._common.crop_for` followed by
``default_geometric()`` and ``default_photometric()``, drawn per sample:

* integer zoom crop: factor ``f`` uniform over the factors that fit, a ``size/f`` square at a
  uniform integer offset, nearest-neighbour up-scaled by ``f`` (every output pixel shows exactly
  one input pixel, so correspondences are exact);
* horizontal flip p 0.5, vertical flip p 0.5, then ``k * 90`` degree rotation, ``k`` uniform;
* with p 0.8 per-band contrast ``U(0.8, 1.2)`` about the band mean plus brightness ``U(-0.2,
  0.2)``; with p 0.5 additive Gaussian noise of std 0.05.

The geometry is applied to a grid of ground coordinates and the images are then *gathered* at
those coordinates, which is the same map as applying crop, flips and rotation to the pixels.
The random numbers come from the generator in a different order than the per-sample pipeline
draws them, so a seed gives other (identically distributed) views than that pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from earthloop.models.losses.dense import PaddedPairs
from earthloop.models.on_device import device_generator, upload

__all__ = ["BatchViews", "PixelViewAugment", "sample_pixel_pairs_batched"]


@dataclass
class BatchViews:
    """``image`` (B, C, S, S); ``coords`` (B, 2, S, S) ground (row, col) of every output pixel;
    ``valid`` (B, S, S) bool or None."""

    image: Tensor
    coords: Tensor
    valid: Tensor | None


def _rand(shape: Sequence[int], g: torch.Generator | None, device: torch.device) -> Tensor:
    # small draws: on the CPU (a CPU generator serves any device), uploaded without a wait
    return upload(torch.rand(tuple(shape), generator=g), device)


def _rand_field(shape: Sequence[int], g: torch.Generator | None, device: torch.device) -> Tensor:
    # image-sized draws: on the device from a generator seeded by ``g`` (the same numbers as
    # ``_rand`` on the CPU)
    return torch.rand(tuple(shape), generator=device_generator(g, device), device=device)


class PixelViewAugment:
    """The default dense-contrast views of a batch (see the module docstring for the recipe)."""

    def __init__(
        self,
        size: int,
        factors: Sequence[int] = (1, 2),
        *,
        brightness: float = 0.2,
        contrast: float = 0.2,
        p_colour: float = 0.8,
        noise_std: float = 0.05,
        p_noise: float = 0.5,
        photometric: bool = True,
    ) -> None:
        usable = [int(f) for f in factors if f >= 1 and size % f == 0] or [1]
        self.size, self.factors = size, usable
        self.brightness, self.contrast, self.p_colour = brightness, contrast, p_colour
        self.noise_std, self.p_noise = noise_std, p_noise
        self.photometric = photometric

    def coords(
        self,
        batch: int,
        height: int,
        width: int,
        g: torch.Generator | None,
        device: torch.device | None = None,
    ) -> Tensor:
        """(B, 2, S, S) long: the ground pixel every output pixel shows, built on ``device``
        from per-sample draws made on the host."""
        s = self.size
        fits = [f for f in self.factors if s // f <= min(height, width)]
        if not fits:
            raise ValueError(
                f"no zoom factor of {self.factors} fits output {s} in {height}x{width}"
            )
        cpu = torch.device("cpu")
        fac = torch.tensor(fits)[
            (_rand((batch,), g, cpu) * len(fits)).long().clamp(max=len(fits) - 1)
        ]
        crop = s // fac
        top = (_rand((batch,), g, cpu) * (height - crop + 1)).long()
        left = (_rand((batch,), g, cpu) * (width - crop + 1)).long()
        hflip, vflip = _rand((batch,), g, cpu) < 0.5, _rand((batch,), g, cpu) < 0.5
        k = (_rand((batch,), g, cpu) * 4).long().clamp(max=3)
        dev = device or cpu
        fac, top, left, hflip, vflip, k = (
            upload(t, dev) for t in (fac, top, left, hflip, vflip, k)
        )
        idx = torch.arange(s, device=dev)
        rows = top[:, None] + idx[None, :] // fac[:, None]  # (B, S)
        cols = left[:, None] + idx[None, :] // fac[:, None]
        grid = torch.stack(
            [rows[:, :, None].expand(batch, s, s), cols[:, None, :].expand(batch, s, s)], dim=1
        )
        grid = torch.where(hflip.view(-1, 1, 1, 1), grid.flip(-1), grid)
        grid = torch.where(vflip.view(-1, 1, 1, 1), grid.flip(-2), grid)
        turned = torch.stack([torch.rot90(grid, r, dims=(-2, -1)) for r in range(4)])
        return turned[k, torch.arange(batch, device=dev)].contiguous()

    def __call__(
        self, images: Tensor, valid: Tensor | None = None, generator: torch.Generator | None = None
    ) -> BatchViews:
        """Views of ``images`` (B, C, H, W) with ``valid`` (B, H, W) carried along."""
        b, c, h, w = images.shape
        dev = images.device
        coords = self.coords(b, h, w, generator, dev)
        flat = (coords[:, 0] * w + coords[:, 1]).reshape(b, -1)  # (B, S*S)
        s = self.size
        out = images.reshape(b, c, h * w).gather(2, flat[:, None, :].expand(b, c, -1))
        out = out.reshape(b, c, s, s)
        vout = None
        if valid is not None:
            vout = valid.reshape(b, h * w).bool().gather(1, flat).reshape(b, s, s)
        if self.photometric:
            out = self._photometric(out, generator)
        return BatchViews(out, coords, vout)

    def _photometric(self, x: Tensor, g: torch.Generator | None) -> Tensor:
        b, c = x.shape[:2]
        dev, dt = x.device, x.dtype
        on = (_rand((b, 1, 1, 1), g, dev) < self.p_colour).to(dt)
        con = (1.0 + self.contrast * (2 * _rand((b, c, 1, 1), g, dev) - 1)).to(dt)
        bri = (self.brightness * (2 * _rand((b, c, 1, 1), g, dev) - 1)).to(dt)
        mean = x.mean(dim=(-2, -1), keepdim=True)
        jittered = (x - mean) * con + mean + bri
        x = on * jittered + (1 - on) * x
        noisy = (_rand((b, 1, 1, 1), g, dev) < self.p_noise).to(dt)
        noise = torch.randn(tuple(x.shape), generator=device_generator(g, dev), device=dev)
        noise = noise.to(dt)
        return x + noisy * self.noise_std * noise


def sample_pixel_pairs_batched(
    a: BatchViews,
    b: BatchViews,
    ground_size: tuple[int, int],
    num_samples: int,
    generator: torch.Generator | None = None,
) -> PaddedPairs:
    """Per image, up to ``num_samples`` pixels of view A whose ground pixel view B also shows,
    valid in both, one per ground pixel, chosen uniformly; the same contract as
    :func:`earthloop.models.losses.dense.sample_pixel_pairs`, for the whole batch at once, as
    padded ``(B, num_samples)`` rows (``.per_image()`` gives the per-image tuples).
    """
    gh, gw = ground_size
    n_img = a.coords.shape[0]
    dev = a.coords.device
    ground_a = (a.coords[:, 0] * gw + a.coords[:, 1]).reshape(n_img, -1)
    ground_b = (b.coords[:, 0] * gw + b.coords[:, 1]).reshape(n_img, -1)
    hw_b = ground_b.shape[1]
    lookup = torch.full((n_img, gh * gw), -1, dtype=torch.long, device=dev)
    lookup.scatter_(1, ground_b, torch.arange(hw_b, device=dev).expand(n_img, -1).contiguous())
    match = lookup.gather(1, ground_a)  # (B, S*S): the B pixel showing A's ground pixel, or -1
    ok = match >= 0
    if a.valid is not None:
        ok &= a.valid.reshape(n_img, -1)
    if b.valid is not None:
        ok &= b.valid.reshape(n_img, -1).gather(1, match.clamp(min=0))
    # a random score per A pixel; each ground pixel keeps its highest-scoring copy (an up-scaled
    # view shows a ground pixel several times, and every candidate ground pixel of one view is
    # shown equally often, so the kept copies' scores are identically distributed)
    score = torch.where(
        ok, _rand_field(ok.shape, generator, dev), torch.full_like(ok, -1.0, dtype=torch.float)
    )
    best = torch.full((n_img, gh * gw), -1.0, device=dev)
    best.scatter_reduce_(1, ground_a, score, reduce="amax")
    keep = ok & (score == best.gather(1, ground_a))
    k = min(num_samples, ok.shape[1])
    ranked = torch.where(keep, score, torch.full_like(score, -1.0))
    top, idx_a = ranked.topk(k, dim=1)
    # topk sorts descending, so the kept pairs (score >= 0) come first in every row
    return PaddedPairs(
        idx_a, match.gather(1, idx_a).clamp(min=0), ground_a.gather(1, idx_a), top >= 0
    )
