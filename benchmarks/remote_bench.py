"""Chip throughput on remote COGs: earthloop, TorchGeo and a raw /vsicurl/ loop over HTTP.

Why this exists: every other figure reads local files, where decode dominates. Earth Search and
Planetary Computer serve COGs over HTTPS, where each range request costs a network round trip.
This script serves the real 29RKH COGs from Debian's nginx (HTTP Range, ``infra/local/cogs.sh``)
behind the latency proxy (``infra/local/latency_proxy.py``: +20 ms and +80 ms per round trip;
the kernel here has no netem) and reads 64-px chips with every method in one run.

Protocol (fixed before the first run):

* Data: bands B02 B03 B04 B08 of the real 29RKH scene (1098 px at 100 m, 512-px internal tiles,
  DEFLATE); 289 grid-aligned 64-px chips per scene copy. A *cycle* is one copy of the scene under
  its own URLs (``c007/20200115_B02.tif`` → a link to ``B02.tif``): GDAL caches blocks and
  downloaded bytes per URL, so a new cycle is fetched again, like the next scene of an archive.
  Each cycle has its own date so TorchGeo indexes cycles as a time series of one tile.
* Every timed run reads ``--cycles`` fresh cycles (never read before by any method), after a
  warm-up on its own cycles (imports, threads, Ray workers, DataLoader workers).
* GDAL settings: earthloop's remote defaults (``earthloop.raster.remote``) and
  ``GDAL_CACHEMAX`` are put in the environment before GDAL starts, for every method and process
  (TorchGeo and the raw loop included), so the comparison is of how each reader issues its
  requests, not of settings any user could copy.

Methods (all produce 4-band float32 (C, H, W) chips scaled to reflectance):

* ``raw``: a plain rasterio loop over chips, one 64-px window per band per chip, files opened
  once per cycle (``rasterio.open(url)`` = ``/vsicurl/``), 1 process, requests one at a time.
* ``read_group``: earthloop's reader in this process over ``plan_groups`` groups (one internal
  tile per group), groups one after another, as the code in the tree reads a group.
* ``read_group ×G``: the same reader with ``G`` groups in flight on a thread pool (the reader's
  open-file cache is process-wide and locked per file): the concurrency a Ray task pool gives.
* ``read_windows``: each group's four band windows requested together
  (``earthloop.raster.read.read_windows``, 4 threads), groups one after another, chips cut from
  the window as ``read_group`` does (the band loop ``read_group`` can adopt).
* ``read_windows ×G``: both: ``G`` groups in flight, each requesting its bands together.
* ``chip_dataset``: ``earthloop.stream.chip_dataset`` on an isolated in-process Ray (2 CPUs),
  ``iter_batches`` as training consumes it (no SCL mask, like the others).
* ``torchgeo``: ``RasterDataset`` (``separate_files``, a ``date`` and ``band`` regex) over the
  URLs + ``RandomGeoSampler`` + ``DataLoader(num_workers=2, persistent_workers=True)``, in
  ``.venv-bench`` (``benchmarks/setup_bench_venv.sh``); the sampler draws from the run's cycles.

Rates: chips per wall-clock second (what training sees; load on this shared 2-core machine only
lowers it) and chips per CPU-second of this process tree (nginx and the proxies are not in it:
they stand for the remote server). Best of ``--repeats`` runs.

Usage: ``python benchmarks/remote_bench.py [--delays 20,80] [--cycles 2] [--repeats 2]
[--json docs/results/stream_remote.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stream_bench as sb  # noqa: E402  (helpers only: cases, timing, Ray start, index writing)

ROOT = Path(__file__).resolve().parents[1]
WORK = Path("/tmp/remote-bench")
SERVED = WORK / "root"
STACK = WORK / "stack"
BANDS = ("B02", "B03", "B04", "B08")
CHIP = 64
TG_MARK = "TORCHGEO_REMOTE_RESULT "
DAY0 = date(2020, 1, 1)

Row = dict[str, Any]


# --------------------------------------------------------------------------------------------
# served data and servers


def cycle_date(k: int) -> str:
    """Cycle ``k``'s date (two days apart: TorchGeo's day intervals never touch)."""
    return (DAY0 + timedelta(days=2 * k)).strftime("%Y%m%d")


def serve_cycles(scene: Path, n: int) -> None:
    """Links ``SERVED/c{k}/{date}_{band}.tif`` → the scene's band files, for cycles 0..n-1."""
    for k in range(n):
        folder = SERVED / f"c{k:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for band in BANDS:
            link = folder / f"{cycle_date(k)}_{band}.tif"
            if not link.exists():
                link.symlink_to(scene / f"{band}.tif")


