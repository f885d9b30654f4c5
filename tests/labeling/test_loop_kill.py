"""Killing the loop between push and pull loses nothing and duplicates nothing.

A real Label Studio (conftest.py's session server) holds 12 pushed, pre-annotated tasks; the
simulated annotator labels them through the API. The label sync (``sync_labels``, the job's
library function) then runs as a *separate process* that the test SIGKILLs — no ``finally``,
no flush, exactly what an OOM kill or a lost node does:

1. after three of eight masks are written, before the MERGE (files on disk, no rows);
2. after the MERGE committed, before the job reports (rows in, caller never told);
3. at an arbitrary moment after start-up (wherever it happens to be).

Between kills more annotations arrive and one is corrected. A final sync must leave exactly one
``labels`` row per annotation, with its exact mask (the corrected one for the correction), no
row for anything not annotated, no stray mask file, and a re-run must write nothing. The hook
points are the pull module's own seams (``write_mask``, ``merge_rows``), wrapped in the child
process only; the library is not changed for the test.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from earthloop.config import load_config
from earthloop.labelstudio.configs import SEGMENTATION
from earthloop.labelstudio.project import ProjectSpec
from earthloop.labelstudio.push import Prediction, Selected, push_chips
from earthloop.labelstudio.results import brush_result
from earthloop.labelstudio.simulate import add_noise, annotate, read_truth
from earthloop.labelstudio.sync import sync_labels
from earthloop.store.delta import read_table, table_exists, table_version
from earthloop.store.labels import label_source_from_manifest
from earthloop.store.tables import LABELS

pytestmark = pytest.mark.integration

N_CHIPS = 12
FIRST_BATCH = 8  # annotated before the first kill; the rest arrive between kills

# The child: one sync, optionally paused (then killed by the test) at a seam of the pull.
DRIVER = r"""
import json, sys, time
from pathlib import Path
import earthloop.labelstudio.pull as pull
from earthloop.config import load_config
from earthloop.labelstudio.client import Connection, LabelStudio
from earthloop.labelstudio.configs import SEGMENTATION
from earthloop.labelstudio.project import ProjectSpec
from earthloop.labelstudio.sync import sync_labels

args = json.loads(sys.argv[1])

def pause(where):
    print("PAUSED " + where, flush=True)
    time.sleep(600)

if args["hook"] == "masks":
    real_write, written = pull.write_mask, []
    def write_mask(*a, **k):
        href = real_write(*a, **k)
        written.append(href)
        if len(written) == args["after"]:
            pause(json.dumps(written))
        return href
    pull.write_mask = write_mask
elif args["hook"] == "merge":
    real_merge = pull.merge_rows
    def merge_rows(*a, **k):
        stats = real_merge(*a, **k)
        pause(json.dumps(stats))
        return stats
    pull.merge_rows = merge_rows

cfg = load_config(None, args["overrides"])
classes = {int(k): v for k, v in args["classes"].items()}
spec = ProjectSpec(args["title"], SEGMENTATION, classes, Path(args["files_root"]))
client = LabelStudio(Connection.from_env())
print("STARTED", flush=True)
rep = sync_labels(cfg, spec, client)
p = rep.pull
print("DONE " + json.dumps({"inserted": p.inserted, "updated": p.updated,
                            "unchanged": p.unchanged, "version": p.version}), flush=True)
"""


class Sync:
    """Starts the sync child for one project and kills it where the test says."""

    def __init__(self, label_studio: Any, args: dict[str, Any], log_dir: Path) -> None:
        self.args = args
        self.log_dir = log_dir
        self.env = {
            **os.environ,
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_TOKEN_PATH": str(label_studio.token_path),
        }
        self.env.pop("LABEL_STUDIO_API_KEY", None)
        self.runs = 0

    def start(self, hook: str = "none", after: int = 0) -> subprocess.Popen[str]:
        self.runs += 1
        err = open(self.log_dir / f"sync-{self.runs}.stderr", "w")  # noqa: SIM115 (child's life)
        return subprocess.Popen(
            [sys.executable, "-c", DRIVER, json.dumps({**self.args, "hook": hook, "after": after})],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=self.env,
        )

    def wait_line(self, proc: subprocess.Popen[str], prefix: str, timeout: float = 60.0) -> str:
        """The child's first stdout line starting with ``prefix`` (fails on exit or timeout)."""
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if not ready:
                continue
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        proc.kill()
        proc.wait()
        log = (self.log_dir / f"sync-{self.runs}.stderr").read_text()[-3000:]
        pytest.fail(f"sync child never printed {prefix!r} (rc {proc.returncode}):\n{log}")

    def kill(self, proc: subprocess.Popen[str]) -> None:
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL

    def complete(self) -> dict[str, int]:
        proc = self.start()
        done = json.loads(self.wait_line(proc, "DONE "))
        rc = proc.wait(timeout=30)
        if rc != 0:
            log = (self.log_dir / f"sync-{self.runs}.stderr").read_text()[-3000:]
            pytest.fail(f"sync child printed DONE but exited with {rc}:\n{log}")
        return {k: int(v) for k, v in done.items()}


