"""The manifest: what a synthetic archive contains and how it was made.

Written last, so its presence means the archive is complete; it records preset, seed, the fully
resolved parameters and the generator version, which is what makes ``sample-data`` idempotent.
Paths are stored relative to the archive root (the archive can be moved; STAC asset hrefs, which
are absolute, would then need ``stac.href_map``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class TileLabels:
    """Ground truth of one tile on its 10 m grid."""

    tile: str
    epsg: int
    landcover: Path
    croptype: Path
    parcels: Path
    shape: tuple[int, int]
    transform: tuple[float, ...]
    bbox: tuple[float, ...]  # WGS84


@dataclass(frozen=True)
class SceneRecord:
    """One acquisition: its STAC item and band files."""

    item_id: str
    tile: str
    datetime: str
    processing_baseline: str
    cloud_cover: float
    item_path: Path
    assets: dict[str, Path]


@dataclass
class SynthManifest:
    """Everything a consumer needs to find the generated data (all paths absolute)."""

    root: Path
    preset: str
    seed: int
    params: dict[str, Any]
    generator_version: str
    collection_path: Path
    items_ndjson: Path
    catalog_path: Path
    item_paths: list[Path]
    scenes: list[SceneRecord]
    labels: dict[str, TileLabels]
    landcover_classes: dict[int, str]
    croptype_classes: dict[int, str]
    tiles: list[str] = field(default_factory=list)
    regions: dict[str, dict[str, str]] = field(default_factory=dict)
    """Benchmark world only: ``{tile: {"region": ..., "role": pool|test|archive}}``; the chip
    index's ``tile`` column joins to it (items also carry ``earthloop:region``/``earthloop:role``)."""

    def tiles_with(self, *, region: str | None = None, role: str | None = None) -> list[str]:
        """Tiles of a world archive by region and/or role (for region-aware splits)."""
        return [
            t
            for t, info in self.regions.items()
            if (region is None or info["region"] == region)
            and (role is None or info["role"] == role)
        ]

    @property
    def path(self) -> Path:
        return self.root / MANIFEST_NAME

    def to_dict(self) -> dict[str, Any]:
        def rel(p: Path) -> str:
            return os.path.relpath(p, self.root)

        return {
            "generator": "earthloop.synth",
            "generator_version": self.generator_version,
            "preset": self.preset,
            "seed": self.seed,
            "params": self.params,
            "tiles": self.tiles,
            "collection": rel(self.collection_path),
            "items_ndjson": rel(self.items_ndjson),
            "catalog": rel(self.catalog_path),
            "items": [rel(p) for p in self.item_paths],
            "scenes": [
                {
                    "item_id": s.item_id,
                    "tile": s.tile,
                    "datetime": s.datetime,
                    "processing_baseline": s.processing_baseline,
                    "cloud_cover": s.cloud_cover,
                    "item": rel(s.item_path),
                    "assets": {k: rel(v) for k, v in s.assets.items()},
                }
                for s in self.scenes
            ],
            "labels": {
                t: {
                    "epsg": lab.epsg,
                    "landcover": rel(lab.landcover),
                    "croptype": rel(lab.croptype),
                    "parcels": rel(lab.parcels),
                    "shape": list(lab.shape),
                    "transform": list(lab.transform),
                    "bbox": list(lab.bbox),
                }
                for t, lab in self.labels.items()
            },
            "classes": {
                "landcover": {str(k): v for k, v in self.landcover_classes.items()},
                "croptype": {str(k): v for k, v in self.croptype_classes.items()},
            },
            **({"regions": self.regions} if self.regions else {}),
        }

    def save(self) -> Path:
        tmp = self.path.with_name(MANIFEST_NAME + ".part")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, self.path)
        return self.path

    @classmethod
    def from_dict(cls, data: dict[str, Any], root: Path) -> SynthManifest:
        def p(rel: str) -> Path:
            return (root / rel).resolve()

        return cls(
            root=root,
            preset=data["preset"],
            seed=int(data["seed"]),
            params=data["params"],
            generator_version=data["generator_version"],
            collection_path=p(data["collection"]),
            items_ndjson=p(data["items_ndjson"]),
            catalog_path=p(data["catalog"]),
            item_paths=[p(x) for x in data["items"]],
            scenes=[
                SceneRecord(
                    item_id=s["item_id"],
                    tile=s["tile"],
                    datetime=s["datetime"],
                    processing_baseline=s["processing_baseline"],
                    cloud_cover=float(s["cloud_cover"]),
                    item_path=p(s["item"]),
                    assets={k: p(v) for k, v in s["assets"].items()},
                )
                for s in data["scenes"]
            ],
            labels={
                t: TileLabels(
                    tile=t,
                    epsg=int(lab["epsg"]),
                    landcover=p(lab["landcover"]),
                    croptype=p(lab["croptype"]),
                    parcels=p(lab["parcels"]),
                    shape=(int(lab["shape"][0]), int(lab["shape"][1])),
                    transform=tuple(float(v) for v in lab["transform"]),
                    bbox=tuple(float(v) for v in lab["bbox"]),
                )
                for t, lab in data["labels"].items()
            },
            landcover_classes={int(k): v for k, v in data["classes"]["landcover"].items()},
            croptype_classes={int(k): v for k, v in data["classes"]["croptype"].items()},
            tiles=list(data.get("tiles", [])),
            regions={t: dict(v) for t, v in data.get("regions", {}).items()},
        )

    def missing_files(self) -> list[Path]:
        """Files the manifest promises but that are gone (a half-deleted archive is regenerated)."""
        paths = [self.collection_path, self.items_ndjson, self.catalog_path, *self.item_paths]
        for s in self.scenes:
            paths.extend(s.assets.values())
        for lab in self.labels.values():
            paths.extend([lab.landcover, lab.croptype, lab.parcels])
        return [x for x in paths if not x.exists()]


def load_manifest(root: str | os.PathLike[str]) -> SynthManifest:
    """Read ``<root>/manifest.json``; a clear error if the archive was never (fully) written."""
    base = Path(root).resolve()
    path = base / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(
            f"no synthetic archive at {base} ({MANIFEST_NAME} missing); run `earthloop sample-data --out {base}`"
        )
    try:
        data = json.loads(path.read_text())
        return SynthManifest.from_dict(data, base)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a valid earthloop synth manifest: {exc}") from exc
