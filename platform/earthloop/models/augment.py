"""SeCo's augmentation recipe (MoCo v2's) for multispectral batches, in torch, replayable.

The reference code (ServiceNow/seasonal-contrast, ``datasets/seco_dataset.py``) augments every
view with torchvision's ``RandomResizedCrop(224, scale=(0.2, 1))``, ``ColorJitter(0.4, 0.4, 0.4,
0.1)`` with p 0.8, ``RandomGrayscale`` p 0.2, ``GaussianBlur(sigma 0.1-2)`` p 0.5 and a horizontal
flip. Why it matters: without colour changes a location is recognisable from its per-band
statistics alone (on the demo data 16 band statistics retrieved the augmentation-only positive
43 % of the time among 111 locations), so the instance task is partly solved by colour and the
encoder learns less about texture and layout.

:class:`SeCoAugment` does the same on ``(B, C, H, W)`` batches of band-standardised images, with
per-sample parameters drawn at once (no Python loop over samples) so that it is fast on CPU, and
``sample``/``apply`` separated so SeCo's season-only key can replay the query's augmentation on
another date. Every step, and how it is carried over from RGB to any number of bands:

* **random resized crop**: area fraction ``U(0.2, 1)``, aspect ratio log-uniform in
  ``(3/4, 4/3)`` (torchvision's ten tries, then the whole image), bilinear resampling to the
  output size through one ``affine_grid``/``grid_sample`` for the batch. Flips (horizontal as the
  reference; vertical and 90-degree rotations ours, since nadir imagery has no up) are folded
  into the same affine map.
* **brightness** ``b ~ U(0.6, 1.4)``: torchvision multiplies intensities by ``b``. Here the
  reflectance of every band is multiplied by ``b``, i.e. ``x' = b (x - z) + z`` with ``z`` the
  standardised value of zero reflectance per band (``-mean/std``, passed as ``black_level``;
  ``-2`` when unknown).
* **contrast** ``c ~ U(0.6, 1.4)``: blend with the image's mean grey level (a scalar per image,
  the mean over pixels and bands), as torchvision does with the mean of the grayscale image.
* **saturation** ``s ~ U(0.6, 1.4)``: blend each pixel with its grey value, here the mean over
  the bands (RGB uses luminance weights, which do not exist for other bands).
* **hue** ``h ~ U(-0.1, 0.1)``: a hue shift rotates an RGB pixel's chromatic part (its offset
  from grey) about the grey axis by ``2 pi h``. For ``C`` bands the chromatic part lives in the
  ``C-1``-dimensional space orthogonal to grey; we rotate it by ``2 pi h`` in a random plane of
  that space (for 3 bands this is exactly a rotation about the grey axis). Skipped below 3 bands.
* the four jitters run in a random order per sample, as ``ColorJitter`` does.
* **grayscale**: every band replaced by the pixel's grey value (mean over bands).
* **Gaussian blur** ``sigma ~ U(0.1, 2)`` output pixels, separable, reflect-padded. Chips and
  the reference's 224 px crops are both resampled from 10 m pixels at about 1:1, so the sigma in
  output pixels carries over unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from earthloop.models.on_device import autocast_type, upload

__all__ = ["AugmentParams", "SeCoAugment"]

_JITTERS = 4  # brightness, contrast, saturation, hue


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample parameters of one :class:`SeCoAugment` draw (``B`` samples)."""

    theta: Tensor  # (B, 2, 3) affine map output -> input (crop, flips, rotation)
    jitter: Tensor  # (B,) bool: colour jitter applied
    factors: Tensor  # (B, 4): brightness, contrast, saturation factors and hue (turns)
    order: Tensor  # (B, 4) long: the order the four jitters run in
    plane: Tensor  # (B, 2, C): orthonormal hue-rotation plane, orthogonal to grey
    gray: Tensor  # (B,) bool
    sigma: Tensor  # (B,) blur sigma in pixels, 0: no blur

    def with_geometry(self, other: AugmentParams) -> AugmentParams:
        """These colour parameters with ``other``'s crop and flips."""
        return replace(self, theta=other.theta)


