"""The Sentinel-2 MSI band registry.

Catalogues name the same band differently (Earth Search uses common names such as ``nir08``,
Planetary Computer and ESA use ``B8A``); users should be able to write either, so every lookup
goes through :func:`resolve_band`, which maps any alias to one canonical :class:`Band`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Band:
    """One spectral band (or the SCL layer) of an L2A product."""

    name: str  # canonical ESA name: "B02", "B8A", "SCL"
    common_name: str  # Earth Search v1 asset key: "blue", "nir08", "scl"
    resolution_m: int  # native ground sampling distance
    wavelength_nm: float | None  # central wavelength; None for SCL
    bandwidth_nm: float | None = None

    @property
    def is_spectral(self) -> bool:
        return self.wavelength_nm is not None


_TABLE: tuple[Band, ...] = (
    Band("B01", "coastal", 60, 442.7, 21),
    Band("B02", "blue", 10, 492.4, 66),
    Band("B03", "green", 10, 559.8, 36),
    Band("B04", "red", 10, 664.6, 31),
    Band("B05", "rededge1", 20, 704.1, 15),
    Band("B06", "rededge2", 20, 740.5, 15),
    Band("B07", "rededge3", 20, 782.8, 20),
    Band("B08", "nir", 10, 832.8, 106),
    Band("B8A", "nir08", 20, 864.7, 21),
    Band("B09", "nir09", 60, 945.1, 20),
    Band("B11", "swir16", 20, 1613.7, 91),
    Band("B12", "swir22", 20, 2202.4, 175),
    Band("SCL", "scl", 20, None),
)

BANDS: dict[str, Band] = {b.name: b for b in _TABLE}
"""Canonical name → band, in wavelength order (SCL last)."""

SPECTRAL_BANDS: tuple[str, ...] = tuple(b.name for b in _TABLE if b.is_spectral)

_ALIASES: dict[str, Band] = {}
for _b in _TABLE:
    for _alias in {_b.name, _b.common_name, _b.name.replace("B0", "B")}:
        _ALIASES[_alias.lower()] = _b
# Older Earth Search (v0) and some tools spell B8A "B08A" or "nir narrow".
_ALIASES["b08a"] = BANDS["B8A"]
_ALIASES["nir_narrow"] = BANDS["B8A"]


def resolve_band(name: str) -> Band:
    """Return the band for any accepted alias (case-insensitive); a clear error otherwise."""
    band = _ALIASES.get(name.strip().lower())
    if band is None:
        known = ", ".join(f"{b.name}/{b.common_name}" for b in _TABLE)
        raise KeyError(f"unknown Sentinel-2 band {name!r}; known bands: {known}")
    return band


def resolve_bands(names: list[str] | tuple[str, ...]) -> list[Band]:
    """Resolve a band selection, rejecting duplicates (``B08`` and ``nir`` are the same band)."""
    bands = [resolve_band(n) for n in names]
    seen: set[str] = set()
    for n, b in zip(names, bands, strict=True):
        if b.name in seen:
            raise ValueError(f"band {n!r} selected twice (it is {b.name})")
        seen.add(b.name)
    if not bands:
        raise ValueError("select at least one band")
    return bands


def asset_key_candidates(band: Band) -> tuple[str, ...]:
    """Asset keys under which catalogues publish this band, most common first."""
    keys = [band.common_name, band.name, band.name.lower(), f"{band.name}_{band.resolution_m}m"]
    if band.name == "B8A":
        keys.append("B08A")
    return tuple(dict.fromkeys(keys))
