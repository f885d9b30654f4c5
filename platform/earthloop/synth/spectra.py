"""Surface reflectance from land cover, phenology and noise.

Each pixel is a linear mix of a few endmembers — green leaves, dry/senescent matter, flowers and a
background (soil, water, urban materials) — with cover fractions that follow a per-class seasonal
profile. That is how real crops separate: wheat and barley green up in early spring and are
harvested in July, maize and sunflower look alike in July but differ in May, water stays dark in
the NIR and urban areas stay bright and flat all year. Noise enters at the unit (field) level
(sowing dates, vigour, soil colour), the pixel level and the date level (residual atmosphere),
so a single date is ambiguous and the time series is not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from earthloop.s2.bands import BANDS, SPECTRAL_BANDS
from earthloop.synth.fields import Array, gaussian_blur, rng_for
from earthloop.synth.landscape import Landscape

# Endmember reflectances in SPECTRAL_BANDS order (typical library spectra, rounded).
# fmt: off
ENDMEMBERS: dict[str, tuple[float, ...]] = {
    #               B01    B02    B03    B04    B05    B06    B07    B08    B8A    B09    B11    B12
    "leaf":        (0.030, 0.040, 0.085, 0.040, 0.120, 0.300, 0.390, 0.430, 0.440, 0.420, 0.220, 0.110),
    "grass":       (0.030, 0.040, 0.080, 0.045, 0.115, 0.270, 0.340, 0.370, 0.380, 0.360, 0.230, 0.120),
    "broadleaf":   (0.020, 0.030, 0.060, 0.030, 0.090, 0.240, 0.320, 0.350, 0.360, 0.340, 0.170, 0.080),
    "conifer":     (0.015, 0.022, 0.045, 0.022, 0.065, 0.160, 0.210, 0.230, 0.240, 0.225, 0.110, 0.050),
    "dry":         (0.060, 0.080, 0.110, 0.140, 0.170, 0.200, 0.220, 0.240, 0.250, 0.250, 0.330, 0.250),
    "flower":      (0.040, 0.050, 0.200, 0.150, 0.220, 0.330, 0.400, 0.420, 0.430, 0.410, 0.250, 0.140),
    "soil":        (0.060, 0.080, 0.110, 0.150, 0.180, 0.200, 0.220, 0.240, 0.250, 0.260, 0.320, 0.280),
    "bright_soil": (0.100, 0.130, 0.180, 0.240, 0.270, 0.290, 0.300, 0.320, 0.330, 0.330, 0.400, 0.360),
    "water":       (0.070, 0.065, 0.055, 0.035, 0.028, 0.018, 0.014, 0.012, 0.010, 0.006, 0.003, 0.002),
    "sediment":    (0.020, 0.030, 0.050, 0.045, 0.035, 0.015, 0.010, 0.008, 0.006, 0.003, 0.001, 0.001),
    "urban":       (0.110, 0.120, 0.135, 0.150, 0.165, 0.175, 0.185, 0.195, 0.200, 0.205, 0.230, 0.210),
}
# fmt: on

_GROUPS = {  # band index groups for per-crop leaf spectra tweaks
    "vis": [0, 1, 2, 3],
    "rededge": [4, 5, 6],
    "nir": [7, 8, 9],
    "swir": [10, 11],
}

Knot = tuple[int, float, float, float]  # (day of year, green, dry, flower)


@dataclass(frozen=True)
class Profile:
    """How one kind of unit looks through the year."""

    knots: tuple[Knot, ...]
    leaf: str = "leaf"
    background: str = "soil"
    leaf_scale: tuple[
        tuple[str, float], ...
    ] = ()  # per band-group multipliers on the leaf spectrum
    moist_background: bool = True  # background darkens when wet (winter)
    shift_sd: float = 6.0  # unit-level timing jitter (days): sowing dates, local climate
    texture: float = 0.04  # fixed per-pixel brightness variation of the background


PROFILES: dict[str, Profile] = {
    "water": Profile(
        ((1, 0, 0, 0), (170, 0, 0, 0), (210, 0.06, 0, 0), (250, 0, 0, 0), (366, 0, 0, 0)),
        background="water",
        moist_background=False,
        texture=0.03,
    ),
    "urban": Profile(
        (
            (1, 0.10, 0.04, 0),
            (140, 0.18, 0, 0),
            (250, 0.18, 0, 0),
            (320, 0.12, 0.04, 0),
            (366, 0.10, 0.04, 0),
        ),
        leaf="grass",
        background="urban",
        moist_background=False,
        shift_sd=3.0,
        texture=0.18,
    ),
    "bare": Profile(
        ((1, 0, 0.03, 0), (366, 0, 0.03, 0)),
        background="bright_soil",
        shift_sd=0.0,
        texture=0.08,
    ),
    "broadleaf": Profile(
        (
            (1, 0.30, 0.35, 0),
            (100, 0.33, 0.32, 0),
            (125, 0.75, 0.05, 0),
            (150, 0.85, 0, 0),
            (250, 0.83, 0, 0),
            (285, 0.60, 0.25, 0),
            (315, 0.32, 0.35, 0),
            (366, 0.30, 0.35, 0),
        ),
        leaf="broadleaf",
        shift_sd=4.0,
    ),
    "conifer": Profile(
        ((1, 0.72, 0.08, 0), (120, 0.78, 0.04, 0), (240, 0.82, 0, 0), (366, 0.72, 0.08, 0)),
        leaf="conifer",
        shift_sd=4.0,
    ),
    "grassland": Profile(
        (
            (1, 0.40, 0.30, 0),
            (75, 0.45, 0.25, 0),
            (125, 0.82, 0.03, 0),
            (160, 0.85, 0, 0),
            (168, 0.35, 0.35, 0),
            (190, 0.65, 0.10, 0),
            (230, 0.55, 0.25, 0),
            (275, 0.65, 0.10, 0),
            (330, 0.50, 0.25, 0),
            (366, 0.40, 0.30, 0),
        ),
        leaf="grass",
        shift_sd=10.0,
    ),
    "winter_wheat": Profile(
        (
            (1, 0.22, 0.05, 0),
            (60, 0.25, 0.05, 0),
            (105, 0.70, 0, 0),
            (140, 0.88, 0, 0),
            (165, 0.70, 0.15, 0),
            (185, 0.25, 0.65, 0),
            (200, 0.05, 0.80, 0),
            (205, 0, 0.35, 0),
            (250, 0, 0.25, 0),
            (275, 0, 0.02, 0),
            (295, 0.05, 0, 0),
            (330, 0.18, 0.03, 0),
            (366, 0.22, 0.05, 0),
        ),
    ),
    "winter_barley": Profile(
        (
            (1, 0.25, 0.05, 0),
            (55, 0.28, 0.05, 0),
            (95, 0.70, 0, 0),
            (130, 0.84, 0, 0),
            (152, 0.65, 0.20, 0),
            (172, 0.20, 0.70, 0),
            (186, 0.05, 0.80, 0),
            (192, 0, 0.35, 0),
            (245, 0, 0.25, 0),
            (268, 0, 0.02, 0),
            (285, 0.06, 0, 0),
            (325, 0.22, 0.03, 0),
            (366, 0.25, 0.05, 0),
        ),
        leaf_scale=(("nir", 0.97), ("swir", 1.03)),
    ),
    "rapeseed": Profile(
        (
            (1, 0.40, 0.05, 0),
            (60, 0.42, 0.05, 0),
            (95, 0.75, 0, 0),
            (110, 0.55, 0, 0.40),
            (130, 0.50, 0, 0.45),
            (145, 0.75, 0.05, 0.05),
            (165, 0.45, 0.45, 0),
            (185, 0.08, 0.80, 0),
            (195, 0, 0.40, 0),
            (230, 0, 0.20, 0),
            (240, 0, 0.02, 0),
            (255, 0.08, 0, 0),
            (290, 0.35, 0, 0),
            (330, 0.42, 0.03, 0),
            (366, 0.40, 0.05, 0),
        ),
        leaf_scale=(("vis", 1.05), ("nir", 1.04)),
    ),
    "maize": Profile(
        (
            (1, 0, 0.25, 0),
            (90, 0, 0.20, 0),
            (110, 0, 0.02, 0),
            (140, 0.03, 0, 0),
            (160, 0.15, 0, 0),
            (185, 0.60, 0, 0),
            (205, 0.88, 0, 0),
            (235, 0.88, 0, 0),
            (255, 0.60, 0.30, 0),
            (275, 0.25, 0.65, 0),
            (285, 0, 0.45, 0),
            (366, 0, 0.25, 0),
        ),
        leaf_scale=(("nir", 1.08), ("swir", 0.95)),
    ),
    "sunflower": Profile(
        (
            (1, 0, 0.15, 0),
            (85, 0, 0.08, 0),
            (100, 0, 0, 0),
            (120, 0.08, 0, 0),
            (145, 0.45, 0, 0),
            (170, 0.80, 0, 0),
            (190, 0.65, 0, 0.25),
            (205, 0.60, 0.05, 0.25),
            (220, 0.35, 0.50, 0.05),
            (240, 0.05, 0.80, 0),
            (250, 0, 0.40, 0),
            (366, 0, 0.15, 0),
        ),
        leaf_scale=(("nir", 1.03),),
    ),
    "sugar_beet": Profile(
        (
            (1, 0, 0.10, 0),
            (85, 0, 0.02, 0),
            (105, 0.02, 0, 0),
            (135, 0.20, 0, 0),
            (165, 0.70, 0, 0),
            (200, 0.90, 0, 0),
            (260, 0.88, 0, 0),
            (285, 0.75, 0, 0),
            (295, 0, 0.15, 0),
            (366, 0, 0.10, 0),
        ),
        leaf_scale=(("nir", 1.14), ("swir", 0.9)),
    ),
}

_PROFILE_KEYS = tuple(PROFILES)
PSF_SIGMA_PX = 0.6  # sensor point spread, in 10 m pixels
_N_BANDS = len(SPECTRAL_BANDS)
_WAVELENGTH = np.array([BANDS[b].wavelength_nm or 0.0 for b in SPECTRAL_BANDS], dtype=np.float64)


def band_index(name: str) -> int:
    """Position of a canonical band name in the endmember tables."""
    return SPECTRAL_BANDS.index(name)


def _spectrum(name: str) -> Array:
    return np.array(ENDMEMBERS[name], dtype=np.float64)


def fractions_at(profile: Profile, doy: Array) -> tuple[Array, Array, Array]:
    """(green, dry, flower) cover fractions at (possibly shifted, fractional) days of year."""
    k = np.array(profile.knots, dtype=np.float64)
    d = np.mod(doy - 1.0, 365.0) + 1.0  # wrap shifts across the new year
    return (
        np.interp(d, k[:, 0], k[:, 1]),
        np.interp(d, k[:, 0], k[:, 2]),
        np.interp(d, k[:, 0], k[:, 3]),
    )


def soil_moisture_factor(doy: float) -> float:
    """Wet soils are darker: about 15 % darker in mid-January than in mid-July."""
    return 0.85 + 0.15 * (0.5 - 0.5 * np.cos(2 * np.pi * (doy - 15) / 365.0))


@dataclass
class UnitTables:
    """Per-unit draws, fixed for a tile across dates (a field keeps its soil and sowing date)."""

    profile_index: Array  # int, into _PROFILE_KEYS
    shift: Array  # days
    vigour: Array  # multiplier on green/flower cover
    leaf: Array  # (n_units, bands)
    background: Array  # (n_units, bands), before seasonal moisture
    moist: Array  # bool per unit
    texture: Array  # per unit


def unit_tables(land: Landscape, seed: int) -> UnitTables:
    rng = rng_for(seed, "units", land.grid.id)
    n = len(land.unit_profile)
    profiles = [PROFILES[k] for k in land.unit_profile]
    profile_index = np.array([_PROFILE_KEYS.index(k) for k in land.unit_profile], dtype=np.int32)
    shift = rng.standard_normal(n) * np.array([p.shift_sd for p in profiles])
    vigour = np.clip(rng.normal(1.0, 0.07, n), 0.8, 1.15)
    leaf = np.empty((n, _N_BANDS))
    background = np.empty((n, _N_BANDS))
    brightness = np.clip(rng.normal(1.0, 0.12, n), 0.7, 1.35)
    turbidity = rng.uniform(0.0, 1.0, n) ** 2
    spectral_jitter = rng.normal(1.0, 0.025, (n, 4))
    for i, p in enumerate(profiles):
        lv = _spectrum(p.leaf)
        for group, factor in p.leaf_scale:
            lv[_GROUPS[group]] *= factor
        for g, idx in enumerate(_GROUPS.values()):
            lv[idx] *= spectral_jitter[i, g]
        leaf[i] = lv
        if p.background == "water":
            background[i] = _spectrum("water") + turbidity[i] * _spectrum("sediment")
        else:
            background[i] = _spectrum(p.background) * brightness[i]
    return UnitTables(
        profile_index=profile_index,
        shift=shift,
        vigour=vigour,
        leaf=leaf,
        background=background,
        moist=np.array([p.moist_background for p in profiles]),
        texture=np.array([p.texture for p in profiles]),
    )


_NOISE_BLOCK_ROWS = 64


@dataclass
class DateState:
    """One date's cover fractions per unit, and the key of its per-pixel noise.

    Per-pixel fractions are derived on demand for any row range (see :meth:`pixels`) instead of
    being stored: three tile-sized arrays per date are the largest cost on 4096 px tiles. The
    noise is drawn in fixed row blocks keyed by block index, so every band and the SCL see the
    same pixels whatever strip they are rendered in.
    """

    doy: float
    green_u: Array  # float32 per unit
    dry_u: Array
    flower_u: Array
    noise_key: tuple[int | str, ...]

    def _noise(self, rows: range, width: int) -> Array:
        first, last = rows.start // _NOISE_BLOCK_ROWS, (rows.stop - 1) // _NOISE_BLOCK_ROWS
        seed, *keys = self.noise_key
        blocks = [
            rng_for(int(seed), *keys, k).standard_normal(
                (_NOISE_BLOCK_ROWS, width), dtype=np.float32
            )
            for k in range(first, last + 1)
        ]
        stacked = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
        off = rows.start - first * _NOISE_BLOCK_ROWS
        return stacked[off : off + len(rows)]

    def pixels(self, land: Landscape, rows: slice) -> tuple[Array, Array, Array]:
        """(green, dry, flower) for ``rows`` of the working grid: unit phenology + fixed
        fine-scale vigour + per-date noise, renormalised so the fractions sum to at most 1."""
        u = land.unit[rows]
        grain = land.grain[rows]
        span = range(*rows.indices(land.unit.shape[0]))
        green = self.green_u[u]
        tmp = np.multiply(grain, np.float32(0.10))
        tmp += np.float32(1.0)
        green *= tmp
        np.multiply(self._noise(span, u.shape[1]), np.float32(0.03), out=tmp)
        tmp *= green > 0.02
        green += tmp
        dry = self.dry_u[u]
        np.multiply(grain, np.float32(-0.08), out=tmp)
        tmp += np.float32(1.0)
        dry *= tmp
        flower = self.flower_u[u]
        for a in (green, dry, flower):
            np.clip(a, 0.0, 1.0, out=a)
        np.add(green, dry, out=tmp)
        tmp += flower
        np.maximum(tmp, np.float32(1.0), out=tmp)
        green /= tmp
        dry /= tmp
        flower /= tmp
        return green, dry, flower


def date_state(tables: UnitTables, doy: float, noise_key: tuple[int | str, ...]) -> DateState:
    """Evaluate every unit's phenology on ``doy`` (with its own timing shift and vigour)."""
    n_units = len(tables.shift)
    g_u = np.zeros(n_units)
    d_u = np.zeros(n_units)
    f_u = np.zeros(n_units)
    for pi, key in enumerate(_PROFILE_KEYS):
        sel = tables.profile_index == pi
        if sel.any():
            g, d, f = fractions_at(PROFILES[key], doy - tables.shift[sel])
            g_u[sel], d_u[sel], f_u[sel] = g, d, f
    g_u *= tables.vigour
    f_u *= tables.vigour
    return DateState(
        doy=doy,
        green_u=g_u.astype(np.float32),
        dry_u=d_u.astype(np.float32),
        flower_u=f_u.astype(np.float32),
        noise_key=noise_key,
    )