@pytest.fixture
def loop(label_studio: Any, synthetic_demo: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """12 demo chips pushed (with pre-annotations) into a fresh project; a workdir of its own."""
    work = tmp_path / "work"
    shutil.copytree(Path(str(synthetic_demo["chips"])), work / "tables" / "chips")
    overrides = [*synthetic_demo["overrides"], f"workdir={work}"]
    rows = sorted(read_table(str(synthetic_demo["chips"])).to_pylist(), key=lambda r: r["chip_id"])
    rows = rows[1 :: max(1, len(rows) // N_CHIPS)][:N_CHIPS]
    source = label_source_from_manifest(synthetic_demo["manifest"].root, "landcover")
    spec = ProjectSpec("loop kill", SEGMENTATION, source.classes, label_studio.files_root)
    truth = read_truth(rows, source.rasters)
    rng = np.random.default_rng(1)
    preds = {
        c: Prediction("model-k", 0.1 + 0.05 * i, add_noise(m, 0.2, sorted(spec.classes), rng))
        for i, (c, m) in enumerate(sorted(truth.items()))
    }
    selected = [Selected(c, "margin", 0.5, al_round=2) for c in sorted(truth)]
    client = label_studio.client()
    by_id = {r["chip_id"]: r for r in rows}
    assert push_chips(client, spec, selected, by_id, preds).created == N_CHIPS
    args = {
        "overrides": overrides,
        "title": spec.title,
        "classes": {str(k): v for k, v in spec.classes.items()},
        "files_root": str(label_studio.files_root),
    }
    return {
        "cfg": load_config(None, overrides),
        "spec": spec,
        "client": client,
        "truth": truth,
        "rows": by_id,
        "selected": selected,
        "sync": Sync(label_studio, args, tmp_path),
    }


def _mask(href: str) -> np.ndarray:
    with rasterio.open(href) as src:
        return src.read(1)


def _labels(cfg: Any) -> list[dict[str, Any]]:
    uri = cfg.table_uri(LABELS)
    return read_table(uri).to_pylist() if table_exists(uri) else []


def _check_no_duplicates(rows: list[dict[str, Any]], annotations: dict[str, str]) -> None:
    """Whatever a kill left: only annotations that exist, each at most once."""
    keys = [(r["chip_id"], r["annotation_id"]) for r in rows]
    assert len(keys) == len(set(keys)), f"duplicate label rows: {keys}"
    assert {r["chip_id"]: r["annotation_id"] for r in rows}.items() <= annotations.items()


def test_killing_the_sync_loses_nothing_and_duplicates_nothing(loop: dict[str, Any]) -> None:
    cfg, spec, client, truth, sync = (
        loop["cfg"], loop["spec"], loop["client"], loop["truth"], loop["sync"],
    )  # fmt: skip
    masks_root = Path(cfg.path("label_masks"))
    annotations: dict[str, str] = {}  # chip id → annotation id, as Label Studio holds them
    for a in annotate(client, spec, truth, limit=FIRST_BATCH):
        annotations[a.chip_id] = str(a.annotation_id)

    # 1. Killed while writing masks: three files on disk, nothing committed.
    proc = sync.start(hook="masks", after=3)
    written = json.loads(sync.wait_line(proc, "PAUSED "))
    sync.kill(proc)
    assert len(written) == 3 and all(Path(h).is_file() for h in written)
    assert _labels(cfg) == []

    # The rest is annotated while no sync runs; a re-push of the round creates nothing.
    for a in annotate(client, spec, truth):
        annotations[a.chip_id] = str(a.annotation_id)
    assert len(annotations) == N_CHIPS
    again = push_chips(client, spec, loop["selected"], loop["rows"])
    assert (again.created, again.already_queued) == (0, N_CHIPS)

    # 2. Killed right after its MERGE committed: the rows are in, the job never said so.
    proc = sync.start(hook="merge")
    stats = json.loads(sync.wait_line(proc, "PAUSED "))
    sync.kill(proc)
    assert (stats["inserted"], stats["updated"]) == (N_CHIPS, 0)
    committed = _labels(cfg)
    assert len(committed) == N_CHIPS
    _check_no_duplicates(committed, annotations)

    # An annotator corrects one label; 3. a sync killed wherever it happens to be.
    target = sorted(annotations)[0]
    fixed = truth[target].copy()
    fixed[:10, :10] = max(spec.classes)
    assert not np.array_equal(fixed, truth[target])
    client.update_annotation(int(annotations[target]), brush_result(fixed, spec.classes))
    proc = sync.start()
    sync.wait_line(proc, "STARTED")
    time.sleep(0.3)
    if proc.poll() is None:
        sync.kill(proc)
    _check_no_duplicates(_labels(cfg), annotations)

    # The run that completes: exactly one row per annotation, exact masks, nothing stray.
    sync.complete()
    rows = _labels(cfg)
    assert sorted((r["chip_id"], r["annotation_id"]) for r in rows) == sorted(annotations.items())
    for row in rows:
        want = fixed if row["chip_id"] == target else truth[row["chip_id"]]
        assert np.array_equal(_mask(row["mask_href"]), want), row["chip_id"]
    uri = cfg.table_uri(LABELS)
    version = table_version(uri)
    hrefs = {
        r["mask_href"] for v in range(version + 1) for r in read_table(uri, version=v).to_pylist()
    }  # every mask any version points at (the correction keeps its old mask for pinned runs)
    on_disk = {str(p) for p in masks_root.rglob("*.tif")}  # temp files of a kill are no label
    assert on_disk == hrefs, f"stray files: {sorted(on_disk - hrefs)}"
    assert len(hrefs) == N_CHIPS + 1

    # Re-running after all of that writes nothing (in this process: the child's code path).
    final = sync_labels(cfg, spec, client).pull
    assert (final.inserted, final.updated, final.unchanged) == (0, 0, N_CHIPS)
    assert table_version(uri) == version
