"""Numpy-only spatial building blocks: smooth noise, Voronoi cells, blur, resampling.

SciPy is not a dependency of the platform, and the generator must scale from 128 px test tiles to
4096 px benchmark tiles on one core, so everything here is separable or lattice-based (cost linear
in the pixel count) and works in float32 to keep memory at a few arrays per tile.
"""

from __future__ import annotations

import zlib

import numpy as np

Array = np.ndarray


def rng_for(seed: int, *keys: str | int) -> np.random.Generator:
    """An independent generator per (seed, purpose, tile, date, band…).

    Keying every draw by name instead of drawing from one stream in program order means that
    adding a tile, a date or a band never changes the pixels of the others.
    """
    words = [seed & 0xFFFFFFFF]
    for key in keys:
        words.append(
            zlib.crc32(str(key).encode()) if isinstance(key, str) else int(key) & 0xFFFFFFFF
        )
    return np.random.default_rng(np.random.SeedSequence(words))


def _smoothstep(t: Array) -> Array:
    return t * t * (3.0 - 2.0 * t)


def value_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> Array:
    """One octave of lattice noise with features ``cell`` pixels apart (float32, ~N(0, 1)).

    Bilinear interpolation with smoothstep weights is separable, so it costs two passes over the
    output instead of a convolution.
    """
    h, w = shape
    cell = max(float(cell), 1.0)
    gh, gw = int(np.ceil(h / cell)) + 2, int(np.ceil(w / cell)) + 2
    lattice = rng.standard_normal((gh, gw)).astype(np.float32)
    oy, ox = rng.random(2) * cell
    y = (np.arange(h, dtype=np.float64) + oy) / cell
    x = (np.arange(w, dtype=np.float64) + ox) / cell
    y0, x0 = np.floor(y).astype(np.intp), np.floor(x).astype(np.intp)
    ty = _smoothstep(y - y0).astype(np.float32)[:, None]
    tx = _smoothstep(x - x0).astype(np.float32)[None, :]
    rows = lattice[y0] * (1.0 - ty) + lattice[y0 + 1] * ty  # (h, gw)
    # x0 is non-decreasing, so the column gather is a repeat — a plain copy, ~2x faster than
    # fancy indexing on 4096 px tiles.
    counts = np.bincount(x0, minlength=gw - 1)[: gw - 1]
    out: Array = np.repeat(rows[:, :-1], counts, axis=1)
    step = np.repeat(rows[:, 1:] - rows[:, :-1], counts, axis=1)
    step *= tx
    out += step
    return out.astype(np.float32, copy=False)


def fbm(
    rng: np.random.Generator,
    shape: tuple[int, int],
    cell: float,
    *,
    octaves: int = 4,
    persistence: float = 0.5,
) -> Array:
    """Fractal (multi-octave) noise normalised to zero mean and unit std.

    Natural boundaries (lake shores, cloud edges) are rough at every scale; a single octave looks
    like blobs.
    """
    out = np.zeros(shape, dtype=np.float32)
    amp = 1.0
    for i in range(octaves):
        c = cell / (2**i)
        if c < 1.0:
            break
        out += np.float32(amp) * value_noise(rng, shape, c)
        amp *= persistence
    std = float(out.std())
    out -= np.float32(out.mean())
    if std > 0:
        out /= np.float32(std)
    return out


