"""Reading chip windows from per-band rasters onto one common grid.

A chip is defined by its bounds in the scene CRS and a pixel size on the 10 m grid; every band
is read *by bounds* in its own grid and resampled to the chip grid, so 20 m and 60 m bands line
up with 10 m ones without ever materialising a full tile. Errors are typed by reason so callers
can count them (``read_error``, ``missing_asset``, ``crs``) instead of dying on the first one.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window, from_bounds

Bounds = tuple[float, float, float, float]

# GDAL options that matter for COGs: merged range requests and a block cache sized by the caller
# (the default, ~5 % of RAM per process, makes benchmarks lie). Directory listing is disabled for
# remote files only: local rasters may carry their georeferencing in a ``.aux.xml`` sidecar (the
# JPEG2000 files of the Earth Search test catalog do), which GDAL finds by listing the folder.
_REMOTE_PREFIXES = ("http://", "https://", "s3://", "gs://", "az://", "/vsi")
_COG_OPTIONS = {
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "VSI_CACHE": "TRUE",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.jp2",
}


class ChipReadError(RuntimeError):
    """A window could not be read; ``reason`` is a low-cardinality label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@contextmanager
def gdal_env(cachemax_mb: int = 64) -> Iterator[None]:
    """GDAL settings for COG reads; set ``GDAL_CACHEMAX`` before GDAL allocates its cache.

    ``rasterio.Env(GDAL_CACHEMAX=n)`` takes *bytes* (an environment variable below 100000 means
    megabytes, the Env option does not): passing megabytes gave GDAL a cache of a few bytes and
    every resampled read decoded the same tile again per scanline (benchmarks, fix 1).
    """
    os.environ.setdefault("GDAL_CACHEMAX", str(cachemax_mb))
    with rasterio.Env(GDAL_CACHEMAX=cachemax_mb * 1024 * 1024, **_COG_OPTIONS):
        yield


def map_href(href: str, href_map: Mapping[str, str] | None = None) -> str:
    """Rewrite an asset href by prefix (e.g. ``s3://sentinel-cogs/`` → a local mirror)."""
    for prefix, target in (href_map or {}).items():
        if href.startswith(prefix):
            return target + href[len(prefix) :]
    return href


def open_raster(href: str) -> rasterio.io.DatasetReader:
    """Open a raster, skipping the sidecar directory listing for remote files."""
    if href.startswith(_REMOTE_PREFIXES):
        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
            return rasterio.open(href)
    return rasterio.open(href)


class _OpenFiles(threading.local):
    """A small per-thread LRU of open datasets.

    Opening a COG parses its header and overview directories and probes for sidecars; a reader
    that re-opens every band file for every read group spent a quarter of its time there
    (benchmarks, fix 5). Per thread, because a GDAL dataset must not be shared between threads.
    """

    def __init__(self) -> None:
        self.files: OrderedDict[str, rasterio.io.DatasetReader] = OrderedDict()


_OPEN = _OpenFiles()
_MAX_OPEN = 32


def cached_raster(href: str) -> rasterio.io.DatasetReader:
    files = _OPEN.files
    src = files.get(href)
    if src is not None and not src.closed:
        files.move_to_end(href)
        return src
    src = open_raster(href)
    files[href] = src
    while len(files) > _MAX_OPEN:
        _, old = files.popitem(last=False)
        old.close()
    return src


def _snap(win: Window) -> Window:
    """Round offsets/lengths within 1e-6 px of an integer: float noise from ``from_bounds``
    (``1024.0000000000002``) otherwise sends same-resolution reads down GDAL's resampling path."""

    def r(v: float) -> float:
        n = round(v)
        return float(n) if abs(v - n) < 1e-6 else v

    return Window(r(win.col_off), r(win.row_off), r(win.width), r(win.height))


def _same_crs(a: str, b: rasterio.crs.CRS | None) -> bool:
    if b is None:
        return False
    try:
        return bool(rasterio.crs.CRS.from_user_input(a) == b)
    except Exception:
        return False


def read_window(
    href: str,
    crs: str,
    bounds: Bounds,
    shape: tuple[int, int],
    *,
    resampling: Resampling = Resampling.nearest,
) -> np.ndarray:
    """Read ``bounds`` of a single-band raster resampled to ``shape`` (rows, cols).

    Raises :class:`ChipReadError` with reason ``read_error`` (unreadable/corrupt/unreachable),
    ``crs`` (the file is not in the chip's CRS) or ``out_of_bounds`` (window outside the file).
    """
    try:
        src = cached_raster(href)
    except Exception as exc:
        raise ChipReadError("read_error", f"cannot open {href}: {exc}") from exc
    if not _same_crs(crs, src.crs):
        raise ChipReadError("crs", f"{href} is in {src.crs}, chip expects {crs}")
    win = _snap(from_bounds(*bounds, transform=src.transform))
    full = Window(0, 0, src.width, src.height)
    eps = 1e-6
    if (
        win.col_off < -eps
        or win.row_off < -eps
        or win.col_off + win.width > full.width + eps
        or win.row_off + win.height > full.height + eps
    ):
        raise ChipReadError("out_of_bounds", f"window {bounds} lies outside {href}")
    try:
        return src.read(1, window=win, out_shape=shape, resampling=resampling)
    except Exception as exc:
        raise ChipReadError("read_error", f"cannot read {href} window: {exc}") from exc
