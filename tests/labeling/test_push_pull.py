"""Push → annotate → pull against a real Label Studio, on the synthetic demo archive.

Each test uses its own project (titles differ), so they share one server but no state. The
annotations go through the real API (the simulated annotator uses ``/next`` like the UI), and
the pulled masks are read back from the GeoTIFFs the ``labels`` table points at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import rasterio
import requests
from earthloop.labelstudio.configs import CLASSIFICATION, SEGMENTATION
from earthloop.labelstudio.project import UNCERTAINTY_SAMPLING, ProjectSpec
from earthloop.labelstudio.pull import PullReport, pull_labels
from earthloop.labelstudio.push import Prediction, Selected, push_chips
from earthloop.labelstudio.results import brush_result
from earthloop.labelstudio.simulate import add_noise, annotate, read_truth
from earthloop.store.delta import merge_rows, read_table, table_version
from earthloop.store.labels import label_source_from_manifest
from earthloop.store.tables import LABELS

pytestmark = pytest.mark.integration

N_CHIPS = 20


@pytest.fixture(scope="module")
def archive(synthetic_demo: dict[str, Any]) -> dict[str, Any]:
    """20 chips of the demo archive (spread over tiles), their rows and ground-truth masks."""
    rows = read_table(str(synthetic_demo["chips"])).to_pylist()
    rows.sort(key=lambda r: (r["cloud_fraction"], r["chip_id"]))
    by_tile: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_tile.setdefault(r["tile"], []).append(r)
    picked = [r for group in zip(*by_tile.values(), strict=False) for r in group][:N_CHIPS]
    source = label_source_from_manifest(synthetic_demo["manifest"].root, "landcover")
    return {
        "rows": {r["chip_id"]: r for r in picked},
        "truth": read_truth(picked, source.rasters),
        "classes": source.classes,
        "chips_uri": str(synthetic_demo["chips"]),
    }


def _spec(label_studio: Any, archive: dict[str, Any], title: str) -> ProjectSpec:
    return ProjectSpec(title, SEGMENTATION, archive["classes"], label_studio.files_root)


def _push(label_studio: Any, archive: dict[str, Any], spec: ProjectSpec) -> dict[str, float]:
    """Push the 20 chips with noisy-truth predictions; returns chip id → prediction score."""
    rng = np.random.default_rng(0)
    chips = sorted(archive["rows"])
    scores = {c: round(0.05 + 0.9 * i / N_CHIPS, 3) for i, c in enumerate(reversed(chips))}
    preds = {
        c: Prediction("model-a", scores[c], add_noise(archive["truth"][c], 0.2, [1, 2, 3], rng))
        for c in chips
    }
    selected = [Selected(c, "entropy", 1.0 - scores[c], al_round=1) for c in chips]
    report = push_chips(label_studio.client(), spec, selected, archive["rows"], preds)
    assert report.created == N_CHIPS and not report.no_preview
    return scores


def _pull(label_studio: Any, archive: dict[str, Any], spec: ProjectSpec, work: Path) -> PullReport:
    return pull_labels(
        label_studio.client(),
        spec,
        chips_uri=archive["chips_uri"],
        labels_uri=str(work / "tables" / LABELS.name),
        masks_root=str(work / "label_masks"),
    )


def test_push_creates_tasks_once_with_previews_and_preannotations(
    label_studio: Any, archive: dict[str, Any]
) -> None:
    spec = _spec(label_studio, archive, "push once")
    scores = _push(label_studio, archive, spec)
    client = label_studio.client()
    pid = next(p["id"] for p in client.projects() if p["title"] == spec.title)
    project = client.request("GET", f"/api/projects/{pid}/")
    assert project["sampling"] == UNCERTAINTY_SAMPLING and project["model_version"] == "model-a"
    tasks = list(client.tasks(pid))
    assert sorted(t["data"]["chip_id"] for t in tasks) == sorted(archive["rows"])
    task = client.request("GET", f"/api/tasks/{tasks[0]['id']}/")
    chip = task["data"]["chip_id"]
    assert task["data"]["strategy"] == "entropy" and task["data"]["al_round"] == 1
    pred = task["predictions"][0]
    assert pred["model_version"] == "model-a" and pred["score"] == pytest.approx(scores[chip])
    assert {r["value"]["format"] for r in pred["result"]} == {"rle"}
    png = spec.preview_dir(pid) / f"{chip}.png"
    assert task["data"]["image"].endswith(f"project-{pid}/{chip}.png")
    size = archive["rows"][chip]["chip_size"]
    assert mpimg.imread(png).shape == (size, size, 3)  # one preview pixel per chip pixel
    served_png = label_studio.ui_session().get(label_studio.url + task["data"]["image"], timeout=30)
    assert served_png.status_code == 200 and served_png.content == png.read_bytes()
    assert requests.get(label_studio.url + task["data"]["image"], timeout=30).status_code == 401

    again = push_chips(
        client, spec, [Selected(c, "entropy", 0.5) for c in archive["rows"]], archive["rows"]
    )
    assert (again.created, again.already_queued) == (0, N_CHIPS)
    assert len(list(client.tasks(pid))) == N_CHIPS

    # Label Studio serves the least confident prediction first (uncertainty sampling).
    served = [a.chip_id for a in annotate(client, spec, archive["truth"], limit=4)]
    assert served == sorted(scores, key=scores.__getitem__)[:4]


def _mask(href: str) -> np.ndarray:
    with rasterio.open(href) as src:
        return src.read(1)


def test_pull_round_trips_masks_and_is_idempotent(
    label_studio: Any, archive: dict[str, Any], tmp_path: Path
) -> None:
    spec = _spec(label_studio, archive, "round trip")
    _push(label_studio, archive, spec)
    done = annotate(label_studio.client(), spec, archive["truth"])
    assert len(done) == N_CHIPS

    first = _pull(label_studio, archive, spec, tmp_path)
    assert (first.inserted, first.updated, sum(first.rejected.values())) == (N_CHIPS, 0, 0)
    labels_uri = str(tmp_path / "tables" / LABELS.name)
    table = read_table(labels_uri)
    assert table.schema.names == LABELS.schema.names and table.num_rows == N_CHIPS
    for row in table.to_pylist():
        truth = archive["truth"][row["chip_id"]]
        assert np.array_equal(_mask(row["mask_href"]), truth)
        counts = np.bincount(truth.ravel(), minlength=len(row["class_histogram"]))
        counts[0] = 0  # unlabelled pixels are no class
        assert row["class_histogram"] == pytest.approx((counts / counts.sum()).tolist())
        assert row["annotator"] == "admin@earthloop.local" and row["al_round"] == 1
        assert 5.0 <= row["lead_time_s"] <= 30.0
        grid = archive["rows"][row["chip_id"]]
        with rasterio.open(row["mask_href"]) as src:  # the mask lies on the chip's grid
            assert tuple(src.bounds) == pytest.approx(
                (grid["minx"], grid["miny"], grid["maxx"], grid["maxy"])
            )

    version = table_version(labels_uri)
    again = _pull(label_studio, archive, spec, tmp_path)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, N_CHIPS)
    assert table_version(labels_uri) == version

    # An annotator corrects one annotation: exactly that row changes, in a new table version.
    target = done[0]
    fixed = archive["truth"][target.chip_id].copy()
    fixed[:8, :8] = 1
    label_studio.client().update_annotation(target.annotation_id, brush_result(fixed, spec.classes))
    third = _pull(label_studio, archive, spec, tmp_path)
    assert (third.inserted, third.updated, third.unchanged) == (0, 1, N_CHIPS - 1)
    assert table_version(labels_uri) > version
    now = read_table(labels_uri)
    row = now.filter(pc.equal(now["chip_id"], target.chip_id)).to_pylist()[0]
    assert np.array_equal(_mask(row["mask_href"]), fixed)
    old = read_table(labels_uri, version=version)
    old_row = old.filter(pc.equal(old["chip_id"], target.chip_id)).to_pylist()[0]
    assert np.array_equal(_mask(old_row["mask_href"]), archive["truth"][target.chip_id])

    # A label of another project in the same table is not this project's to remove.
    other = {**row, "project": "another project", "annotation_id": "999999"}
    merge_rows(labels_uri, pa.Table.from_pylist([other], schema=LABELS.schema), LABELS.keys)
    # An annotator deletes one annotation: its row goes, nothing else does; then it stays gone.
    gone = done[1]
    label_studio.client().request("DELETE", f"/api/annotations/{gone.annotation_id}/")
    fourth = _pull(label_studio, archive, spec, tmp_path)
    assert (fourth.removed, fourth.inserted, fourth.updated) == (1, 0, 0)
    after = read_table(labels_uri)
    mine = after.filter(pc.equal(after["project"], spec.title))
    assert sorted(mine["chip_id"].to_pylist()) == sorted(
        c for c in archive["rows"] if c != gone.chip_id
    )
    assert after.filter(pc.equal(after["project"], "another project")).num_rows == 1
    assert _pull(label_studio, archive, spec, tmp_path).removed == 0


def test_malformed_annotations_are_rejected_and_counted(
    label_studio: Any, archive: dict[str, Any], tmp_path: Path
) -> None:
    spec = _spec(label_studio, archive, "malformed")
    _push(label_studio, archive, spec)
    client = label_studio.client()
    pid = next(p["id"] for p in client.projects() if p["title"] == spec.title)
    tasks = {t["data"]["chip_id"]: int(t["id"]) for t in client.tasks(pid)}
    chips = sorted(tasks)
    truth = archive["truth"]
    good = brush_result(truth[chips[0]], spec.classes)
    unknown = brush_result(truth[chips[1]], spec.classes)
    unknown[0]["value"]["brushlabels"] = ["lava"]
    wrong_size = brush_result(truth[chips[2]][:32, :32], spec.classes)
    client.create_annotation(tasks[chips[0]], good, 3.0)
    client.create_annotation(tasks[chips[1]], unknown, 3.0)
    client.create_annotation(tasks[chips[2]], wrong_size, 3.0)
    client.create_annotation(tasks[chips[3]], [], 3.0)  # submitted with nothing painted

    report = _pull(label_studio, archive, spec, tmp_path)
    assert report.inserted == 1
    assert dict(report.rejected) == {"unknown_class": 1, "shape": 1, "empty": 1}
    assert {r[0] for r in report.rejections} == set(chips[1:4])
    table = read_table(str(tmp_path / "tables" / LABELS.name))
    assert table.column("chip_id").to_pylist() == [chips[0]]


def test_scene_classification_push_and_pull(
    label_studio: Any, archive: dict[str, Any], tmp_path: Path
) -> None:
    spec = ProjectSpec("scenes", CLASSIFICATION, archive["classes"], label_studio.files_root)
    chips = sorted(archive["rows"])[:3]
    # Scene truth: every class covering at least a tenth of the chip.
    truth = {
        c: sorted(
            spec.classes[int(i)]
            for i in np.unique(archive["truth"][c])
            if i and (archive["truth"][c] == i).mean() >= 0.1
        )
        for c in chips
    }
    preds = {c: Prediction("model-a", 0.5, classes=tuple(truth[c][:1])) for c in chips}
    selected = [Selected(c, "margin", 0.5) for c in chips]
    pushed = push_chips(label_studio.client(), spec, selected, archive["rows"], preds)
    assert pushed.created == 3
    assert len(annotate(label_studio.client(), spec, truth)) == 3
    report = _pull(label_studio, archive, spec, tmp_path)
    assert report.inserted == 3 and not report.rejected
    table = read_table(str(tmp_path / "tables" / LABELS.name))
    got = {r["chip_id"]: r for r in table.to_pylist()}
    assert {c: got[c]["classes"] for c in chips} == truth
    assert all(r["kind"] == CLASSIFICATION and r["mask_href"] is None for r in got.values())
