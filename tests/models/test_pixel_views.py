"""Batched dense-contrast views (``earthloop.models.pixel_views``).

Why they exist: building the two views one image at a time was dozens of small kernels per
image, and dense contrast kept an H200 only 23-25 % busy. These tests pin that the batched views
mean the same thing as the per-sample pipeline: every output pixel shows the ground pixel its
coordinates name, the geometry is an integer zoom crop under the dihedral group, and pixel pairs
are exact, valid, one per ground pixel and chosen uniformly.
"""

from __future__ import annotations

from collections import Counter

import torch
from earthloop.models import build_backbone
from earthloop.models.methods.dense import DenseContrastive
from earthloop.models.pixel_views import BatchViews, PixelViewAugment, sample_pixel_pairs_batched
from earthloop.models.transforms import RandomHorizontalFlip
from earthloop.models.unet import UNet


def _images(b: int, c: int, h: int, w: int) -> torch.Tensor:
    # every pixel's value encodes (image, band, row, col), so a gathered value names its source
    i = torch.arange(b).view(b, 1, 1, 1) * 1e6 + torch.arange(c).view(1, c, 1, 1) * 1e4
    return (i + torch.arange(h).view(1, 1, h, 1) * 100 + torch.arange(w).view(1, 1, 1, w)).float()


def test_every_output_pixel_shows_the_ground_pixel_its_coordinates_name() -> None:
    x = _images(32, 3, 12, 16)  # non-square: the view is a square of the smaller side
    valid = torch.rand(32, 12, 16, generator=torch.Generator().manual_seed(1)) < 0.7
    v = PixelViewAugment(12, (1, 2, 3), photometric=False)(
        x, valid, torch.Generator().manual_seed(0)
    )
    assert v.image.shape == (32, 3, 12, 12) and v.coords.shape == (32, 2, 12, 12)
    r, c = v.coords[:, 0], v.coords[:, 1]
    bi = torch.arange(32).view(32, 1, 1)
    for band in range(3):
        assert torch.equal(v.image[:, band], x[bi, band, r, c])
    assert v.valid is not None and torch.equal(v.valid, valid[bi, r, c])


