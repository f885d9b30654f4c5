"""Named sizes of the synthetic archive.

A preset fixes everything that shapes the output except the seed, so "same preset + same seed +
same overrides" is a complete description of a dataset and can be compared against the manifest
of an earlier run (idempotent ``earthloop sample-data``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from earthloop.s2.bands import SPECTRAL_BANDS, resolve_bands
from earthloop.synth.regions import WorldSpec
from earthloop.synth.tiles import tile_grid


@dataclass(frozen=True)
class SynthPreset:
    """Everything that shapes a synthetic archive, apart from the seed."""

    tiles: tuple[str, ...]
    """MGRS tile ids; each becomes one UTM grid whose upper-left corner is the real tile's."""
    size_px: int
    """Tile edge on the 10 m grid (must be even so 20 m bands cover exactly the same bounds)."""
    dates: tuple[str, ...]
    """Acquisition dates as ``MM-DD`` of ``year``; each tile is shifted by a few days (orbits)."""
    year: int = 2023
    bands: tuple[str, ...] = SPECTRAL_BANDS
    """Spectral bands to write (any alias accepted); SCL is controlled by ``include_scl``."""
    include_scl: bool = True
    blocksize: int = 256
    """Internal COG tile size (Earth Search uses 1024)."""
    cloud_cover: tuple[float, ...] = (0.01, 0.45)
    """Target cloud fractions, permuted per tile and cycled over the dates."""
    legacy_baseline: tuple[tuple[int, int], ...] = ((0, 0),)
    """(tile index, date index) scenes written with baseline 03.01 (no +1000 DN offset)."""
    nodata_edge: tuple[tuple[int, int], ...] = ()
    """(tile index, date index) scenes cut by an orbit swath edge (a nodata wedge)."""
    region_px: int = 64
    """Typical size of a land-cover region (Voronoi cell) in 10 m pixels."""
    parcel_px: int = 20
    """Typical crop parcel size in 10 m pixels."""
    overview_resampling: str = "average"
    """GDAL resampling for reflectance overviews (SCL and labels always use nearest)."""
    world: WorldSpec | None = None
    """The benchmark world (regions, roles, realism switches; see docs/world.md), or None for
    the original single-biome generator."""

    def validate(self) -> SynthPreset:
        """Fail early, naming the field, instead of halfway through writing a dataset."""
        if not self.tiles:
            raise ValueError("preset needs at least one tile")
        if len(set(self.tiles)) != len(self.tiles):
            raise ValueError(f"duplicate tiles in {self.tiles}")
        for tile in self.tiles:
            tile_grid(tile, self.size_px)
        if self.size_px < 32 or self.size_px % 2:
            raise ValueError(f"size_px must be an even number >= 32, got {self.size_px}")
        if not self.dates:
            raise ValueError("preset needs at least one date")
        for d in self.dates:
            parts = d.split("-")
            if len(parts) != 2 or not all(p.isdigit() for p in parts):
                raise ValueError(f"dates must look like 'MM-DD', got {d!r}")
        if len(set(self.dates)) != len(self.dates):
            raise ValueError(f"duplicate dates in {self.dates}")
        resolve_bands(list(self.bands))
        if self.blocksize < 128 or self.blocksize % 16:  # GDAL's COG driver minimum
            raise ValueError(f"blocksize must be a multiple of 16 and >= 128, got {self.blocksize}")
        if not self.cloud_cover or not all(0.0 <= c <= 0.95 for c in self.cloud_cover):
            raise ValueError(f"cloud_cover entries must lie in [0, 0.95], got {self.cloud_cover}")
        for name, scenes in (
            ("legacy_baseline", self.legacy_baseline),
            ("nodata_edge", self.nodata_edge),
        ):
            for ti, di in scenes:
                if not (0 <= ti < len(self.tiles) and 0 <= di < len(self.dates)):
                    raise ValueError(
                        f"{name} entry {(ti, di)} is outside {len(self.tiles)} tiles × {len(self.dates)} dates"
                    )
        if self.region_px < 8 or self.parcel_px < 4:
            raise ValueError("region_px must be >= 8 and parcel_px >= 4")
        if self.overview_resampling not in {"average", "nearest", "bilinear", "cubic", "mode"}:
            raise ValueError(f"unsupported overview_resampling {self.overview_resampling!r}")
        if self.world is not None:
            self.world.validate(len(self.tiles))
            if self.size_px > 1024:
                raise ValueError(
                    f"world presets render whole tiles in memory: size_px must be <= 1024, "
                    f"got {self.size_px}"
                )
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists) for the manifest.

        ``world`` is left out when None, so archives of the original presets keep the
        parameters (and thus the idempotence fingerprint) they had before the world existed;
        likewise ``world.strong_biomes`` when off, so v1 world archives keep theirs.
        """
        out: dict[str, Any] = json_ready(dataclasses.asdict(self))
        if out.get("world") is None:
            out.pop("world", None)
        elif not out["world"].get("strong_biomes"):
            out["world"].pop("strong_biomes", None)  # v1 worlds keep their fingerprint
        return out


def json_ready(value: Any) -> Any:
    """Tuples → lists recursively, so a JSON round trip compares equal."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


