"""The benchmark world's regions (biomes) and its switches.

The same class looks different in another country: soils are redder in Spain and darker on the
Polish loess, spring comes weeks earlier in the south, Mediterranean grassland is brown in July
while Atlantic grassland is green, roofs are red tiles in one place and grey concrete in another,
and the crop mix changes. A model trained on one region and tested on another meets all of that
at once, which is the gap pretraining on an unlabelled archive is supposed to close.

This module holds only plain descriptions (no numpy work), so :mod:`presets` can import it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

ROLES = ("pool", "test", "archive")
"""What a tile is for: its labels may be used for training (``pool``), only for scoring
(``test``), or not at all (``archive``: part of the unlabelled archive only)."""

SWITCHES = (
    "biomes",
    "atmosphere",
    "illumination",
    "sensor_noise",
    "adjacency",
    "thin_cloud",
    "heterogeneity",
    "context_classes",
    "boundaries",
)
"""The named properties of the world, each one a boolean field of :class:`WorldSpec`
(docs/world.md says what each stands for in real Sentinel-2 data)."""


@dataclass(frozen=True)
class Biome:
    """How one region differs from the others, for every class at once."""

    name: str
    phenology_shift: float
    """Days added to every unit's calendar: spring arrives later in the north-east."""
    class_weights: tuple[tuple[str, float], ...]
    """Share of macro regions per kind (water, urban, forest, grassland, farmland, bare)."""
    crop_weights: tuple[tuple[str, float], ...]
    """Share of parcels per crop profile (``meadow`` = grass in parcel geometry)."""
    soil: tuple[float, float, float, float]
    """Multipliers on soil/background spectra per band group (vis, red-edge, nir, swir)."""
    red_soil: float
    """Extra multiplier on B04 of soils (iron oxides make Mediterranean soils red)."""
    leaf: tuple[float, float, float, float]
    """Multipliers on leaf spectra per band group (pigment, water content, canopy structure)."""
    roofs: tuple[tuple[str, float], ...]
    """Urban roof materials and their shares (gardens included)."""
    dry_summer: bool
    """Grassland senesces in summer (Mediterranean) instead of staying green."""
    evergreen_share: float
    """Share of forest regions that are coniferous/evergreen."""


BIOMES: dict[str, Biome] = {
    "atlantic": Biome(
        name="atlantic",
        phenology_shift=0.0,
        class_weights=(
            ("water", 0.06),
            ("urban", 0.10),
            ("forest", 0.16),
            ("grassland", 0.16),
            ("farmland", 0.46),
            ("bare", 0.06),
        ),
        crop_weights=(
            ("winter_wheat", 0.26),
            ("maize", 0.20),
            ("winter_barley", 0.12),
            ("rapeseed", 0.10),
            ("meadow", 0.32),
        ),
        soil=(1.0, 1.0, 1.0, 1.0),
        red_soil=1.0,
        leaf=(1.0, 1.0, 1.0, 1.0),
        roofs=(("roof_grey", 0.30), ("roof_dark", 0.25), ("roof_red", 0.10), ("garden", 0.35)),
        dry_summer=False,
        evergreen_share=0.3,
    ),
    "continental": Biome(
        name="continental",
        phenology_shift=12.0,
        class_weights=(
            ("water", 0.07),
            ("urban", 0.08),
            ("forest", 0.22),
            ("grassland", 0.12),
            ("farmland", 0.46),
            ("bare", 0.05),
        ),
        crop_weights=(
            ("winter_wheat", 0.24),
            ("rapeseed", 0.18),
            ("maize", 0.16),
            ("sugar_beet", 0.16),
            ("winter_barley", 0.08),
            ("meadow", 0.18),
        ),
        soil=(0.78, 0.82, 0.85, 0.88),
        red_soil=0.95,
        leaf=(0.92, 1.0, 1.06, 0.96),
        roofs=(("roof_grey", 0.40), ("roof_red", 0.25), ("roof_dark", 0.10), ("garden", 0.25)),
        dry_summer=False,
        evergreen_share=0.55,
    ),
    "mediterranean": Biome(
        name="mediterranean",
        phenology_shift=-28.0,
        class_weights=(
            ("water", 0.04),
            ("urban", 0.09),
            ("forest", 0.12),
            ("grassland", 0.22),
            ("farmland", 0.42),
            ("bare", 0.11),
        ),
        crop_weights=(
            ("winter_wheat", 0.30),
            ("winter_barley", 0.22),
            ("sunflower", 0.22),
            ("maize", 0.08),
            ("meadow", 0.18),
        ),
        soil=(1.18, 1.12, 1.08, 1.15),
        red_soil=1.22,
        leaf=(1.08, 0.97, 0.90, 1.10),
        roofs=(("roof_red", 0.45), ("roof_grey", 0.25), ("roof_dark", 0.05), ("garden", 0.25)),
        dry_summer=True,
        evergreen_share=0.7,
    ),
}