def _dihedral(t: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for flip in (False, True):
        u = t.flip(-1) if flip else t
        out.extend(torch.rot90(u, k, dims=(-2, -1)) for k in range(4))
    return out


def test_the_geometry_is_a_zoom_crop_under_flips_and_rotations() -> None:
    aug = PixelViewAugment(8, (1, 2), photometric=False)
    coords = aug.coords(400, 8, 10, torch.Generator().manual_seed(0))
    seen_factor: Counter[int] = Counter()
    seen_orient: Counter[int] = Counter()
    for g in coords:
        rows, cols = g[0], g[1]
        f = 8 // int(rows.unique().numel())
        top, left = int(rows.min()), int(cols.min())
        assert 0 <= top <= 8 - 8 // f and 0 <= left <= 10 - 8 // f
        idx = torch.arange(8) // f
        canon = torch.stack([(top + idx)[:, None].expand(8, 8), (left + idx)[None, :].expand(8, 8)])
        matches = [n for n, d in enumerate(_dihedral(canon)) if torch.equal(d, g)]
        assert matches, "not a flipped/rotated zoom crop"
        seen_factor[f] += 1
        seen_orient[matches[0]] += 1
    assert set(seen_factor) == {1, 2} and min(seen_factor.values()) > 150
    # flips then rotation reach all eight symmetries of the square; a zoom-1 block is never
    # symmetric, so each appears about 1/8 of the time
    assert len(seen_orient) == 8 and min(seen_orient.values()) > 25


def test_photometric_jitter_is_a_per_band_affine_map_within_its_ranges() -> None:
    x = torch.randn(64, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    aug = PixelViewAugment(8, (1,), p_colour=1.0, p_noise=0.0)
    v = aug(x, None, torch.Generator().manual_seed(3))
    bi = torch.arange(64).view(64, 1, 1)
    src = torch.stack([x[bi, b, v.coords[:, 0], v.coords[:, 1]] for b in range(4)], dim=1)
    d_src = src - src.mean(dim=(-2, -1), keepdim=True)
    d_out = v.image - v.image.mean(dim=(-2, -1), keepdim=True)
    ratio = (d_out * d_src).sum(dim=(-2, -1)) / (d_src**2).sum(dim=(-2, -1))
    assert torch.allclose(d_out, ratio[..., None, None] * d_src, atol=1e-4)
    assert ratio.min() >= 0.8 - 1e-5 and ratio.max() <= 1.2 + 1e-5 and ratio.std() > 0.05
    shift = (v.image - src).mean(dim=(-2, -1))
    assert shift.abs().max() <= 0.2 + 1e-5 and shift.std() > 0.05


def test_pairs_are_exact_valid_unique_and_as_many_as_asked() -> None:
    g = torch.Generator().manual_seed(4)
    x = _images(16, 2, 16, 16)
    valid = torch.rand(16, 16, 16, generator=g) < 0.8
    aug = PixelViewAugment(16, (1, 2), photometric=False)
    a, b = aug(x, valid, g), aug(x, valid, g)
    pairs = sample_pixel_pairs_batched(a, b, (16, 16), 24, g).per_image()
    assert len(pairs) == 16
    for i, (ia, ib, ground) in enumerate(pairs):
        ca, cb = a.coords[i].reshape(2, -1), b.coords[i].reshape(2, -1)
        assert torch.equal(ca[:, ia], cb[:, ib])  # same ground pixel in both views
        assert torch.equal(ground, ca[0, ia] * 16 + ca[1, ia])
        assert ground.unique().numel() == ground.numel()  # one pixel per ground pixel
        assert a.valid is not None and b.valid is not None
        assert a.valid[i].reshape(-1)[ia].all() and b.valid[i].reshape(-1)[ib].all()
        ok_a = a.valid[i].reshape(-1)
        ok_b = b.valid[i].reshape(-1)
        gb = {int(t) for t in (cb[0] * 16 + cb[1])[ok_b]}
        both = {int(t) for t in (ca[0] * 16 + ca[1])[ok_a]} & gb
        assert ia.numel() == min(24, len(both))


def test_pixels_are_chosen_uniformly_over_ground_pixels() -> None:
    # view A: the top-left 4x4 ground block zoomed x2 (each ground pixel shown 4 times);
    # view B: the whole 8x8 ground. 4 of the 16 shared ground pixels are drawn each time.
    idx = torch.arange(8)
    za = torch.stack([(idx // 2)[:, None].expand(8, 8), (idx // 2)[None, :].expand(8, 8)])
    zb = torch.stack([idx[:, None].expand(8, 8), idx[None, :].expand(8, 8)])
    n = 3000
    a = BatchViews(torch.zeros(n, 1, 8, 8), za.expand(n, 2, 8, 8).contiguous(), None)
    b = BatchViews(torch.zeros(n, 1, 8, 8), zb.expand(n, 2, 8, 8).contiguous(), None)
    pairs = sample_pixel_pairs_batched(
        a, b, (8, 8), 4, torch.Generator().manual_seed(5)
    ).per_image()
    counts = Counter(int(t) for _, _, ground in pairs for t in ground)
    assert all(len(p[0]) == 4 for p in pairs)
    assert len(counts) == 16
    assert min(counts.values()) > 600 and max(counts.values()) < 900  # expected 750 each


def _method(**kw: object) -> DenseContrastive:
    torch.manual_seed(0)
    return DenseContrastive(
        UNet(build_backbone("resnet_tiny", 3)), proj_dim=16, num_pixels=16, seed=0, **kw
    )


def test_the_default_recipe_runs_batched_and_a_passed_transform_per_sample() -> None:
    batch = {
        "images": torch.randn(4, 3, 3, 32, 32),
        "valid": torch.ones(4, 3, 32, 32, dtype=torch.bool),
    }
    default, custom = _method(), _method(geometric=RandomHorizontalFlip())
    assert default.batched and not custom.batched
    for m in (default, custom):
        out = m(batch)
        assert torch.isfinite(out["loss"]) and float(out["num_pairs"]) == 4 * 16