_WORLD_REGIONS = ("atlantic", "continental", "mediterranean")
_WORLD_TILES = (
    # atlantic: Brittany / Normandy
    "30UVU", "30UVV", "30UWU", "30UWV", "30UXU", "30UXV", "30UYU", "30UYV",
    # continental: north-east Germany / north-west Poland
    "33UUU", "33UUV", "33UVU", "33UVV", "33UWU", "33UWV", "33UXU", "33UXV",
    # mediterranean: La Mancha / Andalusia
    "30SUH", "30SUJ", "30SVH", "30SVJ", "30SWH", "30SWJ", "30SXH", "30SXJ",
)  # fmt: skip
_SEASONS = ("01-14", "03-15", "05-14", "07-13", "09-11", "11-10")

PRESETS: dict[str, SynthPreset] = {
    "tiny": SynthPreset(
        tiles=("33TWL", "34TCR"),
        size_px=128,
        dates=("01-15", "05-15", "07-15"),
        blocksize=128,
        cloud_cover=(0.01, 0.2, 0.5),
        legacy_baseline=((0, 1),),
        nodata_edge=((1, 1),),
        region_px=24,
        parcel_px=12,
    ),
    "demo": SynthPreset(
        tiles=("33TWL", "33TXL", "34TCR", "34TDR"),
        size_px=512,
        dates=_SEASONS,
        blocksize=256,
        cloud_cover=(0.005, 0.02, 0.1, 0.25, 0.45, 0.7),
        legacy_baseline=((0, 0), (2, 3)),
        nodata_edge=((1, 2), (3, 4)),
        region_px=64,
        parcel_px=20,
    ),
    "bench": SynthPreset(
        tiles=("33TWL",),
        # 0.4 × a real 10980 px tile: partial edge blocks as in Earth Search, and no overview
        # level exactly one 1024 px block wide (rio-cogeo would flag that level as untiled).
        size_px=4392,
        dates=("03-15", "07-13"),
        bands=("blue", "green", "red", "nir"),
        blocksize=1024,
        cloud_cover=(0.05, 0.3),
        legacy_baseline=((0, 1),),
        region_px=160,
        parcel_px=32,
    ),
    "world": SynthPreset(
        tiles=_WORLD_TILES,
        size_px=384,
        dates=("02-14", "03-26", "04-25", "05-20", "06-14", "07-09", "08-18", "10-02"),
        bands=("blue", "green", "red", "nir"),
        blocksize=128,
        cloud_cover=(0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.01),
        legacy_baseline=((0, 0),),
        region_px=56,
        parcel_px=16,
        world=WorldSpec(
            regions=tuple(r for r in _WORLD_REGIONS for _ in range(8)),
            roles=("pool",) * 2
            + ("test",) * 2
            + ("archive",) * 4
            + ("pool",) * 2
            + ("test",) * 2
            + ("archive",) * 4
            + ("test",) * 2
            + ("archive",) * 6,
            heldout="mediterranean",
        ),
    ),
    "demo_world": SynthPreset(
        # `make demo`'s data: the benchmark world's rendering (docs/world.md) on the `demo`
        # preset's tiles and 4 neighbours, six seasons: context classes, two biomes, per-date
        # effects, so a few labelled chips no longer teach the whole land cover (the `demo`
        # preset's land cover is a per-pixel function of the spectra: 7 labelled chips scored
        # as high as 154). Roles only matter to the benchmark; the demo's sweep labels all.
        tiles=("33TWL", "33TXL", "33TWK", "33TXK", "34TCR", "34TDR", "34TCQ", "34TDQ"),
        size_px=768,
        dates=_SEASONS,
        bands=("blue", "green", "red", "nir"),
        blocksize=256,
        cloud_cover=(0.005, 0.02, 0.1, 0.25, 0.45, 0.7),
        legacy_baseline=((0, 0), (2, 3)),
        nodata_edge=((1, 2), (3, 4)),
        region_px=56,
        parcel_px=16,
        world=WorldSpec(
            regions=("continental",) * 4 + ("mediterranean",) * 4,
            roles=("pool", "pool", "test", "archive", "test", "archive", "archive", "archive"),
            heldout="mediterranean",
        ),
    ),
    "world_small": SynthPreset(
        tiles=("30UWU", "30UXU", "33UUU", "33UVU", "30SVH", "30SWH"),
        size_px=96,
        dates=("03-26", "05-20", "07-09", "10-02"),
        bands=("blue", "green", "red", "nir"),
        blocksize=128,
        cloud_cover=(0.0, 0.1, 0.3),
        legacy_baseline=(),
        region_px=32,
        parcel_px=12,
        world=WorldSpec(
            regions=("atlantic",) * 2 + ("continental",) * 2 + ("mediterranean",) * 2,
            roles=("pool", "test", "test", "archive", "test", "archive"),
            heldout="mediterranean",
        ),
    ),
}
"""Named presets: ``tiny`` for unit tests, ``demo`` for the integration tests (and the demo
before it moved to ``demo_world``), ``bench`` for
Earth-Search-like I/O benchmarks (4392 px tiles, 1024 px internal tiles, 4 bands + SCL),
``demo_world`` for ``make demo`` (the world's rendering at demo size),
``world`` for the label-efficiency benchmark world (docs/world.md), ``world_v2`` the same world
with stronger Mediterranean spectra (docs/world.md, "World v2") and ``world_small``, its
seconds-to-build version for tests."""