def cycle_url(base: str, k: int, band: str) -> str:
    return f"{base}/c{k:03d}/{cycle_date(k)}_{band}.tif"


@dataclass
class Servers:
    nginx: str
    proxies: dict[int, str]  # delay ms → base URL
    env: dict[str, str]
    access_log: Path


def cogs(action: str, env: dict[str, str]) -> str:
    script = ROOT / "infra" / "local" / "cogs.sh"
    proc = subprocess.run(["bash", str(script), action], env=env, capture_output=True, text=True)
    if proc.returncode != 0 and action != "status":
        raise SystemExit(f"remote_bench: cogs.sh {action} failed:\n{proc.stderr}{proc.stdout}")
    return proc.stdout


def start_servers(delays: Sequence[int]) -> Servers:
    port = sb._free_port()
    ports = {d: sb._free_port() for d in delays}
    env = os.environ | {
        "STACK_DIR": str(STACK),
        "COGS_ROOT": str(SERVED),
        "COGS_PORT": str(port),
        "COGS_PROXIES": " ".join(f"{p}:{d}" for d, p in ports.items()),
        "COGS_ACCESS_LOG": "1",  # for the request counts (buffered: no cost per request)
    }
    print(cogs("up", env).strip())
    return Servers(
        f"http://127.0.0.1:{port}",
        {d: f"http://127.0.0.1:{p}" for d, p in ports.items()},
        env,
        STACK / "cogs" / str(port) / "access.log",
    )


# --------------------------------------------------------------------------------------------
# requests per read: GDAL's defaults vs earthloop's settings

_READ_PLAIN = """
import sys, rasterio
from rasterio.windows import Window
with rasterio.open(sys.argv[1]) as src:
    src.read(1, window=Window(0, 0, 64, 64))
"""
_READ_EARTHLOOP = """
import sys, rasterio
from earthloop.raster.read import gdal_env, read_window
with rasterio.open(sys.argv[2]) as src:  # the local twin: grid only
    t, crs = src.transform, src.crs.to_string()
with gdal_env(16):
    read_window(sys.argv[1], crs, (t.c, t.f - 64 * t.a, t.c + 64 * t.a, t.f), (64, 64))
"""


def request_counts(
    servers: Servers, scene: Path, delay: int, cycles: Cycles
) -> dict[str, dict[str, Any]]:
    """One 64-px window of one band from a never-read file, in a fresh process: HTTP requests
    (nginx's access log) and wall time through the proxy, with GDAL's defaults (no GDAL
    variable set) and with earthloop's reader (its defaults applied)."""
    from earthloop.raster.remote import REMOTE_DEFAULTS, REMOTE_OPEN_OPTIONS

    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in REMOTE_DEFAULTS and k not in REMOTE_OPEN_OPTIONS
    }
    out: dict[str, dict[str, Any]] = {}
    for name, code in (("GDAL defaults", _READ_PLAIN), ("earthloop", _READ_EARTHLOOP)):
        (k,) = cycles.take(1)
        url = cycle_url(servers.proxies[delay], k, BANDS[0])
        cmd = [sys.executable, "-c", code, url, str(scene / f"{BANDS[0]}.tif")]
        t0 = time.perf_counter()
        subprocess.run(cmd, env=clean, check=True, capture_output=True, timeout=120)
        wall = time.perf_counter() - t0
        time.sleep(1.5)  # the access log is flushed every second
        folder = f"/c{k:03d}/"
        lines = [ln for ln in servers.access_log.read_text().splitlines() if folder in ln]
        out[name] = {
            "requests": len(lines),
            "wall_s": wall,
            "log": [ln.split('"', 1)[1] for ln in lines],
        }
        print(f"  {delay} ms one window, {name}: {len(lines)} requests, {wall:.2f} s (process)")
        for ln in out[name]["log"]:
            print(f"      {ln}")
    return out


# --------------------------------------------------------------------------------------------
# chips


