"""Pixel-level InfoNCE between two views of the same location (Embedding Earth style).

Embedding Earth (Tarasiou & Zafeiriou 2022) pretrains a U-Net so that a pixel's embedding in one
acquisition matches the *same ground pixel* in another acquisition of the location, and differs
from other pixels. We implement that as InfoNCE over sampled pixels:

* positives: view A pixel and the view B pixel with the same ground coordinates (exact, from the
  tracked transforms in :mod:`earthloop.models.transforms`);
* negatives: the sampled view-B pixels of the *other* images of the batch only (DenseCL-style,
  ``negatives="other_images"``, the default). Pixels of the anchor's own image are not
  negatives: sampled pixels of one chip lie a few pixels apart and mostly in the same field or
  land-cover patch (on the demo 54.5 % of them share the anchor's class), so pushing them apart
  teaches the network to split fields. ``negatives="all"`` restores the old behaviour;
* ``N`` pixels per image are sampled (default 64 in the method) so the ``(B*N)^2`` similarity
  matrix stays small; each sampled pixel is a distinct ground pixel, so no negative is a copy of
  the positive;
* the loss is symmetrised (A->B and B->A), since neither date is the "anchor".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from earthloop.models.losses.infonce import info_nce_in_batch
from earthloop.models.transforms import correspondence

__all__ = [
    "PaddedPairs",
    "PixelPairs",
    "dense_info_nce",
    "gather_pixels",
    "pixel_owner",
    "sample_pixel_pairs",
]

PixelPairs = tuple[Tensor, Tensor, Tensor]
"""``(idx_a, idx_b, ground)``: flat pixel indices into view A and view B and the ground index."""


@dataclass
class PaddedPairs:
    """The pairs of a whole batch as ``(B, K)`` tensors, ``valid`` marking the real ones.

    Per-image lists of pairs have per-image lengths, which live on the host: building them from
    a device tensor reads the counts back, a device sync per step (the last one of dense
    contrast's step). Here every image has ``K`` slots and the loss masks the empty ones.
    ``idx_a``, ``idx_b`` and ``ground`` hold any in-range index in an empty slot.
    """

    idx_a: Tensor
    idx_b: Tensor
    ground: Tensor
    valid: Tensor

    def per_image(self) -> list[PixelPairs]:
        """The same pairs as per-image tuples (reads the counts: for tests and inspection)."""
        out: list[PixelPairs] = []
        for i, n in enumerate(self.valid.sum(dim=1).tolist()):
            out.append((self.idx_a[i, :n], self.idx_b[i, :n], self.ground[i, :n]))
        return out


def sample_pixel_pairs(
    coords_a: Tensor,
    coords_b: Tensor,
    ground_size: tuple[int, int],
    num_samples: int,
    *,
    valid_a: Tensor | None = None,
    valid_b: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> PixelPairs:
    """Sample up to ``num_samples`` corresponding pixels of two views of one image.

    Only pixels visible in both views and valid in both (``valid_*``: ``(H, W)`` bool of each view,
    already transformed with it) are candidates; at most one pixel per ground location is kept.
    Fewer than ``num_samples`` pairs are returned when fewer candidates exist (possibly none).
    """
    match = correspondence(coords_a, coords_b, ground_size).reshape(-1)
    ok = match >= 0
    if valid_a is not None:
        ok &= valid_a.reshape(-1).to(ok.device)
    if valid_b is not None:
        vb = valid_b.reshape(-1).to(ok.device)
        ok &= vb[match.clamp(min=0)]
    cand = torch.nonzero(ok).flatten()
    if cand.numel() == 0:
        empty = torch.empty(0, dtype=torch.long, device=coords_a.device)
        return empty, empty, empty
    gw = ground_size[1]
    ground_all = (coords_a[0] * gw + coords_a[1]).reshape(-1)
    # Random order, then keep the first occurrence of each ground pixel: up-scaled views repeat
    # ground pixels, and two samples of one ground pixel would be each other's false negative.
    perm = torch.randperm(cand.numel(), generator=generator).to(cand.device)
    cand = cand[perm]
    g = ground_all[cand]
    uniq, inverse = torch.unique(g, return_inverse=True)
    first = torch.full((uniq.numel(),), cand.numel(), dtype=torch.long, device=cand.device)
    first.scatter_reduce_(0, inverse, torch.arange(cand.numel(), device=cand.device), reduce="amin")
    keep = torch.sort(first).values[:num_samples]
    idx_a = cand[keep]
    return idx_a, match[idx_a], ground_all[idx_a]


def gather_pixels(embeddings: Tensor, indices: Sequence[Tensor] | Tensor) -> Tensor:
    """Stack the embeddings ``(B, D, H, W)`` at flat pixel ``indices[b]`` of each image: ``(N, D)``.

    ``indices`` is one index tensor per image, or a ``(B, K)`` tensor (``N = B * K``).
    """
    b, d = embeddings.shape[:2]
    if len(indices) == 0:
        return embeddings.new_zeros(0, d)
    # one gather over (image, pixel): per-image ``flat[i, :, idx]`` made autograd allocate and
    # zero-fill a full (B, D, H*W) gradient per image (a third of a dense step's CPU time)
    hw = embeddings[0, 0].numel()
    flat = embeddings.reshape(b, d, hw).transpose(1, 2).reshape(b * hw, d)
    if isinstance(indices, Tensor):
        offsets = torch.arange(b, device=indices.device)[:, None] * hw
        return flat[(indices.long() + offsets).reshape(-1)]
    rows = torch.cat([idx.to(torch.long) + i * hw for i, idx in enumerate(indices)])
    return flat[rows]


def dense_info_nce(
    emb_a: Tensor,
    emb_b: Tensor,
    pairs: Sequence[PixelPairs] | PaddedPairs,
    *,
    temperature: float = 0.1,
    symmetric: bool = True,
    negatives: str = "other_images",
) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel InfoNCE over the sampled pairs of every image in the batch.

    Args:
        emb_a: ``(B, D, H, W)`` embeddings of view A.
        emb_b: ``(B, D, H, W)`` embeddings of view B.
        pairs: ``pairs[b]`` from :func:`sample_pixel_pairs`, one per image, or the whole
            batch's :class:`PaddedPairs` (the valid pairs first in each image, as the batched
            sampler returns them: the loss is then the same number, with no device sync).
        temperature: softmax temperature.
        symmetric: average the A->B and B->A terms.
        negatives: ``"other_images"`` (pixels of the other images only) or ``"all"``.

    Returns:
        ``(loss, z_a, z_b)`` with the ``(N, D)`` sampled pixel embeddings (``(B*K, D)`` for
        padded pairs, empty slots included). With no negative to contrast (fewer than two pairs,
        or all pairs in one image with ``other_images``) the loss is a zero that still depends
        on the inputs (so ``backward`` works).
    """
    if isinstance(pairs, PaddedPairs):
        return _padded_info_nce(emb_a, emb_b, pairs, temperature, symmetric, negatives)
    if len(pairs) != emb_a.shape[0] or emb_a.shape[0] != emb_b.shape[0]:
        raise ValueError("one PixelPairs per image of both views is required")
    if negatives not in ("other_images", "all"):
        raise ValueError(f"negatives must be 'other_images' or 'all', got {negatives!r}")
    z_a = gather_pixels(emb_a, [p[0] for p in pairs])
    z_b = gather_pixels(emb_b, [p[1] for p in pairs])
    owner = pixel_owner(pairs, z_a.device)
    exclude = None
    if negatives == "other_images":
        exclude = owner[:, None] == owner[None, :]
        if bool(exclude.all()):
            return (emb_a.sum() + emb_b.sum()) * 0.0, z_a, z_b
    if z_a.shape[0] < 2:
        return (emb_a.sum() + emb_b.sum()) * 0.0, z_a, z_b
    loss = info_nce_in_batch(z_a, z_b, temperature=temperature, exclude=exclude)
    if symmetric:
        back = info_nce_in_batch(z_b, z_a, temperature=temperature, exclude=exclude)
        loss = 0.5 * (loss + back)
    return loss, z_a, z_b


def _padded_info_nce(
    emb_a: Tensor,
    emb_b: Tensor,
    pairs: PaddedPairs,
    temperature: float,
    symmetric: bool,
    negatives: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`dense_info_nce` on padded pairs: empty slots are neither queries nor negatives.

    Every row's cross-entropy is taken and the empty rows are masked out of the mean; an empty
    key is excluded like a same-image key. A row left without a negative has only its positive,
    whose cross-entropy is exactly 0, which is what the list path returns in that case.
    """
    b, k = pairs.valid.shape
    if b != emb_a.shape[0] or emb_a.shape[0] != emb_b.shape[0]:
        raise ValueError("padded pairs must have one row per image of both views")
    if negatives not in ("other_images", "all"):
        raise ValueError(f"negatives must be 'other_images' or 'all', got {negatives!r}")
    z_a = gather_pixels(emb_a, pairs.idx_a)
    z_b = gather_pixels(emb_b, pairs.idx_b)
    valid = pairs.valid.reshape(-1)
    exclude = ~valid[None, :]
    if negatives == "other_images":
        owner = torch.arange(b, device=valid.device).repeat_interleave(k)
        exclude = exclude | (owner[:, None] == owner[None, :])
    weight = valid.to(torch.float32)
    count = weight.sum().clamp(min=1.0)
    per_row = info_nce_in_batch(
        z_a, z_b, temperature=temperature, exclude=exclude, reduction="none"
    )
    loss = (per_row * weight).sum() / count
    if symmetric:
        back = info_nce_in_batch(
            z_b, z_a, temperature=temperature, exclude=exclude, reduction="none"
        )
        loss = 0.5 * (loss + (back * weight).sum() / count)
    # attached to the inputs even when no row counts (the list path's zero does the same)
    return loss + (emb_a.sum() + emb_b.sum()) * 0.0, z_a, z_b


def pixel_owner(pairs: Sequence[PixelPairs], device: torch.device | None = None) -> Tensor:
    """``(N,)`` long: the batch index of the image each sampled pixel comes from."""
    sizes = [int(p[0].numel()) for p in pairs]
    return torch.repeat_interleave(
        torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device)
    )
