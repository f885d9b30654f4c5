"""Chip throughput of earthloop's Ray Data stream against a raw decode loop and TorchGeo.

Why this exists: the data plane claims that reading *read groups* (one windowed read per band
for many neighbouring chips) keeps training decode-bound instead of overhead-bound. This script
measures that claim on the same COGs in one run, for two shapes of the problem:

* ``real-64``: 64-px chips from the real 29RKH COGs (1098 px at 100 m, 512-px internal tiles);
* ``synth-256``: 256-px chips from generated Earth-Search-like per-band COGs (1024-px tiles).

Methods, all producing 4-band float32 (C, H, W) chips:

* ``raw``: a plain rasterio loop that reads every internal tile once (tile-aligned windows) and
  cuts every chip out of it: the decode limit. On 1 process (per core) and on 2 processes.
* ``earthloop``: ``earthloop.stream.chip_dataset`` iterated with ``iter_batches`` on an isolated
  in-process Ray (2 CPUs), as the training runner uses it. Index rows with an SCL href (the
  production default: cloud mask read too) and without (like-for-like with raw and TorchGeo).
* ``torchgeo``: ``RasterDataset`` + ``RandomGeoSampler`` + ``DataLoader(num_workers=2)``, run in
  the benchmark-only venv ``.venv-bench`` (TorchGeo needs another torch) as a subprocess.
* ``read_group``: earthloop's reader in this process, no Ray: what the reader costs by itself.

The first version of this script (commit 2da6768) also patched prototype fixes into the reader;
they are in the library since then (see docs/benchmarks.md for the before/after figures).

Two rates per run: chips per wall-clock second (what training sees) and chips per CPU-second
of every process involved (this one, its pool / Ray / DataLoader children). The machine is
shared: background load only ever lowers the first, while the second stays close to what an
idle machine gives per core, so ratios "per core used" are computed on CPU time.

``GDAL_CACHEMAX`` is set (16 MB by default) in the environment before GDAL starts in any process
(this one, the raw pool, Ray workers, TorchGeo and its DataLoader workers), so that figures are
decode-bound rather than "whole test set in the block cache" (see ../shared/STACK.md next to the
checkout).

Also measured: peak memory (RSS and PSS of the driver + every Ray process) while streaming, in
one pass, chips whose float32 images add up to more than this machine's RAM; it must stay flat.

Index scale (issue 11): a synthetic chip index of 1 M and 10 M rows (every row points at the real
29RKH COGs; ``tests/stream/index_data.py`` writes it in another process): the driver's peak
private memory growth (anonymous + file pages, sampled every 20 ms; the object-store pages it
maps to read a batch are the plasma store's, not the driver's) and the time from calling
``chip_dataset`` to its first batch. Beside it, at 1 M rows, the driver-side path the streams
used before (``load_index`` + ``plan_groups``) in a fresh process: its peak RSS and time.

Usage: ``python benchmarks/stream_bench.py [--quick] [--data DIR] [--json out.json]``; ``--data``
is the real-data folder (default ``../shared/data`` relative to the repository root).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: The real Sentinel-2 data lives beside the checkout (``../shared/data``), not in it; the
#: benchmark takes it from ``--data`` so it runs from any checkout.
SHARED_DATA = ROOT / ".." / "shared" / "data"
#: The real scene used by the real-64 and RSS cases, relative to the data folder.
REAL_SCENE = Path("sentinel2-l2a/cogs-29RKH/S2A_29RKH_20200219_0_L2A")
SYNTH_DIR = Path("/tmp/earthloop-bench")
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
WORK = Path("/tmp/rbench-work")
RAY_TMP = "/tmp/rbench"
BANDS = ("B02", "B03", "B04", "B08")
TG_MARK = "TORCHGEO_RESULT "
#: what training takes from the chip stream (the pretraining runner's columns)
STREAM_COLUMNS = ["image", "valid"]
OLD_MARK = "OLD_INDEX_RESULT "
INDEX_DATA = ROOT / "tests" / "stream" / "index_data.py"

Row = dict[str, Any]


def _proc_tree(root: int | None = None) -> list[int]:
    """``root`` (this process by default) and all its live descendants, from ``/proc``.

    Read straight from procfs (Linux) so the benchmark needs nothing beyond the project venv.
    """
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu() -> float:
    """CPU seconds (user + system) of this process and all its live descendants.

    Covers the raw pool, every Ray process of the in-process cluster (raylet, GCS and workers,
    so Ray's own overhead is charged too) and DataLoader workers.
    """
    total = 0
    for pid in _proc_tree():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def tree_memory() -> tuple[float, float]:
    """(RSS, PSS) in GB summed over this process and its descendants (``smaps_rollup``)."""
    rss = pss = 0
    for pid in _proc_tree():
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss * 1024 / 1e9, pss * 1024 / 1e9


@dataclass
class Timing:
    """Chips, wall seconds, CPU seconds of the process tree and of this process alone."""

    chips: int
    wall: float
    cpu: float
    cpu_self: float = 0.0

    @property
    def rate(self) -> float:
        return self.chips / self.wall

    @property
    def cpu_rate(self) -> float:
        return self.chips / self.cpu


@dataclass
class Run:
    """What a timed block reports: the chips it produced."""

    chips: int = 0


@contextmanager
def timed(out: list[Timing]) -> Iterator[Run]:
    """Append a :class:`Timing` (wall and whole-tree CPU) for the block to ``out``."""
    run = Run()
    c0, s0, t0 = tree_cpu(), time.process_time(), time.perf_counter()
    yield run
    wall = time.perf_counter() - t0
    out.append(Timing(run.chips, wall, tree_cpu() - c0, time.process_time() - s0))


# --------------------------------------------------------------------------------------------
# cases and chip lists


@dataclass(frozen=True)
class Case:
    """One benchmark shape: which scene folders, chip size, how many chips per timed run."""

    name: str
    folders: tuple[str, ...]
    chip: int
    n_chips: int
    batch: int
    bands: tuple[str, ...] = BANDS


def _band_meta(folder: Path, band: str) -> tuple[float, float, float]:
    """Scale, offset and nodata from the STAC item next to the COGs (defaults: L2A DN → refl.)."""
    for item_path in folder.glob("*.json"):
        item = json.loads(item_path.read_text())
        for asset in item.get("assets", {}).values():
            if Path(str(asset.get("href", ""))).name == f"{band}.tif":
                rb = (asset.get("raster:bands") or [{}])[0]
                return (
                    float(rb.get("scale", 1e-4)),
                    float(rb.get("offset", 0.0)),
                    float(rb.get("nodata", 0)),
                )
    return 1e-4, 0.0, 0.0


def _synth_item_folder(synth_dir: Path) -> Path:
    """The first scene of the generated archive (every method reads this same scene)."""
    for item_path in sorted((synth_dir / "catalog").rglob("*_L2A.json")):
        item = json.loads(item_path.read_text())
        return Path(item["assets"]["blue"]["href"]).parent
    raise FileNotFoundError(f"no STAC items under {synth_dir}/catalog")


def block_size(folder: str, band: str) -> int:
    """Internal tile edge of a COG (the unit a decoder works in)."""
    import rasterio

    with rasterio.open(Path(folder) / f"{band}.tif") as src:
        return int(src.block_shapes[0][0])


def scene_rows(folder: Path, bands: Sequence[str], chip: int, scl: bool = True) -> list[Row]:
    """Index rows (``store.tables.CHIPS`` fields) for every full chip of the scene's 10 m grid.

    Chips sit on the grid an ingest writes (multiples of the chip size), so every chip lies in
    one internal tile when the chip size divides the tile size. ``scl=False`` leaves the SCL href
    out, which makes earthloop skip the cloud mask (the same 4 reads as raw and TorchGeo).
    """
    import rasterio

    with rasterio.open(folder / f"{bands[0]}.tif") as src:
        t, crs, width, height = src.transform, src.crs.to_string(), src.width, src.height
    res = t.a
    meta = [_band_meta(folder, b) for b in bands]
    scl_path = folder / "SCL.tif"
    rows: list[Row] = []
    for row in range(0, height - chip + 1, chip):
        for col in range(0, width - chip + 1, chip):
            rows.append(
                {
                    "chip_id": f"{folder.name}_{row}_{col}",
                    "location_id": f"{row:06d}{col:06d}",
                    "item_id": folder.name,
                    "tile": folder.name.split("_")[1],
                    "grid_key": folder.name.split("_")[1],
                    "datetime": datetime(2020, 1, 1, tzinfo=UTC),
                    "season": 0,
                    "lon": 0.0,
                    "lat": 0.0,
                    "crs": crs,
                    "minx": t.c + col * res,
                    "maxx": t.c + (col + chip) * res,
                    "maxy": t.f - row * res,
                    "miny": t.f - (row + chip) * res,
                    "col_off": col,
                    "row_off": row,
                    "chip_size": chip,
                    "bands": list(bands),
                    "hrefs": [str(folder / f"{b}.tif") for b in bands],
                    "scales": [m[0] for m in meta],
                    "offsets": [m[1] for m in meta],
                    "nodata": meta[0][2],
                    "scl_href": str(scl_path) if scl and scl_path.exists() else None,
                    "cloud_fraction": 0.0,
                    "shadow_fraction": 0.0,
                    "nodata_fraction": 0.0,
                    "scene_cloud_cover": 0.0,
                    "processing_baseline": "",
                    "split": "train",
                    "row_hash": "",
                }
            )
    return rows


def cycle_folder(folder: Path, cycle: str, files: Sequence[str]) -> Path:
    """A folder of symlinks to ``files`` of ``folder``, one per cycle of the chip list.

    Every cycle then reads *different paths*: GDAL caches blocks per open dataset, so a reader
    that keeps files open (TorchGeo, or earthloop with fix 5) cannot serve cycle k+1 from blocks
    that cycle k decoded. Each cycle is decoded again, like a larger archive would be.
    """
    link_dir = WORK / "links" / f"{folder.name}#{cycle}"
    link_dir.mkdir(parents=True, exist_ok=True)
    for name in files:
        link = link_dir / name
        if not link.exists():
            link.symlink_to(folder / name)
    return link_dir


def chip_list(case: Case, n: int | None = None, scl: bool = True, salt: str = "") -> list[Row]:
    """``n`` chips: the scenes' chip grids, cycled; each cycle has its own item id (so new read
    groups) and its own file paths (see :func:`cycle_folder`); a ``salt`` gives a repeat its
    own paths too."""
    per_scene = {f: scene_rows(Path(f), case.bands, case.chip, scl) for f in case.folders}
    files = [f"{b}.tif" for b in case.bands] + ["SCL.tif"]
    n = case.n_chips if n is None else n
    out: list[Row] = []
    cycle = 0
    while len(out) < n:
        for folder, rows in per_scene.items():
            src = Path(folder)
            links = cycle_folder(src, f"{salt}{cycle}", [f for f in files if (src / f).exists()])
            for r in rows[: n - len(out)]:
                out.append(
                    r
                    | {
                        "chip_id": f"{r['chip_id']}#{cycle}",
                        "item_id": f"{r['item_id']}#{cycle}",
                        "location_id": f"{r['location_id']}{cycle:04d}",
                        "hrefs": [str(links / Path(h).name) for h in r["hrefs"]],
                        "scl_href": str(links / "SCL.tif") if r["scl_href"] else None,
                    }
                )
        cycle += 1
    return out


# --------------------------------------------------------------------------------------------
# raw decode limit


@dataclass
class _Unit:
    """One internal tile of one scene cycle and the chips that lie in it."""

    key: str
    hrefs: list[str]
    scales: list[float]
    offsets: list[float]
    window: tuple[int, int, int, int]  # col_off, row_off, width, height
    size: int
    chips: list[tuple[int, int]] = field(default_factory=list)  # (row, col) inside the tile


def raw_units(rows: Sequence[Row]) -> list[_Unit]:
    """Group chips by the internal tile that holds them (refusing chips that straddle tiles)."""
    import rasterio

    shapes: dict[str, tuple[int, int, int, int]] = {}
    units: dict[tuple[str, int, int], _Unit] = {}
    for r in rows:
        href0 = r["hrefs"][0]
        if href0 not in shapes:
            with rasterio.open(href0) as src:
                bh, bw = src.block_shapes[0]
                shapes[href0] = (bh, bw, src.height, src.width)
        bh, bw, h, w = shapes[href0]
        size = int(r["chip_size"])
        br, bc = r["row_off"] // bh, r["col_off"] // bw
        if (r["row_off"] + size - 1) // bh != br or (r["col_off"] + size - 1) // bw != bc:
            raise ValueError(f"chip {r['chip_id']} straddles internal tiles: not tile-aligned")
        key = (r["item_id"], br, bc)
        if key not in units:
            units[key] = _Unit(
                key=r["item_id"],
                hrefs=list(r["hrefs"]),
                scales=list(r["scales"]),
                offsets=list(r["offsets"]),
                window=(bc * bw, br * bh, min(bw, w - bc * bw), min(bh, h - br * bh)),
                size=size,
            )
        units[key].chips.append((r["row_off"] - br * bh, r["col_off"] - bc * bw))
    return list(units.values())


def raw_read(units: Sequence[_Unit]) -> int:
    """Decode each unit's tile once per band and cut float32 chips; returns chips produced.

    Files are opened once per scene cycle (a plain loop keeps them open) and closed when the
    cycle ends, which drops their cached blocks, so the next cycle decodes again.
    """
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    n = 0
    open_key: str | None = None
    srcs: list[Any] = []
    try:
        for u in units:
            if u.key != open_key:
                for s in srcs:
                    s.close()
                srcs = [rasterio.open(h) for h in u.hrefs]
                open_key = u.key
            tiles = [s.read(1, window=Window(*u.window)) for s in srcs]
            scale = np.asarray(u.scales, np.float32)[:, None, None]
            offset = np.asarray(u.offsets, np.float32)[:, None, None]
            for r, c in u.chips:
                dn = np.stack([t[r : r + u.size, c : c + u.size] for t in tiles])
                chip = dn.astype(np.float32) * scale + offset
                n += int(chip.size > 0)
    finally:
        for s in srcs:
            s.close()
    return n


def _pool_env_probe(_: int) -> str:
    return os.environ.get("GDAL_CACHEMAX", "")


def _split(units: Sequence[_Unit], parts: int) -> list[list[_Unit]]:
    """Contiguous shares so each process opens each scene cycle's files about once."""
    k, m = divmod(len(units), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + k + (1 if i < m else 0)
        out.append(list(units[start:end]))
        start = end
    return out


def measure_raw(case: Case, repeats: int, procs: int) -> list[Timing]:
    """Tile-aligned raw loop on ``procs`` processes (1 = per core); a warm-up pass first."""
    units = raw_units(chip_list(case))
    warm = raw_units(chip_list(case, min(case.n_chips, 64), salt="w"))
    out: list[Timing] = []
    if procs == 1:
        raw_read(warm)
        for _ in range(repeats):
            with timed(out) as run:
                run.chips = raw_read(units)
        return out
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(procs, mp_context=mp.get_context("spawn")) as pool:
        probes = set(pool.map(_pool_env_probe, range(procs * 4)))
        assert probes == {os.environ["GDAL_CACHEMAX"]}, probes
        list(pool.map(raw_read, [warm] * procs))
        for _ in range(repeats):
            with timed(out) as run:
                run.chips = sum(pool.map(raw_read, _split(units, procs)))
    return out


def measure_read_group(case: Case, repeats: int, cachemax: int) -> list[Timing]:
    """earthloop's ``read_group`` in this process, no Ray, no SCL: the reader's own cost, to
    separate it from Ray's. Groups are planned as ``chip_dataset`` plans them (one internal
    tile of the COG per group)."""
    from earthloop.stream import plan_groups, read_group

    block = block_size(case.folders[0], case.bands[0])
    gpx, mc = block, max(1, block // case.chip) ** 2
    warm = plan_groups(chip_list(case, min(case.n_chips, 64), scl=False, salt="w"), gpx, mc)
    out: list[Timing] = []
    bands = list(case.bands)
    for g in warm:
        list(read_group(g, bands, cachemax_mb=cachemax))
    for i in range(repeats):  # own file paths per repeat: the reader keeps files open
        groups = plan_groups(chip_list(case, scl=False, salt=f"g{i}"), gpx, mc)
        with timed(out) as run:
            run.chips = sum(1 for g in groups for _ in read_group(g, bands, cachemax_mb=cachemax))
    return out


# --------------------------------------------------------------------------------------------
# earthloop on an isolated in-process Ray


def write_index(rows: Sequence[Row], uri: Path) -> str:
    """A chip index Delta table with the ingest's schema and row order (clustered by grid and
    tile, :func:`earthloop.ingest.pipeline.clustered`), as ``chip_dataset`` expects."""
    import pyarrow as pa
    from deltalake import write_deltalake
    from earthloop.ingest.pipeline import clustered
    from earthloop.store.tables import CHIPS

    if uri.exists():
        shutil.rmtree(uri)
    uri.parent.mkdir(parents=True, exist_ok=True)
    table = clustered(pa.Table.from_pylist(list(rows), schema=CHIPS.schema))
    write_deltalake(str(uri), table, mode="overwrite")
    return str(uri)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_ray() -> None:
    """Own local Ray (2 CPUs), never the engineers' cluster: ``address="local"``, a private temp
    dir, no dashboard, and a free dashboard-agent port (its default 52365 is taken here)."""
    import logging

    import ray
    from ray._private import parameter

    init = parameter.RayParams.__init__
    port = _free_port()

    def patched(self: Any, *a: Any, **kw: Any) -> None:
        init(self, *a, **kw)
        self.dashboard_agent_listen_port = port

    parameter.RayParams.__init__ = patched  # type: ignore[method-assign]
    try:
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            _temp_dir=RAY_TMP,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
    finally:
        parameter.RayParams.__init__ = init  # type: ignore[method-assign]
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)

    @ray.remote
    def probe() -> str:
        return os.environ.get("GDAL_CACHEMAX", "")

    seen = set(ray.get([probe.remote() for _ in range(4)]))
    assert seen == {os.environ["GDAL_CACHEMAX"]}, f"Ray workers see GDAL_CACHEMAX={seen}"


def iterate_stream(ds: Any, batch: int, on_batch: Callable[[int], None] | None = None) -> int:
    """Consume a chip dataset as training does (numpy batches of image + valid; a dataset
    built with ``columns=STREAM_COLUMNS`` as the pretraining runner builds it)."""
    import numpy as np

    n = 0
    for b in ds.iter_batches(batch_size=batch, batch_format="numpy"):
        img = b["image"]
        if img.dtype == object:  # ragged fallback: never expected, but count correctly
            img = np.stack(list(img))
        assert img.dtype == np.float32 and img.ndim == 4
        n += img.shape[0]
        if on_batch is not None:
            on_batch(img.shape[0])
    return n


def measure_stream(
    case: Case, repeats: int, cachemax: int, *, scl: bool
) -> tuple[list[Timing], str]:
    """Chips/s of the stream's ``iter_batches`` (the dataset build is not timed: it reads the
    index and plans groups once per epoch, under a second here). A small warm-up run first."""
    import warnings

    from earthloop.stream import chip_dataset

    warnings.filterwarnings("ignore", message="Use 'expr' instead of 'fn'")
    tag = f"{case.name}-{'scl' if scl else 'noscl'}"
    warm = chip_list(case, min(case.n_chips, 128), scl, salt="w")
    warm_uri = write_index(warm, WORK / f"{tag}-warm")
    uris = [
        write_index(chip_list(case, scl=scl, salt=f"r{i}"), WORK / f"{tag}-{i}")
        for i in range(repeats)
    ]

    def build(u: str) -> Any:
        return chip_dataset(
            u, split=None, bands=list(case.bands), cachemax_mb=cachemax, columns=STREAM_COLUMNS
        )[0]

    iterate_stream(build(warm_uri), case.batch)
    out: list[Timing] = []
    for uri in uris:  # own file paths per repeat: no reader can reuse a previous run's blocks
        ds = build(uri)
        with timed(out) as run:
            run.chips = iterate_stream(ds, case.batch)
        assert run.chips == case.n_chips, (run.chips, case.n_chips)
    from earthloop.stream import plan_groups

    block = block_size(case.folders[0], case.bands[0])  # chip_dataset's default group
    ng = len(plan_groups(chip_list(case, scl=scl), block, max(1, block // case.chip) ** 2))
    note = f"{ng} groups of ~{case.n_chips / ng:.0f} chips"
    return out, note + (", SCL mask" if scl else ", no SCL")


# --------------------------------------------------------------------------------------------
# TorchGeo (runs inside .venv-bench)


def torchgeo_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Time RasterDataset + RandomGeoSampler + DataLoader(num_workers=2); a short epoch 0 warms up.

    Per-band COGs: ``separate_files`` with a glob that matches one band per scene and a
    ``band`` group, so each query opens only the requested band files. Workers are persistent
    (TorchGeo keeps its file handles, and their block caches, for the whole run).
    """
    import torch
    import torchgeo
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import RandomGeoSampler

    bands = tuple(spec["bands"])

    class PerBandCOG(RasterDataset):
        filename_glob = f"{bands[0]}.tif"
        filename_regex = r"^(?P<band>B[0-9][0-9A])\.tif$"
        separate_files = True
        is_image = True
        all_bands = bands

    ds = PerBandCOG(paths=spec["folders"], bands=bands)
    sampler = RandomGeoSampler(ds, size=spec["chip"], length=spec["n_chips"])
    loader: DataLoader[dict[str, Any]] = DataLoader(
        ds,
        sampler=sampler,
        batch_size=spec["batch"],
        num_workers=2,
        collate_fn=stack_samples,
        persistent_workers=True,
    )
    timings: list[Timing] = []
    shape: list[int] = []
    warm_n = max(2 * spec["batch"], spec["n_chips"] // 10)
    for epoch in range(spec["repeats"] + 1):
        sampler.length = warm_n if epoch == 0 else spec["n_chips"]
        epoch_timing: list[Timing] = []
        with timed(epoch_timing) as run:
            for batch in loader:
                img = batch["image"]
                assert img.dtype == torch.float32
                shape = list(img.shape[1:])
                run.chips += int(img.shape[0])
        if epoch:  # epoch 0 (a tenth): workers start, open files, fill the page cache
            timings += epoch_timing
    return {
        "timings": [asdict(t) for t in timings],
        "shape": shape,
        "torchgeo": torchgeo.__version__,
        "torch": torch.__version__,
        "gdal_cachemax": os.environ.get("GDAL_CACHEMAX"),
    }


def measure_torchgeo(case: Case, repeats: int, python: Path) -> tuple[list[Timing], str]:
    """Run :func:`torchgeo_worker` in the bench venv and parse its one JSON result line."""
    spec = {**asdict(case), "repeats": repeats}
    cmd = [str(python), str(Path(__file__).resolve()), "--torchgeo-worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), timeout=900)
    for line in proc.stdout.splitlines():
        if line.startswith(TG_MARK):
            res = json.loads(line[len(TG_MARK) :])
            assert res["gdal_cachemax"] == os.environ["GDAL_CACHEMAX"]
            note = f"torchgeo {res['torchgeo']}, RandomGeoSampler, chips {res['shape']}"
            return [Timing(**t) for t in res["timings"]], note
    raise RuntimeError(f"TorchGeo run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


# --------------------------------------------------------------------------------------------
# memory while streaming more than RAM


class MemSampler:
    """Samples RSS and PSS of this process and all its descendants (the Ray processes of the
    in-process cluster) every ``period`` seconds. PSS counts shared pages (the plasma store is
    shared memory mapped by several processes) once, so it is the honest total; RSS sums them."""

    def __init__(self, period: float = 1.0) -> None:
        self.period = period
        self.samples: list[tuple[float, int, float, float]] = []  # t, chips, rss_gb, pss_gb
        self.chips = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.perf_counter()

    def _sample(self) -> None:
        rss, pss = tree_memory()
        self.samples.append((time.perf_counter() - self._t0, self.chips, rss, pss))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.period)

    def __enter__(self) -> MemSampler:
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def measure_rss(case: Case, target_gb: float, cachemax: int) -> dict[str, Any]:
    """Stream chips whose float32 images add up to ``target_gb`` GB in one pass of one dataset,
    sampling memory: flat means the stream holds a bounded window of chips, not the data set."""
    from earthloop.stream import chip_dataset

    chip_bytes = len(case.bands) * case.chip * case.chip * 4
    n = int(target_gb * 1e9 / chip_bytes) + 1
    uri = write_index(chip_list(case, n, salt="rss"), WORK / f"{case.name}-rss")
    idle = tree_memory()
    ds = chip_dataset(
        uri, split=None, bands=list(case.bands), cachemax_mb=cachemax, columns=STREAM_COLUMNS
    )[0]
    with MemSampler(2.0) as mem:
        t0 = time.perf_counter()

        def tick(k: int) -> None:
            mem.chips += k

        got = iterate_stream(ds, case.batch, tick)
        wall = time.perf_counter() - t0
    assert got == n, (got, n)
    s = mem.samples
    start = next((x for x in s if x[1] >= 0.05 * n), s[0])  # once the pipeline has filled
    ten = [s[round(i * (len(s) - 1) / 10)] for i in range(11)]
    return {
        "chips": n,
        "logical_gb": n * chip_bytes / 1e9,
        "wall_s": wall,
        "chips_per_s": n / wall,
        "before_pss_gb": idle[1],
        "start_pss_gb": start[3],
        "end_pss_gb": s[-1][3],
        "peak_pss_gb": max(x[3] for x in s),
        "start_rss_gb": start[2],
        "end_rss_gb": s[-1][2],
        "peak_rss_gb": max(x[2] for x in s),
        "curve": [(round(t), c, round(r, 2), round(p, 2)) for t, c, r, p in ten],
    }


# --------------------------------------------------------------------------------------------
# index scale: the driver must not hold the index


def private_mb() -> float:
    """This process's private resident memory (RssAnon + RssFile), in MB.

    The object-store pages the driver maps to read a batch (RssShmem) belong to the plasma
    store; counting them would measure the batch in hand, not what the driver keeps.
    """
    fields: dict[str, str] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value
    return sum(int(fields[k].split()[0]) for k in ("RssAnon", "RssFile")) / 1024


class PeakPrivate:
    """Largest :func:`private_mb` seen every 20 ms while the block runs."""

    def __init__(self) -> None:
        self.peak = private_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, private_mb())

    def __enter__(self) -> PeakPrivate:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, private_mb())


def write_synthetic_index(n: int, scene: Path) -> tuple[str, float]:
    """An ``n``-row synthetic index (every 10th row in ``val``), written by another process."""
    uri = WORK / f"index-{n}"
    if uri.exists():
        shutil.rmtree(uri)
    uri.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cmd = [sys.executable, str(INDEX_DATA), str(uri), str(scene), str(n), "10"]
    subprocess.run(cmd, check=True, timeout=1800)
    return str(uri), time.perf_counter() - t0


def index_layout(uri: str) -> dict[str, int]:
    """How the index is cut (files, row groups, the largest row group): what its read starts on."""
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    groups = []
    files = DeltaTable(uri).file_uris()
    for f in files:
        meta = pq.ParquetFile(f).metadata
        groups += [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    return {"files": len(files), "row_groups": len(groups), "max_row_group_rows": max(groups)}


def measure_index_scale(uri: str, n: int, cachemax: int) -> dict[str, Any]:
    """``chip_dataset`` over an ``n``-row index: driver peak growth, build and first-batch time."""
    import gc

    from earthloop.stream import chip_dataset

    gc.collect()
    before = private_mb()
    with PeakPrivate() as mem:
        t0 = time.perf_counter()
        ds = chip_dataset(uri, split="train", bands=list(BANDS), cachemax_mb=cachemax)[0]
        built = time.perf_counter() - t0
        it = iter(ds.iter_batches(batch_size=64, batch_format="numpy"))
        first = next(it)
        first_s = time.perf_counter() - t0
        assert first["image"].shape == (64, len(BANDS), 64, 64), first["image"].shape
        del it, first
    return {
        "rows": n,
        "build_s": built,
        "first_batch_s": first_s,
        "driver_private_before_mb": before,
        "driver_private_peak_growth_mb": mem.peak - before,
    }


def old_index_worker(uri: str) -> dict[str, Any]:
    """The driver-side path of the streams before issue 11, in a fresh process: peak RSS."""
    from earthloop.stream import load_index, plan_groups

    t0 = time.perf_counter()
    rows, _ = load_index(uri, split="train")
    loaded = time.perf_counter() - t0
    groups = plan_groups(rows, 512, 64)
    planned = time.perf_counter() - t0 - loaded
    status = Path("/proc/self/status").read_text()
    hwm = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmHWM"))
    return {
        "rows": len(rows),
        "groups": len(groups),
        "load_s": loaded,
        "plan_s": planned,
        "peak_rss_mb": hwm / 1024,
    }


def measure_old_index(uri: str) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--old-index-worker", uri]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    for line in proc.stdout.splitlines():
        if line.startswith(OLD_MARK):
            return dict(json.loads(line[len(OLD_MARK) :]))
    raise RuntimeError(f"old index path failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


# --------------------------------------------------------------------------------------------
# pretraining data wait over whole epochs (demo config)


def demo_index(data_dir: Path) -> tuple[Any, str]:
    """The demo config's ingest of the synthetic demo archive into a fresh work folder."""
    from earthloop.config import load_config
    from earthloop.ingest.pipeline import run_ingest

    work = WORK / "demo"
    shutil.rmtree(work, ignore_errors=True)
    cfg = load_config(
        str(ROOT / "configs" / "demo.yaml"),
        [
            f"workdir={work}",
            f"data_dir={data_dir}",
            f"stac.url={data_dir / 'catalog' / 'catalog.json'}",
            f"pretrain.probe.labels={data_dir / 'manifest.json'}",
        ],
    )
    run_ingest(cfg)
    return cfg, cfg.table_uri("chips")


def pretrain_wait(cfg: Any, uri: str, one_pipeline: bool, cachemax: int) -> list[dict[str, Any]]:
    """The demo's SeCo pretraining (its model, batch, epochs, 2 workers × 0.5 CPU) on this
    process's Ray; returns each epoch's metrics row (data-wait fraction over the whole epoch,
    first batch included). ``one_pipeline``: every epoch in one stream (the runner since issue
    11); else one stream per epoch (the runner before)."""
    from earthloop.pretrain.data import band_statistics
    from earthloop.pretrain.loop import WorkerSetup, train_loop
    from earthloop.pretrain.runner import batches_per_epoch, data_config
    from earthloop.store.delta import read_table
    from earthloop.stream import sample_index, seco_dataset, snapshot
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    pc = cfg.pretrain.model_copy(update={"checkpoint_every": 10**6})
    bands = list(BANDS)
    epochs = pc.epochs if one_pipeline else 1
    ds, ref, n = seco_dataset(
        uri, split="train", bands=bands, dates=3, cachemax_mb=cachemax, epochs=epochs
    )
    rows = sample_index(snapshot(uri), split="train", max_cloud=1.0, n=4096)
    mean, std = band_statistics(rows, bands)
    name = f"wait-{'one' if one_pipeline else 'per'}-{time.time_ns()}"
    metrics = str(WORK / "demo" / f"metrics-{name}")
    setup = WorkerSetup(
        pretrain=pc,
        mean=mean,
        std=std,
        run_name=name,
        job_name="bench",
        cpus_per_worker=0.5,
        metrics_table=metrics,
        batches_per_epoch=batches_per_epoch(n, pc.batch_size, 2) if one_pipeline else None,
    )
    TorchTrainer(
        train_loop_per_worker=train_loop,
        train_loop_config={"setup": setup},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(name=name, storage_path=str(WORK / "demo" / "ray")),
        datasets={"train": ds.select_columns(["images", "valid"])},
        dataset_config=data_config(),
    ).fit()
    table = read_table(metrics).sort_by("epoch")
    keep = ["epoch", "step", "data_wait_fraction", "samples_per_s", "loss"]
    return [{k: r[k] for k in keep} | {"locations": n} for r in table.to_pylist()]


# --------------------------------------------------------------------------------------------
# report


def _load() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.1f}/{b:.1f}/{c:.1f}"


@dataclass
class Result:
    """One method on one case; ``cores`` is what it may use (for the wall per-core ratio)."""

    case: str
    method: str
    cores: int
    timings: list[Timing]
    load: str
    note: str = ""

    @property
    def best(self) -> float:
        return max(t.rate for t in self.timings)

    @property
    def median(self) -> float:
        return statistics.median(t.rate for t in self.timings)

    @property
    def cpu_best(self) -> float:
        return max(t.cpu_rate for t in self.timings)


def print_table(results: Sequence[Result]) -> None:
    """Best-of-N with ratios: background load only ever slows a run, so the best run is the
    least contaminated estimate (the median is beside it). ``xTG`` compares wall rates;
    ``xraw/core`` is chips per CPU-second over the raw loop's chips per CPU-second (per core
    used, robust to load), and ``(wall)`` the same from wall rates (rate / cores / raw 1 proc)."""
    hdr = (
        f"{'case':<9} {'method':<22} {'cores':>5} {'best/s':>8} {'median/s':>8} "
        f"{'/CPU-s':>8} {'xTG':>6} {'xraw/core':>9} {'(wall)':>6}  {'load 1/5/15':<14} note"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        tg = next((x for x in results if x.case == r.case and x.method == "torchgeo"), None)
        raw = next((x for x in results if x.case == r.case and x.method == "raw 1 proc"), None)
        x_tg = f"{r.best / tg.best:.2f}" if tg else "n/a"
        x_cpu = f"{r.cpu_best / raw.cpu_best:.2f}" if raw else "n/a"
        x_wall = f"{r.best / r.cores / raw.best:.2f}" if raw else "n/a"
        print(
            f"{r.case:<9} {r.method:<22} {r.cores:>5} {r.best:>8.1f} {r.median:>8.1f} "
            f"{r.cpu_best:>8.1f} {x_tg:>6} {x_cpu:>9} {x_wall:>6}  {r.load:<14} {r.note}"
        )


def report_pretrain_wait(args: argparse.Namespace) -> dict[str, Any]:
    """Both loops on the same ingest, per epoch, side by side."""
    cfg, uri = demo_index(args.pretrain_wait.resolve())
    out: dict[str, Any] = {}
    print()
    pc = cfg.pretrain
    print(
        f"pretraining data wait per epoch (demo config: SeCo {pc.backbone}, batch {pc.batch_size},"
        f" {pc.epochs} epochs, 2 workers × 0.5 CPU)"
    )
    for one in (False, True):
        label = "one stream, every epoch" if one else "one stream per epoch"
        load = _load()
        rows = pretrain_wait(cfg, uri, one, args.cachemax)
        out["one_pipeline" if one else "per_epoch"] = {"epochs": rows, "load": load}
        waits = ", ".join(f"{100 * r['data_wait_fraction']:.1f} %" for r in rows)
        rates = ", ".join(f"{r['samples_per_s']:.1f}" for r in rows)
        print(f"  {label:<26} wait {waits}; samples/s {rates}  [load {load}]")
    return out


def index_scale(args: argparse.Namespace, sizes: Sequence[int]) -> list[dict[str, Any]]:
    """The index-scale rows of the report: new path per size, old path up to a size."""
    scene = real_scene(args)
    out: list[dict[str, Any]] = []
    print()
    print("index scale: chip_dataset over a synthetic index (split=train pushed down, 90 % kept)")
    for n in sizes:
        load = _load()
        try:
            uri, gen_s = write_synthetic_index(n, scene)
            new = measure_index_scale(uri, n, args.cachemax) | {"load": load, "write_s": gen_s}
            new |= {"layout": index_layout(uri), "load_after": _load()}
        except Exception as exc:  # a size this machine cannot hold is a result, not a crash
            out.append({"rows": n, "error": f"{type(exc).__name__}: {exc}"[-2000:]})
            print(f"  {n:>10,} rows  FAILED: {type(exc).__name__}: {str(exc)[-300:]}")
            continue
        print(
            f"  {n:>10,} rows  new: first batch {new['first_batch_s']:6.1f} s "
            f"(build {new['build_s']:.1f} s), driver private peak "
            f"+{new['driver_private_peak_growth_mb']:.0f} MB  [load {load}]; written in "
            f"{gen_s:.1f} s as {new['layout']}"
        )
        if n <= args.old_index_max:
            old = measure_old_index(uri)
            new["old_path"] = old
            print(
                f"  {n:>10,} rows  old: load_index {old['load_s']:.1f} s + plan_groups "
                f"{old['plan_s']:.1f} s on the driver, peak RSS {old['peak_rss_mb']:.0f} MB"
            )
        out.append(new)
        shutil.rmtree(uri, ignore_errors=True)
    return out


def summary(results: Sequence[Result]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per case and method: chips/s (best), chips per CPU-s (best), ratio to TorchGeo (wall)
    and to the raw loop per core (chips per CPU-s over raw 1 proc's), as docs/results holds."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        tg = next((x for x in results if x.case == r.case and x.method == "torchgeo"), None)
        raw = next((x for x in results if x.case == r.case and x.method == "raw 1 proc"), None)
        out.setdefault(r.case, {})[r.method] = {
            "chips_per_s": round(r.best, 1),
            "chips_per_s_median": round(r.median, 1),
            "chips_per_cpu_s": round(r.cpu_best, 1),
            "ratio_to_torchgeo": round(r.best / tg.best, 2) if tg else None,
            "ratio_to_raw_per_core": round(r.cpu_best / raw.cpu_best, 2) if raw else None,
            "cores": r.cores,
            "load": r.load,
            "note": r.note,
        }
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer chips, 1 repeat, 1 GB RSS stream")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per method (default 2)")
    p.add_argument("--cachemax", type=int, default=16, help="GDAL_CACHEMAX in MB, every process")
    p.add_argument("--rss-gb", type=float, default=None, help="GB streamed in the RSS run")
    p.add_argument(
        "--data",
        type=Path,
        default=SHARED_DATA,
        help="real Sentinel-2 data folder (default ../shared/data beside the repository)",
    )
    p.add_argument("--synth-dir", type=Path, default=SYNTH_DIR)
    p.add_argument("--bench-python", type=Path, default=BENCH_PYTHON)
    p.add_argument("--skip-torchgeo", action="store_true")
    # The default cases take ~2 s per earthloop run, in which the pipeline start (executor, first
    # tasks) weighs; a longer run measures the steady state an archive-scale epoch sees.
    p.add_argument("--chips", type=int, default=None, help="chips per timed run (every case)")
    p.add_argument(
        "--only",
        choices=["real-64", "synth-256", "none"],
        default=None,
        help="one throughput case, or none (only the index-scale / RSS / data-wait parts)",
    )
    p.add_argument("--json", type=Path, default=None, help="write all figures here")
    p.add_argument(
        "--index-rows",
        default="1000000,10000000",
        help="index-scale sizes, comma-separated ('' to skip; --quick: 1000000)",
    )
    p.add_argument(
        "--old-index-max",
        type=int,
        default=1_000_000,
        help="also time the old driver-side index path up to this many rows",
    )
    p.add_argument(
        "--pretrain-wait",
        type=Path,
        default=None,
        metavar="DEMO_DATA",
        help="also measure the demo pretraining's data wait per epoch, one stream per epoch "
        "against one stream for every epoch (DEMO_DATA: the synthetic demo archive)",
    )
    p.add_argument("--torchgeo-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--old-index-worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def real_scene(args: argparse.Namespace) -> Path:
    """The real scene's folder under ``--data``; exits with a clear message when it is absent."""
    scene = (args.data / REAL_SCENE).resolve()
    if not scene.is_dir():
        raise SystemExit(f"stream_bench: real scene {scene} not found; pass --data DIR")
    return scene


def cases(args: argparse.Namespace) -> list[Case]:
    """The two cases of the issue; the synthetic archive is generated on first use (≈4 min)."""
    out: list[Case] = []
    if args.only in (None, "real-64"):
        n64 = args.chips or (600 if args.quick else 2000)
        out.append(Case("real-64", (str(real_scene(args)),), 64, n64, 64))
    if args.only in (None, "synth-256"):
        if not (args.synth_dir / "manifest.json").exists():
            print(f"generating the 'bench' synthetic archive into {args.synth_dir} (once) ...")
        from earthloop.synth import generate

        generate(args.synth_dir, preset="bench", seed=0)
        folder = _synth_item_folder(args.synth_dir)
        n256 = args.chips or (100 if args.quick else 300)
        out.append(Case("synth-256", (str(folder),), 256, n256, 16))
    return [c for c in out if args.only in (None, c.name)]


def _say(case: Case, method: str, timings: Sequence[Timing], driver: bool = False) -> None:
    """One progress line per method; for streams also the driver's share of the CPU."""
    walls = ", ".join(f"{t.rate:.1f}" for t in timings)
    cpus = ", ".join(f"{t.cpu_rate:.1f}" for t in timings)
    share = ""
    if driver:
        share = " (driver: " + ", ".join(f"{t.cpu_self:.2f}/{t.cpu:.2f}" for t in timings)
        share += " CPU-s)"
    print(f"  {case.name} {method}: {walls} chips/s; {cpus} chips/CPU-s{share}  [load {_load()}]")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # before anything imports rasterio/GDAL, here and in every child process
    os.environ["GDAL_CACHEMAX"] = str(args.cachemax)
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.pop("RAY_ADDRESS", None)
    if args.torchgeo_worker:
        print(TG_MARK + json.dumps(torchgeo_worker(json.loads(args.torchgeo_worker))))
        return 0
    if args.old_index_worker:
        print(OLD_MARK + json.dumps(old_index_worker(args.old_index_worker)))
        return 0
    repeats = args.repeats or (1 if args.quick else 2)
    rss_gb = args.rss_gb if args.rss_gb is not None else (1.0 if args.quick else 30.0)
    t_start = time.perf_counter()
    print(
        f"stream_bench: {os.cpu_count()} cores, load {_load()}, GDAL_CACHEMAX={args.cachemax} MB "
        f"set in every process before GDAL starts (decode-bound figures), {repeats} timed "
        f"run(s) per method after a warm-up"
    )
    results: list[Result] = []
    extra: dict[str, Any] = {}
    todo = cases(args)
    for case in todo:
        for procs in (1, 2):
            load = _load()
            tm = measure_raw(case, repeats, procs)
            results.append(Result(case.name, f"raw {procs} proc", procs, tm, load, "tile-aligned"))
            _say(case, f"raw {procs} proc", tm)
        load = _load()
        tm = measure_read_group(case, repeats, args.cachemax)
        results.append(Result(case.name, "read_group", 1, tm, load, "in-process, no Ray, no SCL"))
        _say(case, "read_group", tm)
        if not args.skip_torchgeo:
            if not args.bench_python.exists():
                print(f"  {args.bench_python} missing: run benchmarks/setup_bench_venv.sh")
            else:
                load = _load()
                tm, note = measure_torchgeo(case, repeats, args.bench_python)
                results.append(Result(case.name, "torchgeo", 2, tm, load, note))
                _say(case, "torchgeo", tm)
    start_ray()
    try:
        for case in todo:
            for scl in (True, False):
                name = f"earthloop {'+SCL' if scl else 'no SCL'}"
                load = _load()
                tm, note = measure_stream(case, repeats, args.cachemax, scl=scl)
                results.append(Result(case.name, name, 2, tm, load, note))
                _say(case, name, tm, driver=True)
        print()
        print_table(results)
        if args.pretrain_wait is not None:
            extra["pretrain_wait"] = report_pretrain_wait(args)
        sizes = [int(x) for x in (("1000000" if args.quick else args.index_rows).split(",")) if x]
        if sizes:
            extra["index_scale"] = index_scale(args, sizes)
        if rss_gb > 0:
            rss_case = Case("rss-256", (str(real_scene(args)),), 256, 0, 16)
            load = _load()
            mem = measure_rss(rss_case, rss_gb, args.cachemax)
            extra["rss"] = mem | {"load": load}
            print()
            print(
                f"memory while streaming {mem['chips']} 256-px chips of the 29RKH COGs = "
                f"{mem['logical_gb']:.1f} GB of float32 in one pass "
                f"(chip_dataset, SCL mask, "
                f"{mem['chips_per_s']:.0f} chips/s, {mem['wall_s']:.0f} s, load {load});"
                f" driver + every Ray process (PSS counts shared object-store pages once):"
            )
            print(
                f"  PSS before {mem['before_pss_gb']:.2f} GB, start {mem['start_pss_gb']:.2f}, "
                f"end {mem['end_pss_gb']:.2f}, peak {mem['peak_pss_gb']:.2f} GB"
                f"   (RSS sum: start {mem['start_rss_gb']:.2f}, end {mem['end_rss_gb']:.2f}, "
                f"peak {mem['peak_rss_gb']:.2f} GB)"
            )
            print("  curve (s, chips, RSS GB, PSS GB):", mem["curve"])
    finally:
        import ray

        ray.shutdown()
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s, load now {_load()}")
    if args.json:
        payload = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": f"{os.cpu_count()} cores, shared with other jobs (load in each row)",
            "summary": summary(results),
            "results": [asdict(r) | {"best": r.best, "cpu_best": r.cpu_best} for r in results],
            "extra": extra,
        }
        args.json.write_text(json.dumps(payload, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
