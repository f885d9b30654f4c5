"""A simulated annotator: ground truth submitted through the real Label Studio API.

Why: the loop (push → annotate → pull → train → select) must run end to end in tests, the demo
and the active-learning benchmark, with no human. The annotator asks Label Studio for its next
task exactly like the UI does (``/next``, so it follows the project's uncertainty sampling),
paints the ground truth (optionally with label noise) and submits it with a lead time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from earthloop.labelstudio.client import LabelStudio
from earthloop.labelstudio.configs import SEGMENTATION
from earthloop.labelstudio.project import ProjectSpec, open_project
from earthloop.labelstudio.results import brush_result, choices_result
from earthloop.stream.reader import plan_groups, read_group

Truth = np.ndarray | Sequence[str]  # a class-id mask (segmentation) or scene labels


@dataclass(frozen=True)
class Annotated:
    """One submitted annotation, in the order Label Studio served the tasks."""

    chip_id: str
    task_id: int
    annotation_id: int
    lead_time_s: float


def read_truth(
    rows: Sequence[Mapping[str, Any]], rasters: Mapping[str, str]
) -> dict[str, np.ndarray]:
    """Chip id → (H, W) class ids read from the label rasters (tile → raster) on the chip grid."""
    truth: dict[str, np.ndarray] = {}
    for group in plan_groups([dict(r) for r in rows]):
        band = [str(group[0]["bands"][0])]
        for out in read_group(group, band, mask_clouds=False, labels=rasters):
            if out["error"]:
                raise ValueError(f"ground truth of chip {out['chip_id']}: {out['error']}")
            truth[out["chip_id"]] = out["label"].astype(np.uint8)
    return truth


def add_noise(
    mask: np.ndarray, noise: float, class_ids: Sequence[int], rng: np.random.Generator
) -> np.ndarray:
    """Relabel a fraction ``noise`` of the labelled pixels to a random class (a careless brush)."""
    if noise <= 0:
        return mask
    out = mask.copy()
    flip = (rng.random(mask.shape) < noise) & (mask != 0)
    out[flip] = rng.choice(np.asarray(class_ids, dtype=mask.dtype), size=int(flip.sum()))
    return out


def _result(spec: ProjectSpec, truth: Truth, noise: float, rng: np.random.Generator) -> list[Any]:
    if spec.kind == SEGMENTATION:
        mask = add_noise(np.asarray(truth), noise, sorted(spec.classes), rng)
        return brush_result(mask, spec.classes)
    return choices_result(list(truth))


def annotate(
    client: LabelStudio,
    spec: ProjectSpec,
    truth: Mapping[str, Truth],
    *,
    limit: int | None = None,
    noise: float = 0.0,
    lead_time_s: tuple[float, float] = (5.0, 30.0),
    seed: int = 0,
) -> list[Annotated]:
    """Annotate up to ``limit`` tasks in the order Label Studio serves them.

    Args:
        truth: chip id → ground truth; a served task whose chip has none ends the session (the
            annotator cannot label it, and ``/next`` would serve it again).
        noise: fraction of labelled pixels relabelled at random (segmentation only).
        lead_time_s: range of the simulated time spent per task, uniform.

    Returns:
        The submitted annotations, in submission order.
    """
    rng = np.random.default_rng(seed)
    pid = open_project(client, spec)
    done: list[Annotated] = []
    while limit is None or len(done) < limit:
        task = client.next_task(pid)
        if task is None:
            break
        chip_id = str(task["data"]["chip_id"])
        if chip_id not in truth:
            break
        lead = float(rng.uniform(*lead_time_s))
        ann = client.create_annotation(
            int(task["id"]), _result(spec, truth[chip_id], noise, rng), lead
        )
        done.append(Annotated(chip_id, int(task["id"]), int(ann["id"]), lead))
    return done