def chip_rows(scene: Path, base: str, cycles: Sequence[int]) -> list[Row]:
    """Index rows (the chip index schema) for every 64-px chip of each cycle, hrefs = URLs."""
    grid = sb.scene_rows(scene, BANDS, CHIP, scl=False)
    out: list[Row] = []
    for k in cycles:
        hrefs = [cycle_url(base, k, b) for b in BANDS]
        for r in grid:
            out.append(
                r
                | {
                    "chip_id": f"{r['chip_id']}#c{k}",
                    "item_id": f"{r['item_id']}#c{k}",
                    "location_id": f"{r['location_id']}{k:04d}",
                    "hrefs": hrefs,
                }
            )
    return out


def _scale(rows: Sequence[Row]) -> tuple[Any, Any]:
    import numpy as np

    scale = np.asarray(rows[0]["scales"], np.float32)[:, None, None]
    offset = np.asarray(rows[0]["offsets"], np.float32)[:, None, None]
    return scale, offset


def raw_loop(rows: Sequence[Row]) -> int:
    """One window per band per chip through rasterio, files open for their cycle."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    scale, offset = _scale(rows)
    n, key = 0, None
    srcs: list[Any] = []
    try:
        for r in rows:
            if r["item_id"] != key:
                for s in srcs:
                    s.close()
                srcs = [rasterio.open(h) for h in r["hrefs"]]
                key = r["item_id"]
            win = Window(r["col_off"], r["row_off"], CHIP, CHIP)
            dn = np.stack([s.read(1, window=win) for s in srcs])
            chip = dn.astype(np.float32) * scale + offset
            n += int(chip.shape == (len(BANDS), CHIP, CHIP))
    finally:
        for s in srcs:
            s.close()
    return n


def groups_of(rows: Sequence[Row]) -> list[list[Row]]:
    from earthloop.stream import plan_groups

    return plan_groups(list(rows), 512, (512 // CHIP) ** 2)


def read_groups(rows: Sequence[Row], cachemax: int, in_flight: int = 1) -> int:
    """earthloop's ``read_group`` over planned groups, ``in_flight`` groups at a time."""
    from earthloop.stream import read_group

    bands = list(BANDS)

    def one(g: list[Row]) -> int:
        out = list(read_group(g, bands, cachemax_mb=cachemax))
        bad = [r["error"] for r in out if r["error"]]
        assert not bad, bad[:1]
        return len(out)

    groups = groups_of(rows)
    if in_flight == 1:
        return sum(one(g) for g in groups)
    with ThreadPoolExecutor(in_flight) as pool:
        return sum(pool.map(one, groups))


def read_windows_groups(rows: Sequence[Row], cachemax: int, in_flight: int = 1) -> int:
    """Each group's band windows requested together (``read_windows``), chips cut from them;
    ``in_flight`` groups at a time."""
    from earthloop.raster.read import gdal_env

    with gdal_env(cachemax):
        groups = groups_of(rows)
        if in_flight == 1:
            return sum(_cut_group(g) for g in groups)
        with ThreadPoolExecutor(in_flight) as pool:
            return sum(pool.map(_cut_group, groups))


def _cut_group(g: Sequence[Row]) -> int:
    """``read_group``'s arithmetic (union window, scale, cut) over ``read_windows``; the
    resampling matches ``read_group``'s (bilinear; on the 10 m grid nothing is resampled)."""
    import numpy as np
    from earthloop.raster.read import read_windows
    from rasterio.enums import Resampling

    first = g[0]
    ub = (
        min(r["minx"] for r in g),
        min(r["miny"] for r in g),
        max(r["maxx"] for r in g),
        max(r["maxy"] for r in g),
    )
    res = (first["maxx"] - first["minx"]) / CHIP
    h, w = round((ub[3] - ub[1]) / res), round((ub[2] - ub[0]) / res)
    scale, offset = _scale(g)
    windows = read_windows(first["hrefs"], first["crs"], ub, (h, w), resampling=Resampling.bilinear)
    stack = np.stack(windows).astype(np.float32) * scale + offset
    n = 0
    for r in g:
        c0, r0 = round((r["minx"] - ub[0]) / res), round((ub[3] - r["maxy"]) / res)
        n += int(stack[:, r0 : r0 + CHIP, c0 : c0 + CHIP].copy().shape[1:] == (CHIP, CHIP))
    return n


