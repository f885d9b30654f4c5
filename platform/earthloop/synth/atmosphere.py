"""What lies between the ground and the L2A pixel in the benchmark world, per scene.

Sen2Cor removes most of the atmosphere but not all of it, and not uniformly: the aerosol it
estimates is smooth at the scale of kilometres yet wrong by an amount that changes from date to
date, so blue and green keep a residual haze (additive path radiance, multiplicative
transmission); light scattered by the surroundings blurs dark pixels next to bright ones
(adjacency); the same field is brighter or darker with the sun angle (season) and across the
swath with the viewing angle (BRDF); thin cloud below the SCL threshold passes as clear; and the
detector adds signal-dependent noise. A per-pixel classifier trained on one date's colours meets
all of this on the next date. Each effect has its own switch in
:class:`~earthloop.synth.regions.WorldSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from earthloop.s2.bands import BANDS, SPECTRAL_BANDS
from earthloop.synth.clouds import FLAG_OPACITY, SunPosition
from earthloop.synth.fields import Array, fbm, gaussian_blur
from earthloop.synth.regions import WorldSpec

_WAVELENGTH = np.array([BANDS[b].wavelength_nm or 0.0 for b in SPECTRAL_BANDS], dtype=np.float64)
_ANGSTROM = (490.0 / _WAVELENGTH) ** 1.4  # aerosol optical depth falls with wavelength
#                       B01   B02   B03   B04   B05   B06   B07   B08   B8A   B09   B11   B12
_CLOUD = np.array([0.56, 0.55, 0.54, 0.53, 0.53, 0.53, 0.52, 0.52, 0.51, 0.44, 0.36, 0.22])
_BRDF = np.array([0.6, 0.6, 0.7, 0.7, 0.8, 0.9, 1.0, 1.0, 1.0, 1.0, 0.9, 0.8])  # per band
ADJACENCY_SIGMA_PX = 6.0  # ~60 m: the scale over which surroundings leak into a pixel
THIN_CLOUD_MAX = 0.8 * FLAG_OPACITY  # always below what the SCL flags


@dataclass
class SceneEffects:
    """One scene's residual atmosphere, illumination and sensor state on the padded grid."""

    aerosol: Array | None  # (n, n) residual optical depth at 490 nm; None when switched off
    gain: Array  # per band: calibration drift × sun-angle illumination
    view_slope: float  # relative brightness change from the west to the east edge (BRDF)
    adjacency: float  # weight of the surroundings (0 = none)
    thin_cloud: Array | None  # (n, n) opacity < THIN_CLOUD_MAX, unflagged; None when absent
    noise: bool

    @staticmethod
    def draw(rng: np.random.Generator, n: int, sun: SunPosition, spec: WorldSpec) -> SceneEffects:
        """Draw every effect (always in the same order, so a switch never reshuffles others)."""
        aot_mean = rng.uniform(-0.02, 0.12)
        aot_field = fbm(rng, (n, n), max(n / 2, 8.0), octaves=3) * np.float32(0.035)
        calibration = rng.normal(1.0, 0.02) * rng.normal(1.0, 0.008, len(SPECTRAL_BANDS))
        view_slope = rng.uniform(-0.14, 0.14)
        cloud_on = rng.random() < 0.6
        cloud_field = fbm(rng, (n, n), max(n / 3, 8.0), octaves=4)
        cloud_cover = rng.uniform(0.2, 0.7)
        cloud_peak = rng.uniform(0.4, 1.0) * THIN_CLOUD_MAX

        aerosol = (aot_field + np.float32(aot_mean)) if spec.atmosphere else None
        # Low sun: longer shadows inside canopies and rough surfaces, so L2A (which only
        # divides by cos(zenith)) leaves winter scenes darker than summer ones.
        sun_gain = 1.0 - 0.006 * (sun.zenith - 35.0)
        gain = calibration * (sun_gain if spec.illumination else 1.0)
        thin = None
        if spec.thin_cloud and cloud_on:
            q = float(np.quantile(cloud_field, 1.0 - cloud_cover))
            thin = np.clip((cloud_field - np.float32(q)) / np.float32(1.5), 0.0, 1.0)
            thin *= np.float32(cloud_peak)
        mean_aot = max(aot_mean, 0.0) if spec.atmosphere else 0.0
        return SceneEffects(
            aerosol=aerosol,
            gain=gain,
            view_slope=view_slope if spec.illumination else 0.0,
            adjacency=float(np.clip(0.08 + 1.2 * mean_aot, 0.0, 0.3)) if spec.adjacency else 0.0,
            thin_cloud=thin,
            noise=spec.sensor_noise,
        )

    def apply(self, refl: Array, band: str, rng: np.random.Generator) -> Array:
        """Turn one band's ground reflectance (n×n, after clouds) into the L2A value (in place
        where possible)."""
        b = SPECTRAL_BANDS.index(band)
        if self.thin_cloud is not None:
            refl += self.thin_cloud * (np.float32(_CLOUD[b]) - refl)
        if self.adjacency > 0:
            wide = gaussian_blur(refl, ADJACENCY_SIGMA_PX)
            refl *= np.float32(1.0 - self.adjacency)
            wide *= np.float32(self.adjacency)
            refl += wide
        if self.aerosol is not None:
            tau = self.aerosol * np.float32(_ANGSTROM[b])
            refl *= np.exp(-0.6 * tau)
            refl += np.float32(0.22) * tau
        refl *= np.float32(self.gain[b])
        if self.view_slope:
            n = refl.shape[1]
            ramp = np.linspace(-0.5, 0.5, n, dtype=np.float32) * np.float32(
                self.view_slope * _BRDF[b]
            )
            refl *= ramp[None, :] + np.float32(1.0)
        if self.noise:
            sigma = np.sqrt(np.float32(0.003) ** 2 + (np.float32(0.012) * refl) ** 2)
            refl += sigma * rng.standard_normal(refl.shape, dtype=np.float32)
        np.clip(refl, 0.0, 1.2, out=refl)
        return refl
