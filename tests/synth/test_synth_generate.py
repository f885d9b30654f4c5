"""Determinism, idempotency and argument checking of ``earthloop.synth.generate``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import read
from earthloop.synth import PRESETS, SynthManifest, generate, load_manifest


def _digests(m: SynthManifest) -> dict[str, str]:
    """Hash of every generated file, keyed by its path relative to the root; JSON files are
    hashed with the root replaced so two directories can be compared."""
    out = {}
    for path in sorted(m.root.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.suffix in {".json", ".ndjson"}:
            data = data.replace(str(m.root).encode(), b"<ROOT>")
        out[str(path.relative_to(m.root))] = hashlib.sha256(data).hexdigest()
    return out


def test_same_seed_gives_identical_files(tiny: SynthManifest, tiny_again: SynthManifest) -> None:
    a, b = _digests(tiny), _digests(tiny_again)
    assert a.keys() == b.keys()
    differing = [k for k in a if a[k] != b[k]]
    assert not differing, f"files differ between two runs with the same seed: {differing[:5]}"
    assert len([k for k in a if k.endswith(".tif")]) == 6 * 13 + 2 * 3


def test_different_seed_gives_different_data(
    tiny: SynthManifest, tiny_seed1: SynthManifest
) -> None:
    for tile in tiny.tiles:
        assert not np.array_equal(
            read(tiny.labels[tile].landcover), read(tiny_seed1.labels[tile].landcover)
        )
    a, b = tiny.scenes[0], tiny_seed1.scenes[0]
    assert a.item_id == b.item_id  # the acquisition plan is part of the preset, not the seed
    assert not np.array_equal(read(a.assets["red"]), read(b.assets["red"]))


def test_manifest_round_trip(tiny: SynthManifest) -> None:
    loaded = load_manifest(tiny.root)
    assert loaded.to_dict() == tiny.to_dict()
    assert loaded.preset == "tiny" and loaded.seed == 0
    assert loaded.missing_files() == []
    data = json.loads(tiny.path.read_text())
    assert data["classes"]["landcover"]["1"] == "water"
    assert set(data["labels"]) == set(PRESETS["tiny"].tiles)
    assert len(data["items"]) == len(tiny.item_paths) == 6


def test_generate_is_idempotent_and_force_rewrites(tmp_path: Path) -> None:
    kw = {"preset": "tiny", "seed": 3, "tiles": ("33TWL",), "dates": ("06-01",), "size_px": 64}
    first = generate(tmp_path, **kw)  # type: ignore[arg-type]
    stamp = first.path.stat().st_mtime_ns
    again = generate(tmp_path, **kw)  # type: ignore[arg-type]
    assert again.path.stat().st_mtime_ns == stamp, "an identical archive must not be rewritten"
    forced = generate(tmp_path, force=True, **kw)  # type: ignore[arg-type]
    assert forced.path.stat().st_mtime_ns != stamp
    # Different overrides regenerate and drop the old scenes.
    other = generate(tmp_path, **{**kw, "dates": ("06-02",)})  # type: ignore[arg-type]
    assert [s.item_id for s in other.scenes] == ["S2A_33TWL_20230602_0_L2A"]
    assert not first.scenes[0].item_path.exists()


def test_partial_archive_is_regenerated(tmp_path: Path) -> None:
    kw = {"preset": "tiny", "tiles": ("33TWL",), "dates": ("06-01",), "size_px": 64}
    m = generate(tmp_path, **kw)  # type: ignore[arg-type]
    m.scenes[0].assets["red"].unlink()
    again = generate(tmp_path, **kw)  # type: ignore[arg-type]
    assert again.scenes[0].assets["red"].exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"preset": "huge"}, "unknown preset"),
        ({"size_px": 33}, "even number"),
        ({"colour": 1}, "unknown override"),
        ({"tiles": ("33TAL",)}, "column letter"),
        ({"tiles": ("33TWZ",)}, "row letter"),
        ({"bands": ("B13",)}, "unknown Sentinel-2 band"),
        ({"dates": ("2023-01-01",)}, "MM-DD"),
        ({"legacy_baseline": ((5, 0),)}, "outside"),
    ],
)
def test_bad_arguments_fail_early_with_a_clear_message(
    tmp_path: Path, overrides: dict, message: str
) -> None:
    kw = {"preset": "tiny", **overrides}
    with pytest.raises((ValueError, KeyError), match=message):
        generate(tmp_path, **kw)
    assert not any(tmp_path.iterdir()), "nothing may be written before arguments are validated"


def test_band_subset_and_no_scl(tmp_path: Path) -> None:
    m = generate(
        tmp_path,
        preset="tiny",
        tiles=("34TCR",),
        dates=("07-01",),
        bands=("nir", "B04"),
        include_scl=False,
    )
    assert set(m.scenes[0].assets) == {"red", "nir"}
    item = json.loads(m.scenes[0].item_path.read_text())
    assert "eo:cloud_cover" in item["properties"]  # still computed from the (unwritten) SCL


def test_presets_are_valid() -> None:
    for name, preset in PRESETS.items():
        assert preset.validate() is preset, name
    bench = PRESETS["bench"]
    assert bench.blocksize == 1024 and len(bench.bands) == 4 and bench.size_px >= 4096
    demo = PRESETS["demo"]
    assert demo.size_px == 512 and len(demo.dates) == 6 and len(demo.tiles) >= 2
    # make demo's data: the world's rendering, with the context classes a few labels cannot teach
    demo_world = PRESETS["demo_world"]
    assert demo_world.world is not None and demo_world.world.context_classes
    assert len(demo_world.dates) == 6 and len(set(demo_world.world.regions)) == 2
