"""What we need to know about one scene before cutting chips from it.

Opening each band's header once per scene (not per chip) gives the grid, checks the CRS against
the item's ``proj:epsg`` and surfaces missing or unreadable assets as counted, named problems.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pystac

from earthloop.ingest.stac import item_datetime
from earthloop.raster.read import ChipReadError, map_href, open_raster
from earthloop.s2.bands import BANDS, Band, asset_key_candidates
from earthloop.s2.radiometry import radiometry_for_asset


@dataclass(frozen=True)
class BandAsset:
    band: str  # canonical name
    href: str
    scale: float
    offset: float
    nodata: float
    res: float  # pixel size of the file, CRS units
    width: int
    height: int


@dataclass
class Scene:
    item_id: str
    datetime: datetime
    tile: str
    crs: str
    cloud_cover: float | None
    baseline: str | None
    geometry: dict[str, Any]
    ref: BandAsset  # finest selected band: defines the chip grid
    bands: list[BandAsset]
    scl: BandAsset
    ref_origin: tuple[float, float] = (0.0, 0.0)  # (x0, y0) upper-left of the ref grid
    align: int = 1  # chip offsets snap to this many ref pixels so coarse bands align exactly
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def grid_key(self) -> str:
        """Scenes sharing this key share a pixel grid: same chip bounds, any date."""
        return f"{self.crs}|{self.ref_origin[0]:.3f}|{self.ref_origin[1]:.3f}|{self.ref.res:.3f}"


def find_asset(item: pystac.Item, band: Band) -> tuple[str, pystac.Asset]:
    for key in asset_key_candidates(band):
        if key in item.assets:
            return key, item.assets[key]
    raise ChipReadError(
        "missing_asset",
        f"item {item.id} has no asset for band {band.name} (tried {list(asset_key_candidates(band))})",
    )


def _asset_href(asset: pystac.Asset) -> str:
    """Absolute paths and URLs stay as written; only relative hrefs resolve against the item.

    (pystac would resolve ``/data/x.tif`` against an API item's ``http://…`` self link.)
    """
    href = asset.href
    if "://" in href or href.startswith("/"):
        return href
    return asset.get_absolute_href() or href


def _item_epsgs(item: pystac.Item) -> set[int]:
    """Every EPSG code the item claims (``proj:epsg`` and/or ``proj:code``)."""
    props = item.properties
    out: set[int] = set()
    if props.get("proj:epsg") is not None:
        out.add(int(props["proj:epsg"]))
    code = props.get("proj:code")
    if isinstance(code, str) and code.upper().startswith("EPSG:"):
        out.add(int(code.split(":")[1]))
    return out


def _tile_of(item: pystac.Item) -> str:
    p = item.properties
    if p.get("mgrs:utm_zone") is not None:
        return (
            f"{p['mgrs:utm_zone']}{p.get('mgrs:latitude_band', '')}{p.get('mgrs:grid_square', '')}"
        )
    return str(p.get("s2:mgrs_tile") or p.get("grid:code") or item.id)


def describe_scene(
    item: pystac.Item, bands: list[Band], href_map: dict[str, str] | None = None
) -> Scene:
    """Resolve assets, radiometry and grids; raises :class:`ChipReadError` naming the problem."""
    epsgs = _item_epsgs(item)
    if len(epsgs) > 1:
        raise ChipReadError("crs", f"item {item.id} claims several CRSs: {sorted(epsgs)}")
    epsg = next(iter(epsgs), None)
    assets: list[BandAsset] = []
    crs_seen: str | None = None
    for band in [*bands, BANDS["SCL"]]:
        _, asset = find_asset(item, band)
        href = map_href(_asset_href(asset), href_map)
        rad = radiometry_for_asset(asset.to_dict(), item.properties)
        try:
            with open_raster(href) as src:
                if src.crs is None:
                    raise ChipReadError("crs", f"{href} has no CRS")
                crs = src.crs.to_string()
                if epsg is not None and src.crs.to_epsg() != epsg:
                    raise ChipReadError(
                        "crs", f"{href} is in {crs} but item {item.id} says EPSG:{epsg}"
                    )
                if crs_seen is not None and crs != crs_seen:
                    raise ChipReadError("crs", f"bands of {item.id} disagree on CRS")
                crs_seen = crs
                assets.append(
                    BandAsset(
                        band=band.name,
                        href=href,
                        scale=rad.scale,
                        offset=rad.offset,
                        nodata=0.0 if rad.nodata is None else rad.nodata,
                        res=float(abs(src.transform.a)),
                        width=src.width,
                        height=src.height,
                    )
                )
        except ChipReadError:
            raise
        except Exception as exc:
            raise ChipReadError("read_error", f"cannot open {href}: {exc}") from exc
    spectral, scl = assets[:-1], assets[-1]
    ref = min(spectral, key=lambda a: a.res)
    align = 1
    for a in assets:
        ratio = round(a.res / ref.res)
        if ratio >= 1:
            align = math.lcm(align, ratio)
    with open_raster(ref.href) as src:
        origin = (float(src.transform.c), float(src.transform.f))
    cloud = item.properties.get("eo:cloud_cover")
    return Scene(
        item_id=item.id,
        datetime=item_datetime(item),
        tile=_tile_of(item),
        crs=crs_seen or f"EPSG:{epsg}",
        cloud_cover=None if cloud is None else float(cloud),
        baseline=item.properties.get("s2:processing_baseline"),
        geometry=item.geometry or {},
        ref=ref,
        bands=spectral,
        scl=scl,
        ref_origin=origin,
        align=align,
    )


def chip_bounds(
    scene: Scene, x: float, y: float, size: int
) -> tuple[tuple[float, float, float, float], tuple[int, int]] | None:
    """Bounds of a ``size``-pixel chip centred near (x, y) in scene CRS, snapped to the grid.

    Returns ``(bounds, (col_off, row_off))`` or None when the chip does not fit in the scene.
    """
    res = scene.ref.res
    x0, y0 = scene.ref_origin
    col = math.floor((x - x0) / res) - size // 2
    row = math.floor((y0 - y) / res) - size // 2
    col -= col % scene.align
    row -= row % scene.align
    if col < 0 or row < 0 or col + size > scene.ref.width or row + size > scene.ref.height:
        return None
    bounds = (x0 + col * res, y0 - (row + size) * res, x0 + (col + size) * res, y0 - row * res)
    return bounds, (col, row)
