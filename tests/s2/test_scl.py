import numpy as np
from earthloop.s2.scl import SCL, chip_quality, cloud_mask, scl_invalid_mask


def test_masks_follow_scl_semantics() -> None:
    scl = np.arange(12, dtype=np.uint8)
    assert np.flatnonzero(cloud_mask(scl)).tolist() == [8, 9, 10]
    assert np.flatnonzero(scl_invalid_mask(scl)).tolist() == [0, 1, 3, 8, 9, 10]
    assert np.flatnonzero(scl_invalid_mask(scl, snow=True)).tolist() == [0, 1, 3, 8, 9, 10, 11]
    assert np.flatnonzero(scl_invalid_mask(scl, shadow=False, nodata=False)).tolist() == [
        1,
        8,
        9,
        10,
    ]


def test_chip_quality_fractions() -> None:
    scl = np.full((10, 10), SCL.VEGETATION, dtype=np.uint8)
    scl[:2] = SCL.CLOUD_HIGH_PROBABILITY
    scl[2] = SCL.CLOUD_SHADOW
    scl[3, :5] = SCL.NO_DATA
    q = chip_quality(scl)
    assert q["cloud_fraction"] == 0.2
    assert q["shadow_fraction"] == 0.1
    assert q["nodata_fraction"] == 0.05
    assert q["invalid_fraction"] == 0.35