_V1 = PRESETS["world"]
assert _V1.world is not None
PRESETS["world_v2"] = dataclasses.replace(
    _V1, world=dataclasses.replace(_V1.world, strong_biomes=True)
)


def _world_override(base: WorldSpec | None, value: Any) -> WorldSpec | None:
    """``world=`` accepts a WorldSpec, None, or a dict of fields to change on the preset's."""
    if value is None or isinstance(value, WorldSpec):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"world override must be a dict of WorldSpec fields, got {value!r}")
    if base is None:
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in value.items()
        }
        return WorldSpec(**fields)
    return base.with_switches(value)


def resolve_preset(preset: str | SynthPreset, overrides: dict[str, Any]) -> SynthPreset:
    """Apply keyword overrides to a named preset, rejecting unknown keys by name."""
    if isinstance(preset, SynthPreset):
        base = preset
    else:
        try:
            base = PRESETS[preset]
        except KeyError:
            raise ValueError(
                f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}"
            ) from None
    known = {f.name for f in dataclasses.fields(SynthPreset)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown override(s) {unknown}; valid keys: {sorted(known)}")
    coerced: dict[str, Any] = {}
    for key, value in overrides.items():
        if key == "world":
            value = _world_override(base.world, value)
        elif key in {"legacy_baseline", "nodata_edge"}:
            value = tuple((int(t), int(d)) for t, d in value)
        elif isinstance(value, list):
            value = tuple(value)
        coerced[key] = value
    # Scene lists inherited from the preset follow a tiles/dates override instead of failing it;
    # lists the caller passes explicitly are validated strictly.
    n_tiles = len(coerced.get("tiles", base.tiles))
    n_dates = len(coerced.get("dates", base.dates))
    for key in ("legacy_baseline", "nodata_edge"):
        if key not in coerced:
            coerced[key] = tuple(
                (t, d) for t, d in getattr(base, key) if t < n_tiles and d < n_dates
            )
    return dataclasses.replace(base, **coerced).validate()
