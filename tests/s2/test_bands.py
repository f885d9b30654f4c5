import pytest
from earthloop.s2.bands import (
    BANDS,
    SPECTRAL_BANDS,
    asset_key_candidates,
    resolve_band,
    resolve_bands,
)


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("blue", "B02"),
        ("B02", "B02"),
        ("b2", "B02"),
        ("nir08", "B8A"),
        ("B8A", "B8A"),
        ("swir16", "B11"),
        ("SCL", "SCL"),
        ("scl", "SCL"),
        ("coastal", "B01"),
        ("NIR", "B08"),
    ],
)
def test_aliases_resolve_to_one_band(alias: str, name: str) -> None:
    assert resolve_band(alias).name == name


def test_registry_covers_l2a_bands_with_native_resolution() -> None:
    assert SPECTRAL_BANDS == (
        "B01",
        "B02",
        "B03",
        "B04",
        "B05",
        "B06",
        "B07",
        "B08",
        "B8A",
        "B09",
        "B11",
        "B12",
    )
    assert {b: BANDS[b].resolution_m for b in ("B02", "B05", "B01", "SCL")} == {
        "B02": 10,
        "B05": 20,
        "B01": 60,
        "SCL": 20,
    }
    wl = [BANDS[b].wavelength_nm for b in SPECTRAL_BANDS]
    assert wl == sorted(wl)  # ordered by wavelength


def test_unknown_band_error_names_it() -> None:
    with pytest.raises(KeyError, match="B13"):
        resolve_band("B13")


def test_duplicate_selection_rejected() -> None:
    with pytest.raises(ValueError, match="twice"):
        resolve_bands(["nir", "B08"])


def test_asset_keys_cover_earth_search_and_planetary_computer() -> None:
    keys = asset_key_candidates(BANDS["B8A"])
    assert "nir08" in keys and "B8A" in keys
