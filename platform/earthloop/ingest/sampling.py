"""SeCo-style sampling: where to cut chips, and which acquisitions of each place to keep.

SeCo samples locations (around populated places in the paper; uniformly or around given points
here) and, for each, acquisitions roughly three months apart, so that the only systematic change
between the views of one location is the season.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from shapely.geometry import Point, box, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

_M_PER_DEG = 111_320.0


@dataclass(frozen=True)
class Location:
    location_id: str
    lon: float
    lat: float


def aoi_from(
    bbox: tuple[float, float, float, float] | None,
    geojson: dict[str, Any] | None,
    footprints: list[dict[str, Any]],
) -> BaseGeometry:
    """The area to sample: explicit GeoJSON, else bbox, else the union of scene footprints."""
    if geojson is not None:
        if geojson.get("type") == "FeatureCollection":
            return unary_union([shape(f["geometry"]) for f in geojson["features"]])
        if geojson.get("type") == "Feature":
            return shape(geojson["geometry"])
        return shape(geojson)
    if bbox is not None:
        return box(*bbox)
    if not footprints:
        raise ValueError("no AOI given and no scene footprints to sample from")
    return unary_union([shape(g) for g in footprints])


def _location_id(seed: int, index: int, lon: float, lat: float) -> str:
    return hashlib.sha1(f"{seed}|{index}|{lon:.6f}|{lat:.6f}".encode()).hexdigest()[:12]


def _parts(aoi: BaseGeometry) -> tuple[list[BaseGeometry] | None, np.ndarray | None]:
    """The polygons of a multi-part AOI and their draw weights, or ``(None, None)``.

    A point drawn in a part's box is kept only if inside the part, so a part is drawn with
    probability ∝ its box area for the accepted points to be uniform per unit of AOI area.
    """
    geoms = list(getattr(aoi, "geoms", []))
    if len(geoms) < 2:
        return None, None
    boxes = np.array([max(g.envelope.area, 1e-18) for g in geoms])
    return geoms, boxes / boxes.sum()


def sample_locations(
    aoi: BaseGeometry,
    n: int,
    *,
    method: str = "uniform",
    centers: list[tuple[float, float]] | None = None,
    sigma_m: float = 5000.0,
    seed: int = 0,
    max_tries: int = 10_000,
) -> list[Location]:
    """Draw ``n`` locations inside ``aoi`` (lon/lat), deterministically from ``seed``."""
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = aoi.bounds
    points: list[tuple[float, float]] = []
    if method == "grid":
        side = max(1, math.ceil(math.sqrt(n * (aoi.envelope.area / max(aoi.area, 1e-12)))))
        xs = np.linspace(minx, maxx, side + 2)[1:-1]
        ys = np.linspace(miny, maxy, side + 2)[1:-1]
        points = [(x, y) for y in ys for x in xs if aoi.contains(Point(x, y))][:n]
    else:
        # An AOI of scattered parts (the footprints of tiles hundreds of km apart) covers a
        # tiny share of its bounding box: drawing in the box wasted almost every try (four demo
        # tiles ~300 km apart gave 343 of 600 locations asked within max_tries). Draw a part
        # (by its box area), then a point in that part's box: still uniform over the AOI.
        parts, weights = _parts(aoi) if method == "uniform" else (None, None)
        tries = 0
        while len(points) < n and tries < max_tries:
            tries += 1
            if method == "gaussian":
                cx, cy = (centers or [])[int(rng.integers(len(centers or [])))]
                dy = rng.normal(0, sigma_m) / _M_PER_DEG
                dx = rng.normal(0, sigma_m) / (_M_PER_DEG * max(math.cos(math.radians(cy)), 1e-6))
                x, y = cx + dx, cy + dy
            elif parts is not None:
                px0, py0, px1, py1 = parts[int(rng.choice(len(parts), p=weights))].bounds
                x, y = rng.uniform(px0, px1), rng.uniform(py0, py1)
            else:
                x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
            if aoi.contains(Point(x, y)):
                points.append((float(x), float(y)))
    return [Location(_location_id(seed, i, x, y), x, y) for i, (x, y) in enumerate(points)]


def spatial_split(lon: float, lat: float, val_fraction: float, block_deg: float = 0.05) -> str:
    """Assign train/val by ~5 km blocks, so neighbouring chips never straddle the split."""
    key = f"{math.floor(lon / block_deg)}|{math.floor(lat / block_deg)}"
    h = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"