def ground_reflectance(
    land: Landscape,
    tables: UnitTables,
    state: DateState,
    band: str,
    rng: np.random.Generator,
    *,
    rows: slice = slice(None),
    psf_sigma: float = PSF_SIGMA_PX,
) -> Array:
    """Surface reflectance of one band on (a row strip of) the 10 m working grid, blurred by
    the sensor PSF.

    The blur (~1 px) is what produces mixed pixels along every field and region boundary.
    """
    b = band_index(band)
    moisture = np.where(tables.moist, soil_moisture_factor(state.doy), 1.0)
    bg_u = (tables.background[:, b] * moisture).astype(np.float32)
    leaf_u = tables.leaf[:, b].astype(np.float32)
    tex_u = tables.texture.astype(np.float32)
    u = land.unit[rows]
    green, dry, flower = state.pixels(land, rows)
    # In-place arithmetic throughout: on a 4096 px tile every temporary costs 64 MB.
    refl = bg_u[u]
    tmp = np.subtract(np.float32(1.0), green)
    tmp -= dry
    tmp -= flower
    refl *= tmp
    np.multiply(tex_u[u], land.grain[rows], out=tmp)
    tmp += np.float32(1.0)
    refl *= tmp
    np.multiply(leaf_u[u], green, out=tmp)
    refl += tmp
    np.multiply(dry, np.float32(ENDMEMBERS["dry"][b]), out=tmp)
    refl += tmp
    np.multiply(flower, np.float32(ENDMEMBERS["flower"][b]), out=tmp)
    refl += tmp
    rng.standard_normal(dtype=np.float32, out=tmp)
    tmp *= np.float32(0.02)
    tmp += np.float32(1.0)
    refl *= tmp
    del tmp
    return gaussian_blur(refl, psf_sigma)


@dataclass(frozen=True)
class Atmosphere:
    """Residual per-date effects that L2A correction leaves behind: gain and blue-heavy haze."""

    gain: Array  # per band
    haze: Array  # per band, additive reflectance

    @staticmethod
    def draw(rng: np.random.Generator) -> Atmosphere:
        common = rng.normal(1.0, 0.03)
        gain = common * rng.normal(1.0, 0.01, _N_BANDS)
        aot = rng.uniform(0.0, 0.012)
        haze = aot * (490.0 / _WAVELENGTH) ** 1.5
        return Atmosphere(gain=gain, haze=haze)

    def apply(self, refl: Array, band: str) -> Array:
        b = band_index(band)
        refl *= np.float32(self.gain[b])
        refl += np.float32(self.haze[b])
        return refl