def stream_chips(rows: Sequence[Row], cachemax: int, tag: str) -> Callable[[], int]:
    """A ``chip_dataset`` over a Delta index of ``rows``; returns the timed iteration."""
    from earthloop.stream import chip_dataset

    uri = sb.write_index(rows, WORK / "index" / tag)
    ds = chip_dataset(
        uri, split=None, bands=list(BANDS), cachemax_mb=cachemax, columns=sb.STREAM_COLUMNS
    )[0]
    return lambda: sb.iterate_stream(ds, 64)


# --------------------------------------------------------------------------------------------
# TorchGeo (inside .venv-bench)

try:  # only the bench venv has TorchGeo; the class must be importable for spawned workers
    from torchgeo.datasets import RasterDataset
except ImportError:
    pass
else:

    class RemotePerBandCOG(RasterDataset):
        """Per-band COGs named ``{date}_{band}.tif``: one band file per query, cycles by date."""

        filename_glob = f"*_{BANDS[0]}.tif"
        filename_regex = r"^(?P<date>\d{8})_(?P<band>B[0-9][0-9A])\.tif$"
        date_format = "%Y%m%d"
        separate_files = True
        is_image = True
        all_bands = BANDS


def torchgeo_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Warm-up epoch on the warm cycles, then one timed epoch per repeat on its own cycles,
    through one persistent DataLoader (the sampler in the main process switches cycles)."""
    import pandas as pd
    import torch
    import torchgeo
    from torch.utils.data import DataLoader, Sampler
    from torchgeo.datasets import stack_samples
    from torchgeo.samplers import RandomGeoSampler

    bands = tuple(spec["bands"])
    assert bands == RemotePerBandCOG.all_bands
    urls = [u for run in [spec["warm"], *spec["runs"]] for u in run]
    t0 = time.perf_counter()
    ds = RemotePerBandCOG(paths=urls, bands=bands)
    index_s = time.perf_counter() - t0

    def sampler_for(dates: Sequence[str], n: int) -> RandomGeoSampler:
        lo, hi = pd.Timestamp(min(dates)), pd.Timestamp(max(dates)) + pd.Timedelta(days=1)
        return RandomGeoSampler(ds, size=spec["chip"], length=n, toi=pd.Interval(lo, hi))

    class Current(Sampler[Any]):
        def __init__(self) -> None:
            self.inner: RandomGeoSampler | None = None

        def __iter__(self) -> Iterator[Any]:
            assert self.inner is not None
            return iter(self.inner)

        def __len__(self) -> int:
            return len(self.inner) if self.inner is not None else 0

    current = Current()
    loader: DataLoader[dict[str, Any]] = DataLoader(
        ds,
        sampler=current,
        batch_size=64,
        num_workers=2,
        collate_fn=stack_samples,
        persistent_workers=True,
        # fork would hand both workers the parent's open HTTP connections (the index was built
        # over them): their requests then share one socket and the answers cross ("HTTP response
        # code: 206" at open). Spawned workers open their own, as a careful user would set up.
        multiprocessing_context="spawn",
    )
    timings: list[dict[str, Any]] = []
    epochs = [(spec["warm_dates"], spec["warm_n"])] + list(
        zip(spec["run_dates"], spec["run_n"], strict=True)
    )
    for i, (dates, n) in enumerate(epochs):
        current.inner = sampler_for(dates, n)
        out: list[sb.Timing] = []
        with sb.timed(out) as run:
            for batch in loader:
                img = batch["image"]
                assert img.dtype == torch.float32 and img.shape[1:] == (len(bands), 64, 64)
                run.chips += int(img.shape[0])
        if i:
            timings.append(asdict(out[0]))
    return {
        "timings": timings,
        "index_s": index_s,
        "torchgeo": torchgeo.__version__,
        "files": len(ds.index),
    }


def measure_torchgeo(
    python: Path, base: str, warm: Sequence[int], runs: Sequence[Sequence[int]], per_cycle: int
) -> tuple[list[sb.Timing], str]:
    spec = {
        "bands": list(BANDS),
        "chip": CHIP,
        "warm": [cycle_url(base, k, BANDS[0]) for k in warm],
        "runs": [[cycle_url(base, k, BANDS[0]) for k in run] for run in runs],
        "warm_dates": [cycle_date(k) for k in warm],
        "warm_n": per_cycle * len(warm) // 2,
        "run_dates": [[cycle_date(k) for k in run] for run in runs],
        "run_n": [per_cycle * len(run) for run in runs],
    }
    cmd = [str(python), str(Path(__file__).resolve()), "--torchgeo-worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), timeout=1200)
    for line in proc.stdout.splitlines():
        if line.startswith(TG_MARK):
            res = json.loads(line[len(TG_MARK) :])
            note = (
                f"torchgeo {res['torchgeo']}, RandomGeoSampler over the run's cycles, "
                f"{res['files']} files indexed in {res['index_s']:.1f} s (not timed)"
            )
            return [sb.Timing(**t) for t in res["timings"]], note
    raise RuntimeError(f"TorchGeo run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


# --------------------------------------------------------------------------------------------
# driver


@dataclass
class Result:
    delay_ms: int
    method: str
    timings: list[sb.Timing]
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


class Cycles:
    """Hands out never-read cycle numbers, so no run reuses another's URLs."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, n: int) -> list[int]:
        out = list(range(self.next, self.next + n))
        self.next += n
        return out