class JitteredSeeds:
    """Voronoi seeds on a jittered lattice, so the nearest seed is always in the 3×3 neighbourhood.

    That bound makes the cell assignment linear in the number of pixels (9 candidate seeds per
    pixel) instead of pixels × seeds.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        extent: tuple[float, float, float, float],
        cell: float,
    ) -> None:
        ymin, xmin, ymax, xmax = extent
        self.cell = float(cell)
        self.y0 = ymin - cell
        self.x0 = xmin - cell
        self.gh = int(np.ceil((ymax - self.y0) / cell)) + 2
        self.gw = int(np.ceil((xmax - self.x0) / cell)) + 2
        jitter = rng.uniform(0.1, 0.9, size=(2, self.gh, self.gw))
        iy, ix = np.mgrid[0 : self.gh, 0 : self.gw]
        self.sy = (self.y0 + (iy + jitter[0]) * cell).astype(np.float32)
        self.sx = (self.x0 + (ix + jitter[1]) * cell).astype(np.float32)

    @property
    def count(self) -> int:
        return self.gh * self.gw

    def assign(self, py: Array, px: Array) -> Array:
        """Index of the nearest seed for each (py, px) coordinate (int32, same shape)."""
        cy = np.floor((py - self.y0) / self.cell).astype(np.int32)
        cx = np.floor((px - self.x0) / self.cell).astype(np.int32)
        best = np.zeros(py.shape, dtype=np.int32)
        best_d = np.full(py.shape, np.inf, dtype=np.float32)
        for dy in (-1, 0, 1):
            ny = np.clip(cy + dy, 0, self.gh - 1)
            for dx in (-1, 0, 1):
                nx = np.clip(cx + dx, 0, self.gw - 1)
                idx = ny * self.gw + nx
                d = (py - self.sy.ravel()[idx]) ** 2 + (px - self.sx.ravel()[idx]) ** 2
                closer = d < best_d
                best_d[closer] = d[closer]
                best[closer] = idx[closer]
        return best


def gaussian_blur(a: Array, sigma: float) -> Array:
    """Separable Gaussian blur with edge padding; returns a new float32 array."""
    if sigma <= 0:
        return a.astype(np.float32, copy=True)
    radius = max(1, int(2 * sigma))  # 2σ: the tails beyond carry <5 % and cost two more passes
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    out = a if a.dtype == np.float32 else a.astype(np.float32)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        p = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        tmp = np.empty_like(out)
        for i, weight in enumerate(k):
            sl = [slice(None), slice(None)]
            sl[axis] = slice(i, i + n)
            np.multiply(p[tuple(sl)], weight, out=tmp)
            acc += tmp
        del p, tmp
        out = acc
    return out


def resize_bilinear(a: Array, shape: tuple[int, int]) -> Array:
    """Bilinear resampling (pixel-centre aligned, edge-clamped), separable like value_noise.

    Used to draw smooth fields (clouds) on a coarse grid and bring them to 10 m, which keeps the
    memory of a 4096 px tile's cloud generation to two full-size arrays.
    """
    if a.shape == shape:
        return a.astype(np.float32, copy=True)

    def axis_weights(n_out: int, n_in: int) -> tuple[Array, Array]:
        pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        pos = np.clip(pos, 0.0, n_in - 1.0)
        i0 = np.minimum(np.floor(pos).astype(np.intp), n_in - 1)
        return i0, (pos - i0).astype(np.float32)

    y0, ty = axis_weights(shape[0], a.shape[0])
    x0, tx = axis_weights(shape[1], a.shape[1])
    y1 = np.minimum(y0 + 1, a.shape[0] - 1)
    rows = (a[y0] * (1.0 - ty)[:, None] + a[y1] * ty[:, None]).astype(np.float32)
    rows = np.concatenate([rows, rows[:, -1:]], axis=1)  # column n_in repeats the edge
    counts = np.bincount(x0, minlength=a.shape[1])  # x0 is non-decreasing: gathers are repeats
    out: Array = np.repeat(rows[:, :-1], counts, axis=1)
    step = np.repeat(np.diff(rows, axis=1), counts, axis=1)
    step *= tx
    out += step
    return out


def block_mean(a: Array, factor: int) -> Array:
    """Average ``factor``×``factor`` blocks — how a coarser band integrates the 10 m signal."""
    if factor == 1:
        return a
    h, w = a.shape[0] // factor, a.shape[1] // factor
    view = a[: h * factor, : w * factor].reshape(h, factor, w, factor)
    out: Array = view.mean(axis=(1, 3), dtype=np.float32)
    return out


def shift(a: Array, dy: int, dx: int, fill: float = 0.0) -> Array:
    """Translate an image by whole pixels (positive dy = down), filling what enters with ``fill``."""
    out = np.full_like(a, fill)
    h, w = a.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    if abs(dy) < h and abs(dx) < w:
        out[yd, xd] = a[ys, xs]
    return out


def balanced_counts(n: int, weights: dict[int, float]) -> dict[int, int]:
    """Split ``n`` items over classes in proportion to ``weights``, every class at least once.

    Plain sampling can miss a rare class on a small tile; tests and downstream label-efficiency
    experiments both need every class present. With fewer items than classes the most weighted
    classes win.
    """
    classes = sorted(weights, key=lambda c: -weights[c])
    w = np.array([weights[c] for c in classes], dtype=np.float64)
    w /= w.sum()
    if n < len(classes):
        return {c: int(i < n) for i, c in enumerate(classes)}
    counts = np.maximum(1, np.floor(w * n).astype(np.int64))
    while counts.sum() > n:
        counts[int(np.argmax(counts))] -= 1
    remainder = w * n - counts
    while counts.sum() < n:
        i = int(np.argmax(remainder))
        counts[i] += 1
        remainder[i] -= 1.0
    return {c: int(k) for c, k in zip(classes, counts, strict=True)}


def balanced_choice(rng: np.random.Generator, n: int, weights: dict[int, float]) -> Array:
    """``n`` class labels in the proportions of :func:`balanced_counts`, randomly ordered."""
    counts = balanced_counts(n, weights)
    out = np.repeat(np.array(list(counts), dtype=np.int64), list(counts.values()))
    rng.shuffle(out)
    return out
