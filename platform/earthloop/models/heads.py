"""Projection, similarity and classifier heads.

Heads are kept apart from the backbone so pretraining can drop them: contrastive losses act on a
projection of the features (Chen et al. 2020 showed the layer before the projection transfers
better), and the exported backbone never carries them.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ClassifierHead",
    "ContextSimilarityHead",
    "PixelProjectionHead",
    "ProjectionHead",
    "SegmentationHead",
    "unfold_window",
]


class ProjectionHead(nn.Module):
    """MoCo-v2 projection MLP: Linear - ReLU - Linear (Chen et al. 2020, "Improved Baselines").

    SeCo's code uses the backbone width as hidden width (512 for ResNet-18, 2048 for ResNet-50) and
    a 128-d output, which are the defaults when ``hidden_dim`` is None. No normalisation here: the
    losses L2-normalise, so the head stays a plain MLP whose output can also be inspected raw.
    """

    def __init__(self, in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden = in_dim if hidden_dim is None else hidden_dim
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden, out_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class PixelProjectionHead(nn.Module):
    """Per-pixel projection by 1x1 convolutions, L2-normalised over channels by default.

    The 1x1 form is the dense analogue of the MLP head (each pixel is projected independently, as in
    DenseCL/PixPro-style pixel contrast); with ``hidden_channels`` it is conv-ReLU-conv, otherwise a
    single linear map, which is what CSCL uses for its query/key embeddings.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int | None = None,
        *,
        normalize: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.normalize = normalize
        if hidden_channels is None:
            self.net: nn.Module = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        else:
            self.net = nn.Sequential(
                nn.Conv2d(in_channels, hidden_channels, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(hidden_channels, out_channels, 1, bias=bias),
            )

    def forward(self, x: Tensor) -> Tensor:
        z: Tensor = self.net(x)
        return F.normalize(z, dim=1) if self.normalize else z


class ClassifierHead(nn.Module):
    """Linear classifier on pooled features (linear probe / fine-tuning)."""

    def __init__(self, in_features: int, num_classes: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(x))


class SegmentationHead(nn.Module):
    """1x1 convolution from per-pixel features to class logits ``(B, num_classes, H, W)``."""

    def __init__(self, in_channels: int, num_classes: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.dropout(x))


def window_padding(kernel_size: int, dilation: int) -> int:
    """Zero padding that keeps a centred ``kernel_size`` window of ``dilation`` inside 'same' size."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(
            f"kernel_size must be odd and >= 1 so the window has a centre, got {kernel_size}"
        )
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    return dilation * (kernel_size - 1) // 2


def unfold_window(x: Tensor, kernel_size: int, dilation: int = 1, *, fill: float = 0.0) -> Tensor:
    """Gather the ``kernel_size x kernel_size`` (dilated) neighbourhood of every pixel.

    Returns ``(B, C, k*k, H, W)``: entry ``[:, :, j, y, x]`` is the value at
    ``(y + dy_j * dilation, x + dx_j * dilation)`` with ``j = (dy+r) * k + (dx+r)`` row-major,
    ``r = k // 2``. Out-of-image positions hold ``fill``; call with a tensor of ones and
    ``fill=0`` to get the in-image mask.
    """
    b, c, h, w = x.shape
    pad = window_padding(kernel_size, dilation)
    if fill != 0.0:
        x = F.pad(x, (pad, pad, pad, pad), value=fill)
        cols = F.unfold(x, kernel_size, dilation=dilation, padding=0)
    else:
        cols = F.unfold(x, kernel_size, dilation=dilation, padding=pad)
    return cols.view(b, c, kernel_size * kernel_size, h, w)


class _WindowDot(torch.autograd.Function):
    """``out[:, j] = sum_d q[:, d] * shift_j(k)[:, d]`` for every window slot ``j``.

    ``k`` comes zero-padded by ``pad``; ``slots`` are the (row, col) offsets of each slot's
    shifted view into it. Autograd through per-slot slices would allocate a zero-filled copy of
    the padded keys for every slot's gradient; here both gradients are accumulated in place.
    """

    @staticmethod
    def forward(
        ctx: Any, q: Tensor, k: Tensor, slots: list[tuple[int, int]], h: int, w: int
    ) -> Tensor:
        ctx.save_for_backward(q, k)
        ctx.slots, ctx.hw = slots, (h, w)
        out = q.new_empty(q.shape[0], len(slots), h, w)
        for j, (y0, x0) in enumerate(slots):
            torch.sum(q * k[:, :, y0 : y0 + h, x0 : x0 + w], dim=1, out=out[:, j])
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        q, k = ctx.saved_tensors
        h, w = ctx.hw
        gq = torch.zeros_like(q) if ctx.needs_input_grad[0] else None
        gk = torch.zeros_like(k) if ctx.needs_input_grad[1] else None
        for j, (y0, x0) in enumerate(ctx.slots):
            g = grad[:, j : j + 1]
            if gq is not None:
                gq.addcmul_(g, k[:, :, y0 : y0 + h, x0 : x0 + w])
            if gk is not None:
                gk[:, :, y0 : y0 + h, x0 : x0 + w].addcmul_(g, q)
        return gq, gk, None, None, None


class ContextSimilarityHead(nn.Module):
    """CSCL's context self-similarity (Tarasiou et al. 2023, "Context-self contrastive pretraining
    for crop type semantic segmentation").

    Every pixel's query is compared with the keys of its ``k x k`` (dilated) neighbourhood; a
    learned relative-position vector is added to each window key before normalisation so the
    similarity can depend on where the neighbour is (the paper's relative position embedding; here
    one full-width vector per window slot, ``k*k`` in all). Out-of-image neighbours see a zero key
    plus their position vector, and ``in_image`` marks them so the loss can treat them as
    negatives.

    ``forward`` returns ``(similarity, in_image)``: cosine similarities ``(B, k*k, H, W)`` in
    ``[-1, 1]`` and a ``(1, k*k, H, W)`` bool mask of in-image window slots.
    """

    def __init__(
        self, in_channels: int, dim: int = 128, kernel_size: int = 5, dilation: int = 1
    ) -> None:
        super().__init__()
        window_padding(kernel_size, dilation)  # validate early
        self.kernel_size, self.dilation, self.dim = kernel_size, dilation, dim
        self.query = nn.Conv2d(in_channels, dim, 1, bias=False)
        self.key = nn.Conv2d(in_channels, dim, 1, bias=False)
        self.rel_pos = nn.Parameter(torch.randn(kernel_size * kernel_size, dim) * dim**-0.5)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Slot by slot, never the ``(B, D, k*k, H, W)`` window of keys.

        Gathering every window key first (``unfold``) and normalising it costs ``k*k`` full copies
        of the key map and their gradients: at 64 px, batch 32 and 128-d embeddings that is 1.7 GB
        per copy and 27 s per step on 2 CPU cores. Expanding the cosine instead,
        ``q.(k_j + p_j) / |k_j + p_j|`` with ``|k_j + p_j|^2 = |k_j|^2 + 2 k_j.p_j + |p_j|^2``,
        needs per slot only a shifted view of the padded keys (no copy) and ``(B, H, W)`` maps;
        the ``k_j.p_j`` and ``q.p_j`` terms are two 1x1 convolutions for all slots at once. Same
        values as normalising the gathered keys (tests/models/test_model_heads.py).

        The expansion cancels catastrophically where a key is nearly the negative of its slot's
        position vector: ``|k_j + p_j|^2`` comes out as rounding noise, even negative, and the
        quotient was unbounded (|s| up to 7e10 in a 200-draw search). CSCL's loss rewards a
        negative pair's similarity without limit, so training can find and exploit that
        (session 12: per-step losses far outside the cosine's range showed as epoch means of
        -0.007 against steps read at -0.19). So the norms are computed in float32 (bf16 under
        autocast has 3 digits), a squared norm below the rounding floor of its terms is raised
        to it, and the result is clamped to the cosine's ``[-1, 1]``; elsewhere the values are
        unchanged, except that rounding can no longer put a cosine a hair above 1 (where it
        now stops, with no gradient).
        """
        _, _, h, w = features.shape
        ks, dil = self.kernel_size, self.dilation
        pad = window_padding(ks, dil)
        r = ks // 2
        query, key = self.query(features), self.key(features)
        # the norms in at least float32 even under bf16 autocast (see the docstring)
        up = torch.promote_types(self.rel_pos.dtype, torch.float32)
        dev = features.device.type
        on = dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev)
        with torch.autocast(dev, enabled=False) if on else contextlib.nullcontext():
            q = F.normalize(query.to(up), dim=1)  # (B, D, H, W)
            key = key.to(up)
            pos = self.rel_pos.to(up).view(ks * ks, self.dim, 1, 1)
            qp = F.conv2d(q, pos)  # (B, K, H, W): q . p_j at every pixel
            kp = F.pad(F.conv2d(key, pos), (pad, pad, pad, pad))  # k . p_j, zero outside the image
            kk = F.pad((key * key).sum(1), (pad, pad, pad, pad))  # |k|^2, zero outside
            keys = F.pad(key, (pad, pad, pad, pad))
            pp = (self.rel_pos.to(up) ** 2).sum(1)  # |p_j|^2
            slots = [(pad + (j // ks - r) * dil, pad + (j % ks - r) * dil) for j in range(ks * ks)]
            dot = _WindowDot.apply(q, keys, slots, h, w) + qp  # q . (k_j + p_j)
            kks = torch.stack([kk[:, y0 : y0 + h, x0 : x0 + w] for y0, x0 in slots], dim=1)
            n2 = (
                kks
                + 2.0
                * torch.stack(
                    [kp[:, j, y0 : y0 + h, x0 : x0 + w] for j, (y0, x0) in enumerate(slots)], dim=1
                )
                + pp.view(1, -1, 1, 1)
            )
            # below ~8 float32 ulps of its terms a squared norm is rounding noise (see the docstring);
            # 1e-24 is F.normalize's eps 1e-12, squared
            floor = ((kks + pp.view(1, -1, 1, 1)) * 1e-6).clamp_min(1e-24)
            sim = (dot / torch.maximum(n2, floor).sqrt()).clamp(-1.0, 1.0)
        ones = features.new_ones(1, 1, h, w)
        in_image = unfold_window(ones, self.kernel_size, self.dilation)[:, 0] > 0.5
        return sim, in_image
