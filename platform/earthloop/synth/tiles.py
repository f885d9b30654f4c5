"""MGRS tile ids → UTM grids placed where the real Sentinel-2 tiles are.

A synthetic tile starts near the upper-left corner of the real S2 tile (just outside the north-west
corner of its 100 km MGRS square), so ids, EPSG codes, ``mgrs:*`` properties and WGS84 footprints
agree with each other and with what a reader knows about real tiles; only the extent is smaller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

_COLUMN_SETS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
_BAND_LETTERS = "CDEFGHJKLMNPQRSTUVWX"
_SQUARE_M = 100_000
_S2_TILE_M = 109_800


@dataclass(frozen=True)
class MgrsTile:
    """A decoded MGRS 100 km square id such as ``33TWL``."""

    zone: int
    band: str
    square: str
    epsg: int
    easting: int  # south-west corner of the 100 km square (UTM metres)
    northing: int

    @property
    def id(self) -> str:
        return f"{self.zone:02d}{self.band}{self.square}"

    @property
    def origin(self) -> tuple[float, float]:
        """Upper-left corner (x, y) in UTM metres; real S2 tiles start a few tens of metres
        outside the square (e.g. 33TWN at 499980, 5300040), which we copy as a fixed offset."""
        return float(self.easting - 20), float(self.northing + _SQUARE_M + 40)


def _band_latitudes(band: str) -> tuple[float, float]:
    i = _BAND_LETTERS.index(band)
    south = -80.0 + 8.0 * i
    return south, (84.0 if band == "X" else south + 8.0)


def parse_mgrs(tile_id: str) -> MgrsTile:
    """Decode ``33TWL``; the 2000 km ambiguity of row letters is resolved by the latitude band."""
    text = tile_id.strip().upper()
    digits = len(text) - 3
    if digits not in (1, 2) or not text[:digits].isdigit():
        raise ValueError(f"MGRS tile id must look like '33TWL', got {tile_id!r}")
    zone, band, col, row = int(text[:digits]), text[digits], text[digits + 1], text[digits + 2]
    if not 1 <= zone <= 60:
        raise ValueError(f"UTM zone must be 1..60 in {tile_id!r}")
    if band not in _BAND_LETTERS:
        raise ValueError(f"latitude band {band!r} of {tile_id!r} is not one of {_BAND_LETTERS}")
    cols = _COLUMN_SETS[(zone - 1) % 3]
    if col not in cols:
        raise ValueError(f"column letter {col!r} does not occur in zone {zone} (letters {cols})")
    if row not in _ROW_LETTERS:
        raise ValueError(f"row letter {row!r} of {tile_id!r} is not one of {_ROW_LETTERS}")
    easting = (cols.index(col) + 1) * _SQUARE_M
    row_index = (_ROW_LETTERS.index(row) - (5 if zone % 2 == 0 else 0)) % 20
    north = band >= "N"
    epsg = (32600 if north else 32700) + zone
    lat_lo, lat_hi = _band_latitudes(band)
    crs = CRS.from_epsg(epsg)
    for cycle in range(5):
        northing = row_index * _SQUARE_M + cycle * 2_000_000
        _, lats = warp_transform(crs, "EPSG:4326", [easting + 50_000], [northing + 50_000])
        if lat_lo - 0.5 <= lats[0] <= lat_hi + 0.5:
            return MgrsTile(zone, band, col + row, epsg, easting, northing)
    raise ValueError(
        f"MGRS square {col}{row} does not occur in latitude band {band} of zone {zone}"
    )


def square_letters(zone: int, easting: float, northing: float) -> str:
    """The 100 km square letters of a UTM coordinate (inverse of the lettering in parse_mgrs)."""
    cols = _COLUMN_SETS[(zone - 1) % 3]
    col = cols[int(easting // _SQUARE_M) - 1]
    row = _ROW_LETTERS[(int(northing // _SQUARE_M) + (5 if zone % 2 == 0 else 0)) % 20]
    return col + row


@dataclass(frozen=True)
class TileGrid:
    """One synthetic tile: ``size`` pixels at 10 m from the real S2 tile's upper-left corner."""

    mgrs: MgrsTile
    size: int

    @property
    def id(self) -> str:
        return self.mgrs.id

    @property
    def epsg(self) -> int:
        return self.mgrs.epsg

    @property
    def crs(self) -> CRS:
        return CRS.from_epsg(self.mgrs.epsg)

    @property
    def padded(self) -> int:
        """Working size: a multiple of 6 so the 60 m grid is whole (10 m grid is cropped)."""
        return int(math.ceil(self.size / 6) * 6)

    def shape(self, resolution_m: int) -> tuple[int, int]:
        """Pixel shape of a band at its native resolution.

        10 m and 20 m grids cover exactly the tile; the 60 m grid is rounded up and therefore
        extends up to 50 m beyond the right/bottom edge when ``size`` is not a multiple of 6.
        """
        n = self.padded // 6 if resolution_m == 60 else self.size * 10 // resolution_m
        return n, n

    def transform(self, resolution_m: int) -> Affine:
        x0, y0 = self.mgrs.origin
        return Affine(float(resolution_m), 0.0, x0, 0.0, -float(resolution_m), y0)

    def bounds(self, resolution_m: int = 10) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in UTM metres."""
        x0, y0 = self.mgrs.origin
        h, w = self.shape(resolution_m)
        return x0, y0 - h * resolution_m, x0 + w * resolution_m, y0

    def centre_lonlat(self) -> tuple[float, float]:
        left, bottom, right, top = self.bounds()
        xs, ys = warp_transform(self.crs, "EPSG:4326", [(left + right) / 2], [(bottom + top) / 2])
        return float(xs[0]), float(ys[0])


def tile_grid(tile_id: str, size: int) -> TileGrid:
    """Grid for a tile id; the synthetic tile must fit inside the 109.8 km S2 tile."""
    if size * 10 > _S2_TILE_M:
        raise ValueError(f"{size} px at 10 m exceeds a Sentinel-2 tile ({_S2_TILE_M // 10} px)")
    return TileGrid(parse_mgrs(tile_id), size)
