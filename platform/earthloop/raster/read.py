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
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window, from_bounds

from earthloop.raster.remote import (
    apply_defaults,
    gdal_path,
    is_remote,
    open_options,
    read_threads,
    redact,
)

Bounds = tuple[float, float, float, float]


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
    apply_defaults()  # merged range requests, caches, timeouts: see ``raster.remote``
    with rasterio.Env(GDAL_CACHEMAX=cachemax_mb * 1024 * 1024):
        yield


def map_href(href: str, href_map: Mapping[str, str] | None = None) -> str:
    """Rewrite an asset href by prefix (e.g. ``s3://sentinel-cogs/`` → a local mirror)."""
    for prefix, target in (href_map or {}).items():
        if href.startswith(prefix):
            return target + href[len(prefix) :]
    return href


def open_raster(href: str) -> rasterio.io.DatasetReader:
    """Open a raster; HTTP(S) URLs through ``/vsicurl/`` without the sidecar directory listing.

    Raises:
        ChipReadError: reason ``read_error``, naming the file (a URL without its credentials).
    """
    apply_defaults()
    try:
        if is_remote(href):
            with rasterio.Env(**open_options()):
                return rasterio.open(gdal_path(href))
        return rasterio.open(href)
    except Exception as exc:
        raise ChipReadError("read_error", redact(f"cannot open {href}: {exc}")) from exc


class _Handle:
    """One open dataset and the lock that keeps two threads from using it at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.src: rasterio.io.DatasetReader | None = None


class _OpenFiles:
    """A process-wide LRU of open datasets: one open per file per process (so per Ray task).

    Opening a COG parses its header and overview directories; a reader that re-opened every band
    file for every read group spent a quarter of its time there on local files (benchmarks, fix
    5), and over HTTP each open is a round trip. Process-wide rather than per thread, so that the
    threads of :func:`read_windows` share one open per file; a GDAL dataset must not be used by
    two threads at once, hence a lock per file, held for the whole open or read.
    """

    def __init__(self, max_open: int) -> None:
        self.max_open = max_open
        self.lock = threading.Lock()
        self.handles: OrderedDict[str, _Handle] = OrderedDict()

    @contextmanager
    def use(self, href: str) -> Iterator[rasterio.io.DatasetReader]:
        """The open dataset of ``href``, this thread's alone until the block ends."""
        with self.lock:
            handle = self.handles.get(href)
            if handle is None:
                handle = self.handles[href] = _Handle()
            self.handles.move_to_end(href)
        with handle.lock:
            if handle.src is None or handle.src.closed:
                handle.src = open_raster(href)
            yield handle.src
        self._evict()

    def _evict(self) -> None:
        """Close least recently used files beyond ``max_open`` (skipping any in use)."""
        with self.lock:
            for href in list(self.handles)[: max(0, len(self.handles) - self.max_open)]:
                handle = self.handles[href]
                if handle.lock.acquire(blocking=False):
                    try:
                        if handle.src is not None:
                            handle.src.close()
                        del self.handles[href]
                    finally:
                        handle.lock.release()

    def forget_in_child(self) -> None:
        """After ``fork``: the parent's datasets are not the child's to use or close (closing
        one would hang up the parent's connection); keep them unreachable, never closed."""
        _INHERITED.extend(h.src for h in self.handles.values() if h.src is not None)
        self.lock = threading.Lock()
        self.handles = OrderedDict()


#: Open datasets kept per process. A SeCo read task touches every scene its locations' dates
#: fall in, five files each (four bands and SCL in the demo): 64 open files thrashed on the
#: demo's 24 scenes (608 opens for 111 locations) and halved the SeCo stream's rate; 256
#: is 256 file descriptors (Ray workers allow thousands) and a few MB of headers.
MAX_OPEN = 256
_OPEN = _OpenFiles(max_open=MAX_OPEN)
_INHERITED: list[rasterio.io.DatasetReader] = []
# A forked process must open its own files: two processes reading through one inherited
# dataset (or HTTP connection) get each other's answers (seen with forked DataLoader workers:
# "Read failed", "HTTP response code: 206"). Start worker processes with spawn after remote reads.


def cached_raster(href: str) -> rasterio.io.DatasetReader:
    """The process's open dataset for ``href`` (for metadata: reads go through ``read_window``).

    Raises:
        ChipReadError: reason ``read_error`` when the file cannot be opened.
    """
    with _OPEN.use(href) as src:
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
        with _OPEN.use(href) as src:
            return _read_open(src, href, crs, bounds, shape, resampling)
    except ChipReadError:
        raise
    except Exception as exc:  # the lock or cache itself: still the file's failure, counted
        raise ChipReadError("read_error", redact(f"cannot read {href}: {exc}")) from exc


def _read_open(
    src: rasterio.io.DatasetReader,
    href: str,
    crs: str,
    bounds: Bounds,
    shape: tuple[int, int],
    resampling: Resampling,
) -> np.ndarray:
    if not _same_crs(crs, src.crs):
        raise ChipReadError("crs", redact(f"{href} is in {src.crs}, chip expects {crs}"))
    win = _snap(from_bounds(*bounds, transform=src.transform))
    full = Window(0, 0, src.width, src.height)
    eps = 1e-6
    if (
        win.col_off < -eps
        or win.row_off < -eps
        or win.col_off + win.width > full.width + eps
        or win.row_off + win.height > full.height + eps
    ):
        raise ChipReadError("out_of_bounds", redact(f"window {bounds} lies outside {href}"))
    try:
        return src.read(1, window=win, out_shape=shape, resampling=resampling)
    except Exception as exc:
        raise ChipReadError("read_error", redact(f"cannot read {href} window: {exc}")) from exc


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """The process's remote-read threads, created on first remote read (never in local-only
    runs); threads start only as requests need them."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(read_threads(), thread_name_prefix="earthloop-read")
        return _POOL


def _after_fork_in_child() -> None:
    """A forked child starts with no open files and no reader threads (neither survives fork)."""
    global _POOL, _POOL_LOCK
    _OPEN.forget_in_child()
    _POOL, _POOL_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def read_windows(
    hrefs: Sequence[str],
    crs: str,
    bounds: Bounds,
    shape: tuple[int, int],
    *,
    resampling: Resampling = Resampling.nearest,
    concurrent: bool | None = None,
) -> list[np.ndarray]:
    """:func:`read_window` of the same ``bounds`` from several single-band rasters, in order.

    Remote files are read concurrently on the process's reader threads (at most
    ``EARTHLOOP_REMOTE_READ_THREADS``, default 16, requests in flight over every caller): each
    band file is its own range request, and over a network they wait on round trips, not on the
    CPU, so issuing them together costs one round trip instead of one per band (measured in
    benchmarks/remote_bench.py). Local files are read one after another (decode is CPU-bound
    and the process's cores are already the Ray task's). ``concurrent`` overrides the choice.

    Returns:
        One (rows, cols) array per href, in the order given.

    Raises:
        ChipReadError: the first failing href's error (the others are still waited for).
    """
    if concurrent is None:
        concurrent = any(map(is_remote, hrefs))
    if not concurrent or len(hrefs) <= 1:
        return [read_window(h, crs, bounds, shape, resampling=resampling) for h in hrefs]
    pool = _pool()
    futures = [
        pool.submit(read_window, h, crs, bounds, shape, resampling=resampling) for h in hrefs
    ]
    wait(futures)
    return [f.result() for f in futures]