STRONG_BIOMES: dict[str, dict[str, Any]] = {
    "mediterranean": {
        "soil": (1.35, 1.25, 1.15, 1.35),
        "red_soil": 1.45,
        "leaf": (1.25, 0.95, 0.80, 1.25),
    },
}
"""World v2's Mediterranean spectra (``strong_biomes``): bright calcareous and iron-red Iberian
soils, and sclerophyll leaves (waxy, small, sparse canopies: more visible reflectance, less NIR).
World v1's multipliers (:data:`BIOMES`) left the per-pixel model's region gap at 5-7 accuracy
points, below the 15 of the realism check; docs/world.md ("World v2") says how these were set."""


@dataclass(frozen=True)
class WorldSpec:
    """The benchmark world's layout (regions and roles per tile) and its switches.

    Every switch defaults to on; turning one off removes that one property and nothing else, so
    an ablation measures it alone (``generate(..., world={"atmosphere": False})``).
    """

    regions: tuple[str, ...]
    """Biome name of each tile, in the preset's tile order."""
    roles: tuple[str, ...]
    """Role of each tile (see :data:`ROLES`)."""
    heldout: str
    """The region whose labels are never in the pool: tests also come from here."""
    biomes: bool = True
    """Regions differ in spectra, phenology timing, class and crop mix (off: all atlantic)."""
    atmosphere: bool = True
    """Per-date, spatially smooth residual aerosol/haze left by atmospheric correction."""
    illumination: bool = True
    """Sun-angle (season) and view-angle (across-swath BRDF) brightness effects."""
    sensor_noise: bool = True
    """Signal-dependent radiometric noise per band."""
    adjacency: bool = True
    """Light scattered from the surroundings (a wide blur mixed in, stronger on hazy days)."""
    thin_cloud: bool = True
    """Residual thin cloud below the SCL flag threshold."""
    heterogeneity: bool = True
    """Several crops per cropland, urban fabric as roofs/roads/gardens, forests with gaps."""
    context_classes: bool = True
    """Urban green, hedgerows and meadows share their twins' spectra (off: distinct spectra)."""
    boundaries: bool = True
    """Mixed pixels (sensor PSF) and label noise along class boundaries."""
    strong_biomes: bool = False
    """World v2: the Mediterranean biome at the stronger contrast of :data:`STRONG_BIOMES`.

    Off by default, so the ``world`` preset (v1, every result before world v2) renders byte for
    byte as it did; on in ``world_v2``. With ``biomes`` off every tile is atlantic and this does
    nothing."""

    def validate(self, n_tiles: int) -> WorldSpec:
        """Fail early, naming the field: a world that cannot hold a held-out test is useless."""
        if len(self.regions) != n_tiles or len(self.roles) != n_tiles:
            raise ValueError(
                f"world.regions and world.roles need one entry per tile ({n_tiles}), got "
                f"{len(self.regions)} and {len(self.roles)}"
            )
        unknown = sorted(set(self.regions) - set(BIOMES))
        if unknown:
            raise ValueError(f"unknown region(s) {unknown}; choose from {sorted(BIOMES)}")
        bad = sorted(set(self.roles) - set(ROLES))
        if bad:
            raise ValueError(f"unknown role(s) {bad}; choose from {list(ROLES)}")
        if self.heldout not in self.regions:
            raise ValueError(f"held-out region {self.heldout!r} has no tile")
        for region, role in zip(self.regions, self.roles, strict=True):
            if region == self.heldout and role == "pool":
                raise ValueError(f"held-out region {self.heldout!r} must not have pool tiles")
        if "pool" not in self.roles:
            raise ValueError("world needs at least one pool (labelled) tile")
        if not any(
            r == self.heldout and o == "test" for r, o in zip(self.regions, self.roles, strict=True)
        ):
            raise ValueError(f"held-out region {self.heldout!r} needs at least one test tile")
        return self

    def with_switches(self, changes: dict[str, Any]) -> WorldSpec:
        """A copy with some fields replaced (unknown names are errors, naming the valid ones)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown world field(s) {unknown}; valid: {sorted(known)}")
        coerced: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()
        }
        return dataclasses.replace(self, **coerced)

    def biome(self, tile_index: int) -> Biome:
        """The biome a tile is rendered with (``biomes`` off: every tile is atlantic)."""
        name = self.regions[tile_index] if self.biomes else "atlantic"
        if self.biomes and self.strong_biomes and name in STRONG_BIOMES:
            return dataclasses.replace(BIOMES[name], **STRONG_BIOMES[name])
        return BIOMES[name]

    def archive_ratio(self, n_dates: int) -> float:
        """Scenes of the archive per labelled location of the pool (tiles are equal in size).

        The labelled pool is one date per pool tile (several dates of one place would count one
        label several times); the unlabelled archive is every tile at every date.
        """
        return len(self.roles) * n_dates / self.roles.count("pool")
