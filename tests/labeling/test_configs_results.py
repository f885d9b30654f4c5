"""Label configs and result encoding/validation, without a server."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from earthloop.labelstudio.configs import classification_config, label_config, segmentation_config
from earthloop.labelstudio.palette import KNOWN_COLOURS, class_colours
from earthloop.labelstudio.results import (
    InvalidAnnotation,
    brush_result,
    choices_result,
    decode_classification,
    decode_segmentation,
)
from earthloop.synth import LANDCOVER_CLASSES

NAMES = {1: "water", 2: "urban", 3: "bare soil"}


def test_segmentation_config_lists_every_class_in_its_colour() -> None:
    root = ET.fromstring(segmentation_config(list(LANDCOVER_CLASSES.values())))
    labels = {e.get("value"): e.get("background") for e in root.iter("Label")}
    assert list(labels) == list(LANDCOVER_CLASSES.values())
    assert labels["water"] == KNOWN_COLOURS["water"]
    assert labels == class_colours(list(LANDCOVER_CLASSES.values()))
    brush = root.find("BrushLabels")
    assert brush is not None and brush.get("toName") == root.find("Image").get("name")  # type: ignore[union-attr]


def test_classification_config_and_bad_class_sets() -> None:
    root = ET.fromstring(classification_config(["a & b", "c"]))
    assert [c.get("value") for c in root.iter("Choice")] == ["a & b", "c"]  # escaped, parsed back
    for bad in ([], ["x", "x"], [" "]):
        with pytest.raises(ValueError):
            segmentation_config(bad)
    with pytest.raises(ValueError, match="unknown label kind"):
        label_config("detection", ["x"])


def test_unknown_class_names_get_stable_distinct_colours() -> None:
    colours = class_colours(["alpha", "beta", "water"])
    assert colours == class_colours(["alpha", "beta", "water"])
    assert len(set(colours.values())) == 3


def test_brush_result_round_trip_with_overlap_order() -> None:
    mask = np.zeros((12, 10), np.uint8)
    mask[:4] = 1
    mask[6:, 5:] = 3
    result = brush_result(mask, NAMES)
    assert [r["value"]["brushlabels"] for r in result] == [["water"], ["bare soil"]]
    assert np.array_equal(decode_segmentation(result, NAMES, 12, 10), mask)
    over = brush_result(np.ones((12, 10), np.uint8), NAMES) + result  # later regions win
    assert np.array_equal(decode_segmentation(over, NAMES, 12, 10), np.where(mask, mask, 1))


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r[0]["value"].update(brushlabels=["lava"]), "unknown_class"),
        (lambda r: r[0]["value"].update(brushlabels=[]), "unknown_class"),
        (lambda r: r[0].update(original_width=11), "shape"),
        (lambda r: r[0]["value"].update(rle=r[0]["value"]["rle"][:9]), "bad_rle"),
        (lambda r: r[0].update(from_name="other", type="rectanglelabels"), "unexpected_result"),
    ],
)
def test_malformed_regions_are_refused_with_a_reason(mutate, reason) -> None:  # type: ignore[no-untyped-def]
    mask = np.zeros((12, 10), np.uint8)
    mask[2:9, 1:7] = 2
    result = brush_result(mask, NAMES)
    mutate(result)
    with pytest.raises(InvalidAnnotation) as err:
        decode_segmentation(result, NAMES, 12, 10)
    assert err.value.reason == reason


def test_choices_round_trip_and_unknown_choice() -> None:
    assert decode_classification(choices_result(["urban", "water"]), list(NAMES.values())) == [
        "urban",
        "water",
    ]
    with pytest.raises(InvalidAnnotation) as err:
        decode_classification(choices_result(["lava"]), list(NAMES.values()))
    assert err.value.reason == "unknown_class"
