"""Where per-pixel ground truth lives: one label raster per tile, on the tile's 10 m grid.

Labels are read by bounds exactly like bands, so any chip of the index can be paired with its
label window. Today the rasters come from a manifest (the synthetic generator writes one); the
Label Studio loop will add a Delta-backed source with the same shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LabelSource:
    kind: str  # "landcover" | "croptype" | "parcels"
    rasters: dict[str, str]  # tile id → raster path/URI
    classes: dict[int, str]  # class id → name (0 = unlabelled, ignored)
    ignore_index: int = 0

    @property
    def num_classes(self) -> int:
        return max(self.classes) + 1 if self.classes else 0

    def href(self, tile: str) -> str:
        try:
            return self.rasters[tile]
        except KeyError:
            raise KeyError(
                f"no {self.kind} labels for tile {tile!r} (have {sorted(self.rasters)})"
            ) from None


def label_source_from_manifest(path: str | Path, kind: str = "landcover") -> LabelSource:
    """Read label rasters of ``kind`` from a synthetic-data ``manifest.json`` (or its folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / "manifest.json"
    if not p.exists():
        raise FileNotFoundError(f"label manifest not found: {p} (run `earthloop sample-data`)")
    data = json.loads(p.read_text())
    root = p.parent
    rasters: dict[str, str] = {}
    for tile, entry in data.get("labels", {}).items():
        if kind not in entry:
            raise KeyError(f"manifest {p} has no {kind!r} labels (have {sorted(entry)})")
        rasters[tile] = str((root / entry[kind]).resolve())
    classes = {int(k): v for k, v in data.get("classes", {}).get(kind, {}).items()}
    if not rasters:
        raise ValueError(f"manifest {p} lists no label rasters")
    return LabelSource(kind, rasters, classes)
