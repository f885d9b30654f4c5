"""Our labels ⇄ Label Studio result lists: brush regions for masks, choices for scene labels.

Push writes pre-annotations with these encoders and pull decodes annotations with the matching
decoders, so the two directions cannot drift. Decoding validates: a malformed annotation raises
:class:`InvalidAnnotation` with a low-cardinality ``reason`` (counted by pull, used as a metric
label) and never yields a partial label.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from earthloop.labelstudio.configs import BRUSH_NAME, CHOICES_NAME, IMAGE_NAME
from earthloop.labelstudio.rle import RleError, mask_to_rle, rle_to_mask

Json = dict[str, Any]


class InvalidAnnotation(ValueError):
    """An annotation that must not become a label; ``reason`` is one of a few fixed words."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _region_id(*parts: object) -> str:
    """Stable region id (Label Studio only needs uniqueness within a task)."""
    return hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()[:10]


def brush_result(mask: np.ndarray, names: Mapping[int, str]) -> list[Json]:
    """One brush region per class present in ``mask`` (class ids; 0 = unlabelled, no region).

    Args:
        mask: (H, W) integer class ids on the chip grid.
        names: class id → class name (the label values of the segmentation config).

    Raises:
        ValueError: the mask holds an id that is not a class.
    """
    if mask.ndim != 2:
        raise ValueError(f"a segmentation mask is (H, W), got shape {mask.shape}")
    height, width = mask.shape
    present = [int(c) for c in np.unique(mask) if int(c) != 0]
    unknown = [c for c in present if c not in names]
    if unknown:
        raise ValueError(f"mask holds class ids {unknown} that are not in the class set")
    return [
        {
            "id": _region_id(names[c], height, width),
            "from_name": BRUSH_NAME,
            "to_name": IMAGE_NAME,
            "type": "brushlabels",
            "original_width": width,
            "original_height": height,
            "image_rotation": 0,
            "value": {"format": "rle", "rle": mask_to_rle(mask == c), "brushlabels": [names[c]]},
        }
        for c in present
    ]


def choices_result(chosen: Sequence[str]) -> list[Json]:
    """A ``Choices`` result selecting ``chosen`` scene labels."""
    return [
        {
            "id": _region_id(*chosen),
            "from_name": CHOICES_NAME,
            "to_name": IMAGE_NAME,
            "type": "choices",
            "value": {"choices": list(chosen)},
        }
    ]


def _region_class(item: Json, ids: Mapping[str, int], height: int, width: int) -> int:
    if item.get("from_name") != BRUSH_NAME or item.get("type") != "brushlabels":
        raise InvalidAnnotation(
            "unexpected_result", f"result of {item.get('from_name')!r}/{item.get('type')!r}"
        )
    size = (item.get("original_height"), item.get("original_width"))
    if size != (height, width):
        raise InvalidAnnotation("shape", f"region drawn on {size}, the chip is {(height, width)}")
    value = item.get("value") or {}
    labels = value.get("brushlabels") or []
    if len(labels) != 1:
        raise InvalidAnnotation("unknown_class", f"a region needs one label, has {labels}")
    if labels[0] not in ids:
        raise InvalidAnnotation("unknown_class", f"label {labels[0]!r} is not in the class set")
    if value.get("format") != "rle" or not isinstance(value.get("rle"), list):
        raise InvalidAnnotation("bad_rle", "region is not an RLE brush mask")
    return ids[labels[0]]


def decode_segmentation(
    result: Sequence[Json], names: Mapping[int, str], height: int, width: int
) -> np.ndarray:
    """Brush regions → (H, W) uint8 class ids (0 where nothing was painted).

    Regions are applied in their order: where strokes of two classes overlap the later one wins,
    as it is drawn on top in the UI.

    Raises:
        InvalidAnnotation: a foreign result, a region of another size, an unknown label or an
            undecodable RLE.
    """
    ids = {name: cid for cid, name in names.items()}
    mask = np.zeros((height, width), dtype=np.uint8)
    for item in result:
        cid = _region_class(item, ids, height, width)
        try:
            mask[rle_to_mask(item["value"]["rle"], height, width)] = cid
        except RleError as exc:
            raise InvalidAnnotation("bad_rle", str(exc)) from None
    return mask


def decode_classification(result: Sequence[Json], names: Sequence[str]) -> list[str]:
    """``Choices`` results → the chosen scene labels, sorted.

    Raises:
        InvalidAnnotation: a foreign result or a label that is not a class.
    """
    chosen: set[str] = set()
    for item in result:
        if item.get("from_name") != CHOICES_NAME or item.get("type") != "choices":
            raise InvalidAnnotation(
                "unexpected_result", f"result of {item.get('from_name')!r}/{item.get('type')!r}"
            )
        picked = (item.get("value") or {}).get("choices") or []
        unknown = [c for c in picked if c not in names]
        if unknown:
            raise InvalidAnnotation("unknown_class", f"choices {unknown} are not in the class set")
        chosen.update(picked)
    return sorted(chosen)
