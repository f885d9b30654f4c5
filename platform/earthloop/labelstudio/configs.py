"""Label Studio label configs, generated from the class set so UI and tables always agree.

Why generated: a hand-written XML config drifts from the class list the model and the ``labels``
table use; a class renamed in one place makes every pulled annotation "unknown class". The tag
names below are the contract between the config, push (pre-annotations) and pull (decoding).
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import quoteattr

from earthloop.labelstudio.palette import class_colours

IMAGE_NAME = "image"  # the <Image> tag; task data key "image" holds the preview URL
BRUSH_NAME = "label"  # the <BrushLabels> tag (segmentation)
CHOICES_NAME = "scene"  # the <Choices> tag (scene classification)

SEGMENTATION = "segmentation"
CLASSIFICATION = "classification"
KINDS = (SEGMENTATION, CLASSIFICATION)


def _check_classes(classes: Sequence[str]) -> None:
    if not classes:
        raise ValueError("a label config needs at least one class")
    dupes = sorted({c for c in classes if list(classes).count(c) > 1})
    if dupes:
        raise ValueError(f"duplicate class names {dupes}: Label Studio keys labels by name")
    blank = [c for c in classes if not c.strip()]
    if blank:
        raise ValueError("class names must not be blank")


def segmentation_config(classes: Sequence[str]) -> str:
    """``Image`` + ``BrushLabels`` over ``classes``, each label in its plot colour.

    Args:
        classes: class names in class-id order (id 1 first; 0 "unlabelled" is not a label).

    Returns:
        The label config XML.

    Raises:
        ValueError: no classes, a blank name or a duplicate name.
    """
    _check_classes(classes)
    colours = class_colours(classes)
    labels = "\n".join(
        f"    <Label value={quoteattr(c)} background={quoteattr(colours[c])}/>" for c in classes
    )
    return (
        "<View>\n"
        f'  <Image name="{IMAGE_NAME}" value="${IMAGE_NAME}" zoom="true" zoomControl="true"/>\n'
        f'  <BrushLabels name="{BRUSH_NAME}" toName="{IMAGE_NAME}">\n'
        f"{labels}\n"
        "  </BrushLabels>\n"
        "</View>\n"
    )


def classification_config(classes: Sequence[str], *, multiple: bool = False) -> str:
    """``Image`` + ``Choices`` over ``classes`` (one scene label, or several with ``multiple``).

    Raises:
        ValueError: no classes, a blank name or a duplicate name.
    """
    _check_classes(classes)
    choice = "multiple" if multiple else "single"
    options = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return (
        "<View>\n"
        f'  <Image name="{IMAGE_NAME}" value="${IMAGE_NAME}" zoom="true"/>\n'
        f'  <Choices name="{CHOICES_NAME}" toName="{IMAGE_NAME}" choice="{choice}" '
        'showInline="true" required="true">\n'
        f"{options}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def label_config(kind: str, classes: Sequence[str]) -> str:
    """The config for ``kind`` (``segmentation`` or ``classification``).

    Raises:
        ValueError: an unknown kind, or a bad class list.
    """
    if kind == SEGMENTATION:
        return segmentation_config(classes)
    if kind == CLASSIFICATION:
        return classification_config(classes)
    raise ValueError(f"unknown label kind {kind!r} (expected one of {KINDS})")