def time_method(
    fn: Callable[[Sequence[Row]], int],
    scene: Path,
    base: str,
    cycles: Cycles,
    n_cycles: int,
    repeats: int,
) -> list[sb.Timing]:
    """A warm-up on one fresh cycle, then ``repeats`` timed runs on ``n_cycles`` fresh ones."""
    fn(chip_rows(scene, base, cycles.take(1)))
    out: list[sb.Timing] = []
    for _ in range(repeats):
        rows = chip_rows(scene, base, cycles.take(n_cycles))
        with sb.timed(out) as run:
            run.chips = fn(rows)
        assert run.chips == len(rows), (run.chips, len(rows))
    return out


def print_table(results: Sequence[Result]) -> None:
    hdr = (
        f"{'RTT':>5} {'method':<22} {'best/s':>8} {'median/s':>8} {'/CPU-s':>8} "
        f"{'xTG':>6} {'xraw':>6}  {'load 1/5/15':<14} note"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        tg = next((x for x in results if x.delay_ms == r.delay_ms and x.method == "torchgeo"), None)
        raw = next((x for x in results if x.delay_ms == r.delay_ms and x.method == "raw"), None)
        x_tg = f"{r.best / tg.best:.2f}" if tg else "n/a"
        x_raw = f"{r.best / raw.best:.2f}" if raw else "n/a"
        print(
            f"{r.delay_ms:>3}ms {r.method:<22} {r.best:>8.1f} {r.median:>8.1f} "
            f"{r.cpu_best:>8.1f} {x_tg:>6} {x_raw:>6}  {r.load:<14} {r.note}"
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--delays", default="20,80", help="added round trips in ms, comma-separated")
    p.add_argument("--cycles", type=int, default=2, help="scene copies (289 chips) per run")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per method")
    p.add_argument("--in-flight", type=int, default=4, help="G of 'read_group ×G'")
    p.add_argument("--cachemax", type=int, default=16, help="GDAL_CACHEMAX in MB, every process")
    p.add_argument("--data", type=Path, default=sb.SHARED_DATA)
    p.add_argument("--bench-python", type=Path, default=sb.BENCH_PYTHON)
    p.add_argument("--skip-torchgeo", action="store_true")
    p.add_argument("--skip-ray", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="write all figures here")
    p.add_argument("--torchgeo-worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _say(delay: int, method: str, timings: Sequence[sb.Timing]) -> None:
    walls = ", ".join(f"{t.rate:.1f}" for t in timings)
    cpus = ", ".join(f"{t.cpu_rate:.1f}" for t in timings)
    print(f"  {delay} ms {method}: {walls} chips/s; {cpus} chips/CPU-s  [load {sb._load()}]")


def run_delay(
    args: argparse.Namespace, scene: Path, delay: int, base: str, cycles: Cycles
) -> list[Result]:
    """Every method at one added round trip."""
    nc, rep, cm = args.cycles, args.repeats, args.cachemax
    methods: list[tuple[str, Callable[[Sequence[Row]], int], str]] = [
        ("raw", raw_loop, "rasterio window per band per chip, 1 process"),
        ("read_group", lambda r: read_groups(r, cm), "groups one after another"),
        (
            f"read_group x{args.in_flight}",
            lambda r: read_groups(r, cm, args.in_flight),
            f"{args.in_flight} groups in flight (threads)",
        ),
        ("read_windows", lambda r: read_windows_groups(r, cm), "4 band requests together"),
        (
            f"read_windows x{args.in_flight}",
            lambda r: read_windows_groups(r, cm, args.in_flight),
            f"4 band requests together, {args.in_flight} groups in flight",
        ),
    ]
    out: list[Result] = []
    for name, fn, note in methods:
        load = sb._load()
        tm = time_method(fn, scene, base, cycles, nc, rep)
        out.append(Result(delay, name, tm, load, note))
        _say(delay, name, tm)
    if not args.skip_ray:
        load = sb._load()
        stream_chips(chip_rows(scene, base, cycles.take(1)), cm, f"{delay}-warm")()
        tms: list[sb.Timing] = []
        for i in range(rep):
            rows = chip_rows(scene, base, cycles.take(nc))
            go = stream_chips(rows, cm, f"{delay}-{i}")
            with sb.timed(tms) as run:
                run.chips = go()
            assert run.chips == len(rows), (run.chips, len(rows))
        out.append(Result(delay, "chip_dataset", tms, load, "Ray Data, 2 CPUs, no SCL"))
        _say(delay, "chip_dataset", tms)
    if not args.skip_torchgeo:
        if not args.bench_python.exists():
            print(f"  {args.bench_python} missing: run benchmarks/setup_bench_venv.sh")
        else:
            load = sb._load()
            warm = cycles.take(1)
            runs = [cycles.take(nc) for _ in range(rep)]
            tm, note = measure_torchgeo(args.bench_python, base, warm, runs, 289)
            out.append(Result(delay, "torchgeo", tm, load, note))
            _say(delay, "torchgeo", tm)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["GDAL_CACHEMAX"] = str(args.cachemax)
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.pop("RAY_ADDRESS", None)
    if args.torchgeo_worker:
        print(TG_MARK + json.dumps(torchgeo_worker(json.loads(args.torchgeo_worker))))
        return 0
    from earthloop.raster.remote import REMOTE_DEFAULTS, apply_defaults

    apply_defaults()  # before GDAL starts anywhere: every method and child process gets them
    delays = [int(d) for d in args.delays.split(",")]
    scene = sb.real_scene(args)
    per_delay = 5 * (1 + args.repeats * args.cycles) + (1 + args.repeats * args.cycles) * 2 + 2
    serve_cycles(scene, per_delay * len(delays))
    t_start = time.perf_counter()
    print(
        f"remote_bench: {os.cpu_count()} cores, load {sb._load()}, GDAL_CACHEMAX="
        f"{args.cachemax} MB, {args.cycles} cycles x 289 64-px chips per timed run, "
        f"{args.repeats} runs per method after a warm-up; GDAL settings for all: "
        + " ".join(f"{k}={os.environ[k]}" for k in REMOTE_DEFAULTS)
    )
    servers = start_servers(delays)
    results: list[Result] = []
    cycles = Cycles()
    counts: dict[int, Any] = {}
    try:
        for delay in delays:
            counts[delay] = request_counts(servers, scene, delay, cycles)
        if not args.skip_ray:
            sb.start_ray()
        for delay in delays:
            results += run_delay(args, scene, delay, servers.proxies[delay], cycles)
    finally:
        if not args.skip_ray:
            import ray

            ray.shutdown()
        cogs("down", servers.env)
    print()
    print_table(results)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s, load now {sb._load()}")
    if args.json:
        payload = {
            "protocol": {
                "chips_per_run": 289 * args.cycles,
                "repeats": args.repeats,
                "chip_px": CHIP,
                "bands": list(BANDS),
                "gdal_cachemax_mb": args.cachemax,
                "gdal": {k: os.environ[k] for k in REMOTE_DEFAULTS},
                "delays_ms": delays,
            },
            "requests_per_fresh_window": counts,
            "results": [
                asdict(r) | {"best": r.best, "median": r.median, "cpu_best": r.cpu_best}
                for r in results
            ],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
