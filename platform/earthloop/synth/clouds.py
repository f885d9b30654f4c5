"""Clouds, cirrus, their shadows and the Scene Classification Layer.

Cloud masks drive chip filtering and SeCo date sampling downstream, so they must behave like the
real thing: clouds are bright in the visible and darker in the SWIR, have soft edges (the thin
edge pixels are *not* flagged and leak into "clear" chips, as in real SCL), and their shadows are
displaced away from the sun by ``cloud height × tan(solar zenith)`` — long in winter, short in
summer. The SCL is derived from the same fields plus the land cover, with a small rate of the
errors real SCL makes (unclassified pixels, bright urban/bare pixels flagged as cloud).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from earthloop.s2.scl import SCL
from earthloop.synth.fields import Array, block_mean, fbm, resize_bilinear, shift
from earthloop.synth.landscape import LandCover
from earthloop.synth.spectra import band_index

#                     B01   B02   B03   B04   B05   B06   B07   B08   B8A   B09   B11   B12
_CLOUD = np.array([0.56, 0.55, 0.54, 0.53, 0.53, 0.53, 0.52, 0.52, 0.51, 0.44, 0.36, 0.22])
_SHADOW_DARKENING = 0.7  # shadows keep ~30 % (diffuse light)
_OVERPASS_HOUR_ANGLE = -22.5  # degrees: ~10:30 local solar time, Sentinel-2's descending node
FLAG_OPACITY = 0.15  # SCL flags cloud from this opacity; ``cover`` targets this flagged area


@dataclass(frozen=True)
class SunPosition:
    zenith: float  # degrees
    azimuth: float  # degrees clockwise from north

    @staticmethod
    def at(lat_deg: float, doy: float) -> SunPosition:
        """Solar position at Sentinel-2 overpass time (simple declination model, ±1°)."""
        decl = -23.44 * math.cos(2 * math.pi * (doy + 10) / 365.0)
        lat, dec, h = (math.radians(v) for v in (lat_deg, decl, _OVERPASS_HOUR_ANGLE))
        cos_z = math.sin(lat) * math.sin(dec) + math.cos(lat) * math.cos(dec) * math.cos(h)
        zenith = math.degrees(math.acos(max(-1.0, min(1.0, cos_z))))
        az_south = math.atan2(
            math.sin(h), math.cos(h) * math.sin(lat) - math.tan(dec) * math.cos(lat)
        )
        return SunPosition(zenith=zenith, azimuth=(math.degrees(az_south) + 180.0) % 360.0)


@dataclass
class CloudLayer:
    """Cloud, cirrus and shadow opacity (0..1) on the padded 10 m working grid."""

    cloud: Array
    cirrus: Array | None  # None on days without cirrus (saves a tile-sized array)
    shadow: Array
    sun: SunPosition
    cloud_height_m: float
    shadow_offset_px: tuple[int, int]  # (rows, cols) on the 10 m grid, positive = south/east

    def composite(self, refl: Array, band: str, rows: slice = slice(None)) -> Array:
        """Darken shadows, then lay thin cirrus and clouds over the ground (in place);
        ``refl`` holds the given rows of the working grid."""
        b = band_index(band)
        cloud = self.cloud[rows]
        refl *= 1.0 - np.float32(_SHADOW_DARKENING) * self.shadow[rows]
        if self.cirrus is not None:
            cirrus = self.cirrus[rows]
            refl += cirrus * (np.float32(0.35 * _CLOUD[b] / _CLOUD[0]) - refl)
        if cloud.any():
            # Thick cores are brighter than thin edges.
            top = np.float32(0.35 * _CLOUD[b]) * cloud
            top += np.float32(0.75 * _CLOUD[b])
            top -= refl
            top *= cloud
            refl += top
        return refl


def make_clouds(
    rng: np.random.Generator,
    padded: int,
    tile_size: int,
    cover: float,
    sun: SunPosition,
) -> CloudLayer:
    """Clouds whose flagged (opacity ≥ FLAG_OPACITY) area is ``cover`` of the tile, plus shadows
    and cirrus.

    Fields are drawn on a grid of at most ~1024 px and resampled to 10 m: clouds are smooth at
    that scale and a 4096 px tile then needs two full-size arrays instead of a dozen. The shadow
    offset is physical but capped at ~12 % of the tile so that small test tiles still see
    shadows on the ground instead of only off-tile.
    """
    height = float(rng.uniform(800.0, 2500.0))
    distance_px = height * math.tan(math.radians(min(sun.zenith, 80.0))) / 10.0
    cap = max(8.0, 0.12 * tile_size)
    distance_px = min(distance_px, cap)
    away = math.radians(sun.azimuth + 180.0)
    factor = max(1, math.ceil(padded / 1024))
    drow = int(round(-math.cos(away) * distance_px / factor))
    dcol = int(round(math.sin(away) * distance_px / factor))
    margin = int(math.ceil(cap / factor)) + 1
    n = math.ceil(padded / factor)
    full = n + 2 * margin
    inner = (slice(margin, margin + n), slice(margin, margin + n))
    tile_c = math.ceil(tile_size / factor)
    cell = float(np.clip(tile_size / 3, 24, 200)) / factor

    noise = fbm(rng, (full, full), cell, octaves=5, persistence=0.55)
    ramp = 0.4  # noise std units from clear to opaque: soft but not hazy edges
    if cover > 0.0005:
        tile_noise = noise[margin : margin + tile_c, margin : margin + tile_c]
        threshold = float(np.quantile(tile_noise, 1.0 - cover)) - FLAG_OPACITY * ramp
        cloud_c = np.clip((noise - np.float32(threshold)) / np.float32(ramp), 0.0, 1.0)
    else:
        cloud_c = np.zeros_like(noise)
    shadow_c = shift(cloud_c, drow, dcol)[inner]
    np.clip(shadow_c * np.float32(1.3), 0.0, 1.0, out=shadow_c)

    def to_10m(a: Array) -> Array:
        # A view: the coarse grid overshoots by < factor pixels, not worth a tile-sized copy.
        return resize_bilinear(a, (n * factor, n * factor))[:padded, :padded]

    cloud = to_10m(cloud_c[inner])
    shadow = to_10m(shadow_c)
    del noise, cloud_c, shadow_c

    cirrus = None
    # Thin cirrus on some of the cloudier days only, so "clear" scenes stay near 0 %.
    if cover >= 0.05 and rng.random() < 0.4:
        field = fbm(rng, (n, n), cell * 2, octaves=3)
        frac = rng.uniform(0.02, 0.12)
        q = float(np.quantile(field[:tile_c, :tile_c], 1.0 - frac))
        cirrus_c = np.clip(field - np.float32(q) + 0.3, 0.0, 1.0) * np.float32(
            rng.uniform(0.15, 0.3)
        )
        cirrus = to_10m(cirrus_c)
    return CloudLayer(
        cloud=cloud,
        cirrus=cirrus,
        shadow=shadow,
        sun=sun,
        cloud_height_m=height,
        shadow_offset_px=(drow * factor, dcol * factor),
    )


def scene_classification(
    landcover: Array,
    green20: Array,
    layer: CloudLayer,
    valid: Array,
    rng: np.random.Generator,
) -> Array:
    """SCL at 20 m from the tile's 10 m land cover (``n``×``n``), the green cover already
    averaged to 20 m, and the padded 10 m cloud fields; ``valid`` is on the 20 m grid."""
    n = landcover.shape[0]
    lc = landcover[::2, ::2]
    cloud20 = block_mean(layer.cloud[:n, :n], 2)
    cirrus20 = block_mean(layer.cirrus[:n, :n], 2) if layer.cirrus is not None else None
    shadow20 = block_mean(layer.shadow[:n, :n], 2)
    scl = np.where(green20 >= 0.35, SCL.VEGETATION, SCL.NOT_VEGETATED).astype(np.uint8)
    scl[lc == LandCover.WATER] = SCL.WATER
    r = rng.random(scl.shape)
    scl[r < 0.006] = SCL.UNCLASSIFIED
    bright = (lc == LandCover.URBAN) | (lc == LandCover.BARE)
    scl[bright & (r > 0.996)] = SCL.CLOUD_MEDIUM_PROBABILITY  # SCL's classic false alarm
    scl[(shadow20 >= 0.15) & (shadow20 < 0.35)] = SCL.DARK_AREA
    scl[shadow20 >= 0.35] = SCL.CLOUD_SHADOW
    if cirrus20 is not None:
        scl[cirrus20 >= 0.06] = SCL.THIN_CIRRUS
    scl[cloud20 >= FLAG_OPACITY] = SCL.CLOUD_MEDIUM_PROBABILITY
    scl[cloud20 >= 0.65] = SCL.CLOUD_HIGH_PROBABILITY
    scl[~valid] = SCL.NO_DATA
    return scl


def scl_statistics(scl: Array) -> dict[str, float]:
    """Percentages as Earth Search publishes them; cloud cover counts medium+high+cirrus over
    valid (non-nodata) pixels."""
    n_total = scl.size
    counts = np.bincount(scl.ravel(), minlength=12)
    valid = n_total - int(counts[SCL.NO_DATA])

    def pct(*classes: SCL) -> float:
        return round(100.0 * sum(int(counts[c]) for c in classes) / valid, 6) if valid else 0.0

    return {
        "eo:cloud_cover": pct(
            SCL.CLOUD_MEDIUM_PROBABILITY, SCL.CLOUD_HIGH_PROBABILITY, SCL.THIN_CIRRUS
        ),
        "s2:nodata_pixel_percentage": round(100.0 * int(counts[SCL.NO_DATA]) / n_total, 6),
        "s2:saturated_defective_pixel_percentage": pct(SCL.SATURATED_OR_DEFECTIVE),
        "s2:dark_features_percentage": pct(SCL.DARK_AREA),
        "s2:cloud_shadow_percentage": pct(SCL.CLOUD_SHADOW),
        "s2:vegetation_percentage": pct(SCL.VEGETATION),
        "s2:not_vegetated_percentage": pct(SCL.NOT_VEGETATED),
        "s2:water_percentage": pct(SCL.WATER),
        "s2:unclassified_percentage": pct(SCL.UNCLASSIFIED),
        "s2:medium_proba_clouds_percentage": pct(SCL.CLOUD_MEDIUM_PROBABILITY),
        "s2:high_proba_clouds_percentage": pct(SCL.CLOUD_HIGH_PROBABILITY),
        "s2:thin_cirrus_percentage": pct(SCL.THIN_CIRRUS),
        "s2:snow_ice_percentage": pct(SCL.SNOW),
    }