class SeCoAugment:
    """Random resized crop + flips, colour jitter (p 0.8), grayscale (p 0.2), blur (p 0.5).

    Args:
        size: output side (``None``: the input's smaller side).
        scale: crop area fraction range.
        ratio: crop aspect-ratio range.
        brightness, contrast, saturation, hue: ``ColorJitter`` strengths.
        p_jitter, p_gray, p_blur: probabilities of the three photometric steps.
        blur_sigma: Gaussian blur sigma range, in output pixels.
        vflip_rot90: add vertical flips and 90-degree rotations (ours) to the horizontal flip.
    """

    def __init__(
        self,
        size: int | None = None,
        *,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.1,
        p_jitter: float = 0.8,
        p_gray: float = 0.2,
        p_blur: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        vflip_rot90: bool = True,
    ) -> None:
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
        self.size = size
        self.scale, self.ratio = scale, ratio
        self.strength = (brightness, contrast, saturation, hue)
        self.p_jitter, self.p_gray, self.p_blur = p_jitter, p_gray, p_blur
        self.blur_sigma = blur_sigma
        self.vflip_rot90 = vflip_rot90

    # -- sampling ------------------------------------------------------------------------------

    def sample(
        self, batch: int, channels: int, height: int, width: int, generator: torch.Generator | None
    ) -> AugmentParams:
        """Draw parameters for ``batch`` images of ``channels`` x ``height`` x ``width``."""
        g = generator

        def u(*shape: int) -> Tensor:
            return torch.rand(*shape, generator=g)

        theta = self._crop_theta(batch, height, width, g)
        b, c, s, h = self.strength
        lo = torch.tensor([1 - b, 1 - c, 1 - s, -h])
        hi = torch.tensor([1 + b, 1 + c, 1 + s, h])
        factors = lo + (hi - lo) * u(batch, _JITTERS)
        order = torch.argsort(u(batch, _JITTERS), dim=1)
        plane = _grey_orthogonal_plane(batch, channels, g)
        lo_s, hi_s = self.blur_sigma
        blur = u(batch) < self.p_blur
        sigma = torch.where(blur, lo_s + (hi_s - lo_s) * u(batch), torch.zeros(batch))
        return AugmentParams(
            theta=theta,
            jitter=u(batch) < self.p_jitter,
            factors=factors,
            order=order,
            plane=plane,
            gray=u(batch) < self.p_gray,
            sigma=sigma,
        )

    def _crop_theta(self, batch: int, height: int, width: int, g: torch.Generator | None) -> Tensor:
        """torchvision's RandomResizedCrop box (ten tries, else the whole image) as an affine map."""
        tries = 10
        area = height * width
        target = area * (
            self.scale[0] + (self.scale[1] - self.scale[0]) * torch.rand(batch, tries, generator=g)
        )
        log_r = math.log(self.ratio[0]) + (
            math.log(self.ratio[1]) - math.log(self.ratio[0])
        ) * torch.rand(batch, tries, generator=g)
        r = torch.exp(log_r)
        w = torch.round(torch.sqrt(target * r))
        h = torch.round(torch.sqrt(target / r))
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((batch,), -1))
        idx = first.clamp(min=0).unsqueeze(1)
        w = torch.where(first >= 0, w.gather(1, idx)[:, 0], torch.full((batch,), float(width)))
        h = torch.where(first >= 0, h.gather(1, idx)[:, 0], torch.full((batch,), float(height)))
        top = torch.floor(torch.rand(batch, generator=g) * (height - h + 1))
        left = torch.floor(torch.rand(batch, generator=g) * (width - w + 1))
        # normalised coordinates (align_corners=False): pixel edges at -1 and 1
        cx = (left + w / 2) / width * 2 - 1
        cy = (top + h / 2) / height * 2 - 1
        sx, sy = w / width, h / height
        flip_x = torch.where(torch.rand(batch, generator=g) < 0.5, -1.0, 1.0)
        flip_y = torch.ones(batch)
        k = torch.zeros(batch, dtype=torch.long)
        if self.vflip_rot90:
            flip_y = torch.where(torch.rand(batch, generator=g) < 0.5, -1.0, 1.0)
            k = torch.randint(4, (batch,), generator=g)
        cos = torch.tensor([1.0, 0.0, -1.0, 0.0])[k]
        sin = torch.tensor([0.0, 1.0, 0.0, -1.0])[k]
        # output (x, y) -> flip -> rotate by k * 90 degrees -> scale to the box -> shift to its centre
        fx, fy = flip_x, flip_y
        a11, a12 = cos * fx, -sin * fy
        a21, a22 = sin * fx, cos * fy
        theta = torch.zeros(batch, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = sx * a11, sx * a12, cx
        theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sy * a21, sy * a22, cy
        return theta

    # -- applying ------------------------------------------------------------------------------

    def apply(self, x: Tensor, params: AugmentParams, black_level: Tensor | None = None) -> Tensor:
        """Augment ``x`` ``(B, C, H, W)`` (band-standardised) with ``params``; ``(B, C, S, S)``.

        ``black_level``: ``(C,)`` standardised value of zero reflectance per band (brightness
        scales reflectance about it); ``-2`` in every band when ``None``.
        """
        if x.ndim != 4:
            raise ValueError(f"expected (B, C, H, W), got {tuple(x.shape)}")
        # augmentation prepares data: in the input's precision, also inside a bf16 autocast
        # region (SeCo makes its views in forward). Under autocast the blur's matrix products
        # came out bf16 and could not be written back into the float32 batch (found on an H200).
        with torch.autocast(device_type=autocast_type(x.device), enabled=False):
            return self._apply(x, params, black_level)

    def _apply(self, x: Tensor, params: AugmentParams, black_level: Tensor | None) -> Tensor:
        b, c, h, w = x.shape
        size = self.size or min(h, w)
        theta = upload(params.theta, x.device, x.dtype)
        grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        z = (
            torch.full((c,), -2.0, dtype=x.dtype, device=x.device)
            if black_level is None
            else upload(black_level, x.device, x.dtype)
        )
        mat, bias = _colour_map(out.mean(dim=(2, 3)), params, z)
        out = torch.einsum("bij,bjhw->bihw", mat, out) + bias.view(b, c, 1, 1)
        return _blur(out, params.sigma)

    def __call__(
        self, x: Tensor, generator: torch.Generator | None = None, black_level: Tensor | None = None
    ) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected (B, C, H, W), got {tuple(x.shape)}")
        b, c, h, w = x.shape
        return self.apply(x, self.sample(b, c, h, w, generator), black_level)


def _colour_map(mean: Tensor, p: AugmentParams, z: Tensor) -> tuple[Tensor, Tensor]:
    """Jitter (in its per-sample order) and grayscale as one affine band map ``x -> A x + b``.

    Every step is affine in a pixel's band vector: brightness ``k (x - z) + z``, contrast
    ``k x + (1 - k) m`` (``m`` the current image's grey mean, itself affine in the input's band
    means ``mean``), saturation ``k x + (1 - k) grey(x)``, hue a rotation orthogonal to grey,
    grayscale ``grey(x)``. Composing them on ``(B, C, C)`` matrices costs nothing next to the
    image, which is then touched once.
    """
    b, c = mean.shape
    dtype, device = mean.dtype, mean.device
    eye = torch.eye(c, dtype=dtype, device=device).expand(b, c, c)
    avg = torch.full((c, c), 1.0 / c, dtype=dtype, device=device).expand(b, c, c)
    mat, bias = eye.clone(), torch.zeros(b, c, dtype=dtype, device=device)
    f = upload(p.factors, device, dtype)
    plane = upload(p.plane, device, dtype)
    for position in range(_JITTERS):
        for op in range(_JITTERS):
            # decided on the drawn (host) parameters: a test of a device tensor here was a
            # device sync, 16 per view and 64 per SeCo step
            on_host = (p.order[:, position] == op) & p.jitter
            if not bool(on_host.any()):
                continue
            chosen = upload(on_host, device)
            k = f[:, op].view(b, 1)
            if op == 0:  # brightness: scale reflectance about the black level
                m_op, b_op = eye * k.unsqueeze(2), (1 - k) * z.view(1, c)
                new_mat, new_bias = m_op @ mat, (m_op @ bias.unsqueeze(2)).squeeze(2) + b_op
            elif op == 1:  # contrast: blend with the image's grey mean
                grey_mean = (torch.einsum("bij,bj->bi", mat, mean) + bias).mean(1, keepdim=True)
                new_mat = mat * k.unsqueeze(2)
                new_bias = bias * k + (1 - k) * grey_mean
            else:
                m_op = _saturation(eye, avg, k) if op == 2 else _hue(eye, plane, k, c)
                new_mat, new_bias = m_op @ mat, (m_op @ bias.unsqueeze(2)).squeeze(2)
            sel = chosen.view(b, 1, 1)
            mat = torch.where(sel, new_mat, mat)
            bias = torch.where(sel.view(b, 1), new_bias, bias)
    gray = upload(p.gray, device).view(b, 1, 1)
    mat = torch.where(gray, avg @ mat, mat)
    bias = torch.where(gray.view(b, 1), (avg @ bias.unsqueeze(2)).squeeze(2), bias)
    return mat, bias


def _saturation(eye: Tensor, avg: Tensor, k: Tensor) -> Tensor:
    """``k x + (1 - k) grey(x)``, grey the mean over bands."""
    kk = k.unsqueeze(2)
    return eye * kk + avg * (1 - kk)


def _hue(eye: Tensor, plane: Tensor, turns: Tensor, c: int) -> Tensor:
    """Rotation by ``2 pi turns`` in the plane ``(u, v)`` orthogonal to grey (identity below 3)."""
    if c < 3:
        return eye
    angle = (2 * math.pi * turns).unsqueeze(2)
    u, v = plane[:, 0].unsqueeze(2), plane[:, 1].unsqueeze(2)  # (B, C, 1)
    uu = u @ u.transpose(1, 2)
    vv = v @ v.transpose(1, 2)
    vu = v @ u.transpose(1, 2)
    uv = u @ v.transpose(1, 2)
    return eye + (torch.cos(angle) - 1) * (uu + vv) + torch.sin(angle) * (vu - uv)


def _grey_orthogonal_plane(batch: int, channels: int, g: torch.Generator | None) -> Tensor:
    """``(B, 2, C)`` random orthonormal pairs orthogonal to the grey axis (1, ..., 1)."""
    if channels < 3:
        return torch.zeros(batch, 2, channels)
    vec = torch.randn(batch, 2, channels, generator=g)
    vec = vec - vec.mean(dim=2, keepdim=True)  # remove the grey component
    u = F.normalize(vec[:, 0], dim=1)
    v = vec[:, 1] - (vec[:, 1] * u).sum(dim=1, keepdim=True) * u
    return torch.stack([u, F.normalize(v, dim=1)], dim=1)


def _blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur with a sigma per sample (0: unchanged), reflect padding.

    Each axis is one batched matrix product with a banded (reflect-folded) kernel matrix, which
    on CPU is several times faster than a grouped convolution with a kernel per sample.
    ``sigma`` is the drawn parameter on the host: which samples blur and the kernel radius are
    decided there, so a device batch is never read back (earthloop.models.on_device).
    """
    blurred = sigma > 0
    if not bool(blurred.any()):
        return x
    h, w = int(x.shape[-2]), int(x.shape[-1])
    radius = max(1, min(math.ceil(3 * float(sigma.max())), min(h, w) - 1))
    if bool(blurred.all()):
        return _blur_all(x, upload(sigma, x.device, x.dtype), radius)
    rows = upload(blurred.nonzero()[:, 0], x.device)
    out = x.clone()
    out[rows] = _blur_all(x[rows], upload(sigma[blurred], x.device, x.dtype), radius)
    return out


def _blur_all(x: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """Blur every sample of ``x`` with its ``sigma`` (all > 0) and kernels of ``radius``."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    rows = _kernel_matrix(sigma, h, radius)  # (B, H, H)
    cols = _kernel_matrix(sigma, w, radius)  # (B, W, W)
    return rows.unsqueeze(1) @ x @ cols.transpose(1, 2).unsqueeze(1)


def _kernel_matrix(sigma: Tensor, n: int, radius: int) -> Tensor:
    """``(B, n, n)``: row ``i`` holds the Gaussian weights of output ``i`` over reflected inputs."""
    b = sigma.shape[0]
    taps = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    kernel = torch.exp(-0.5 * (taps.view(1, -1) / sigma.view(b, 1)) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, K)
    src = torch.arange(n, device=sigma.device).view(n, 1) + taps.long().view(1, -1)  # (n, K)
    src = src.abs()  # reflect at 0 (-1 -> 1)
    src = torch.where(src > n - 1, 2 * (n - 1) - src, src)  # reflect at n-1
    mat = torch.zeros(b, n, n, device=sigma.device, dtype=sigma.dtype)
    weights = kernel.unsqueeze(1).expand(b, n, -1)
    return mat.scatter_add_(2, src.unsqueeze(0).expand(b, -1, -1), weights)
