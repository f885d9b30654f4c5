"""One colour per class name, shared by Label Studio's brush labels and the project's plots.

Why one home: an annotator who sees "forest" in dark green in the labeling UI and in blue in a
report's class map will mis-read one of them. Plots of class maps should take their colours
from :func:`class_colours` too. Known land-cover and crop-type names get conventional colours
(water blue, urban red, forest green...); any other name gets a stable colour from a fixed
qualitative list, chosen by the class's position, so a class set always renders the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

# Conventional land-cover / crop colours (close to ESA WorldCover and CORINE conventions).
KNOWN_COLOURS: dict[str, str] = {
    "water": "#1f5fbf",
    "urban": "#d62728",
    "bare soil": "#b8a88a",
    "broadleaf forest": "#2ca02c",
    "coniferous forest": "#0b5d1e",
    "grassland": "#a6d96a",
    "cropland": "#f0c419",
    "winter wheat": "#e6ab02",
    "winter barley": "#c9a227",
    "rapeseed": "#ffff33",
    "maize": "#ff7f00",
    "sunflower": "#f781bf",
    "sugar beet": "#984ea3",
}

# matplotlib's tab20, written out so a label config never depends on a plotting backend.
FALLBACK_COLOURS: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip


def class_colours(names: Sequence[str]) -> dict[str, str]:
    """Hex colour (``#rrggbb``) for each class name, stable for a given class list.

    Args:
        names: class names in class-id order.

    Returns:
        ``{name: colour}``; known names keep their conventional colour, others take the
        fallback colour at their position (wrapping after 20 classes).
    """
    return {
        name: KNOWN_COLOURS.get(name.lower(), FALLBACK_COLOURS[i % len(FALLBACK_COLOURS)])
        for i, name in enumerate(names)
    }
