"""``earthloop sample-data``: write the synthetic archive the demo and tests run on.

Idempotent so that ``make demo`` can call it every time: an archive with the same preset, seed
and overrides is left alone (``--force`` rewrites it).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from types import TracebackType
from typing import Any

import yaml

from earthloop.observe.logs import setup_logging
from earthloop.observe.progress import Progress
from earthloop.synth.generate import find_existing, generate, plan_scenes
from earthloop.synth.manifest import SynthManifest
from earthloop.synth.presets import PRESETS, resolve_preset

DEFAULT_OUT = "data/synthetic"
#: Seconds between progress lines; the final line is always written.
PROGRESS_EVERY_S = 10.0

_log = logging.getLogger("earthloop.synth")


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


class _SceneProgress:
    """Feeds ``generate``'s per-scene callback into the shared :class:`Progress` lines.

    Why an adapter: ``generate`` reports ``(done, total, message)`` after each scene and knows
    nothing about logging; the command turns that into the same rate/ETA lines every other job
    writes, so a long bench run shows it is alive in the same format.
    """

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.progress: Progress | None = None

    def __call__(self, done: int, total: int, message: str) -> None:
        if self.progress is None:
            self.progress = Progress(
                "sample-data", total, unit="scenes", every_s=self.every_s, logger=_log
            )
        self.progress.update(done - self.progress.done, scene=message)

    def __enter__(self) -> _SceneProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Write the final line (rate over the whole run), if any scene was reported."""
        if self.progress is not None:
            self.progress.__exit__(exc_type, exc, tb)


def _report(m: SynthManifest) -> None:
    print(f"root:        {m.root}")
    print(f"manifest:    {m.path}")
    print(f"collection:  {m.collection_path}")
    print(f"items:       {m.items_ndjson} ({len(m.item_paths)} items)")
    print(f"catalog:     {m.catalog_path}")
    for tile, lab in m.labels.items():
        print(f"labels {tile}: {lab.landcover.parent}/{{landcover,croptype,parcels}}.tif")
    print(f"serve with:  rustac serve {m.collection_path} {m.items_ndjson}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="earthloop sample-data",
        description="Generate synthetic Sentinel-2 L2A scenes (COGs + STAC) with ground-truth labels.",
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--preset",
        default="demo_world",
        choices=sorted(PRESETS),
        help="dataset size (default demo_world: what `make demo` generates)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--force", action="store_true", help="regenerate even if an identical archive exists"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset field, e.g. --set size_px=256 --set 'tiles=[33TWL]'",
    )
    ns = parser.parse_args(argv)
    setup_logging()  # progress lines are log records on stderr, as in every other job
    try:
        overrides = _parse_overrides(ns.overrides)
        preset = resolve_preset(ns.preset, overrides)
        found = (
            None if ns.force else find_existing(ns.out, preset=ns.preset, seed=ns.seed, **overrides)
        )
    except (ValueError, KeyError) as exc:
        print(f"earthloop sample-data: error: {exc}", file=sys.stderr)
        return 2
    if found is not None:
        print(f"up to date: {found.root} (preset {ns.preset}, seed {ns.seed}); --force regenerates")
        _report(found)
        return 0
    try:
        n = len(plan_scenes(preset, ns.seed))
        print(
            f"generating {n} scenes ({len(preset.tiles)} tiles × {len(preset.dates)} dates, "
            f"{preset.size_px} px, {len(preset.bands)} bands) into {ns.out}",
            flush=True,
        )
        t0 = time.perf_counter()
        with _SceneProgress(PROGRESS_EVERY_S) as progress:
            manifest = generate(
                ns.out, preset=ns.preset, seed=ns.seed, force=True, progress=progress, **overrides
            )
    except (ValueError, KeyError) as exc:
        print(f"earthloop sample-data: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"earthloop sample-data: cannot write {ns.out}: {exc}", file=sys.stderr)
        return 1
    print(f"done in {time.perf_counter() - t0:.1f} s")
    _report(manifest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
