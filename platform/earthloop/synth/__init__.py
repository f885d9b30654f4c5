"""Synthetic Sentinel-2 L2A archives for tests, the demo and benchmarks (no network needed).

``generate(out_dir, preset="demo", seed=0)`` writes Earth-Search-like per-band COGs, STAC items
(``collection.json``, ``items.ndjson``, a static catalog), land-cover / crop-type / parcel ground
truth and a ``manifest.json``; ``earthloop sample-data`` is its command line. The ``world``
presets build the benchmark world (regions, context classes, residual atmosphere; docs/world.md).
"""

from earthloop.synth.generate import generate
from earthloop.synth.landscape import CROPTYPE_CLASSES, LANDCOVER_CLASSES, CropType, LandCover
from earthloop.synth.manifest import SceneRecord, SynthManifest, TileLabels, load_manifest
from earthloop.synth.presets import PRESETS, SynthPreset
from earthloop.synth.regions import BIOMES, SWITCHES, WorldSpec
from earthloop.synth.world import CONTEXT_TWINS, WORLD_CLASSES, WorldClass

__all__ = [
    "BIOMES",
    "CONTEXT_TWINS",
    "SWITCHES",
    "WORLD_CLASSES",
    "WorldClass",
    "WorldSpec",
    "CROPTYPE_CLASSES",
    "LANDCOVER_CLASSES",
    "PRESETS",
    "CropType",
    "LandCover",
    "SceneRecord",
    "SynthManifest",
    "SynthPreset",
    "TileLabels",
    "generate",
    "load_manifest",
]
