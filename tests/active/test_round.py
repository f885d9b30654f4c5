"""One active-learning round on the synthetic demo archive: select, al_rounds, push, re-run.

Label Studio is replaced by an in-memory stand-in that keeps tasks the way the server does
(the real server's push/pull are tested in tests/labeling/); what is tested here is the
round's own logic: which round runs, what the batch excludes, that rows are written before
the push, and that a round killed between the two is finished by re-running it, without a
duplicate task. Embeddings are written directly (random vectors, known margins), so no Ray
cluster is needed: the embed step finds nothing pending.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from earthloop.active.embed import result_tables
from earthloop.active.round import RoundParams, pick_task_model, project_spec, run_round
from earthloop.config import ConfigError, EarthloopConfig, load_config
from earthloop.finetune.export import ExportContext, export_rows
from earthloop.labelstudio.client import LabelStudioError
from earthloop.labelstudio.rle import rle_to_mask
from earthloop.models import build_backbone
from earthloop.models.task import TaskModel
from earthloop.store.delta import merge_rows, read_table
from earthloop.store.tables import (
    AL_ROUNDS,
    EMBEDDINGS,
    FINETUNE_TRIALS,
    LABELS,
    PREDICTIONS,
    TASK_MODELS,
)

Json = dict[str, Any]
CLASSES = {1: "water", 2: "urban", 3: "grassland"}


class FakeLabelStudio:
    """The endpoints a round calls, kept in memory; ``fail_import`` simulates a killed push."""

    url = "http://label-studio.invalid"

    def __init__(self) -> None:
        self.project: Json | None = None
        self.storages: list[Json] = []
        self.task_list: list[Json] = []
        self.fail_import = False

    def projects(self) -> Iterator[Json]:
        yield from ([self.project] if self.project else [])

    def create_project(self, title: str, label_config: str) -> Json:
        self.project = {"id": 1, "title": title, "label_config": label_config, "sampling": ""}
        return self.project

    def update_project(self, project_id: int, **fields: Any) -> Json:
        assert self.project is not None
        self.project.update(fields)
        return self.project

    def local_storages(self, project_id: int) -> list[Json]:
        return self.storages

    def create_local_storage(self, project_id: int, path: str, title: str) -> Json:
        self.storages.append({"path": path})
        return self.storages[-1]

    def tasks(self, project_id: int) -> Iterator[Json]:
        yield from self.task_list

    def import_tasks(self, project_id: int, tasks: Sequence[Json]) -> list[int]:
        if self.fail_import:
            raise LabelStudioError("POST import: Label Studio unreachable (simulated)")
        ids = []
        for t in tasks:
            self.task_list.append({"id": len(self.task_list) + 1, **t})
            ids.append(len(self.task_list))
        return ids

    def chip_ids(self) -> list[str]:
        return [str(t["data"]["chip_id"]) for t in self.task_list]


@pytest.fixture
def world(synthetic_demo: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """A config over the demo chips, a tiny exported task model, and its embeddings."""
    work = tmp_path / "work"
    # each test gets its own loop tables, next to a copy of the shared chip index
    shutil.copytree(Path(str(synthetic_demo["chips"])), work / "tables" / "chips")
    cfg = load_config(
        None,
        [
            *synthetic_demo["overrides"],
            f"workdir={work}",
            "active.batch_size=6",
            "active.strategies=[{name: entropy}]",
            "finetune.max_cloud=1.0",
        ],
    )
    loop = tmp_path / "loop"
    version = _export_model(cfg, loop)
    chips = read_table(cfg.table_uri("chips")).to_pylist()
    margins = _embed(cfg, version, [c["chip_id"] for c in chips])
    return {"cfg": cfg, "version": version, "margins": margins, "files": tmp_path / "files"}


def _export_model(cfg: EarthloopConfig, loop: Path) -> str:
    torch.manual_seed(0)
    model = TaskModel("segmentation", build_backbone("resnet_tiny", 4), 4, frozen=False)
    (loop / "ckpt").mkdir(parents=True)
    torch.save({"model": model.state_dict(), "step": 1}, loop / "ckpt" / "state.pt")
    ctx = ExportContext(
        "resnet_tiny", ["B02", "B03", "B04", "B08"], "segmentation", 4, [1, 2, 3], CLASSES,
        {"r": ([0.1] * 4, [0.05] * 4)}, cfg.table_uri("chips"), 0, "manifest", None,
        str(loop / "models"), cfg.table_uri(TASK_MODELS),
    )  # fmt: skip
    row = {
        "sweep": f"{cfg.name}-finetune", "trial_id": "t1", "cell": "c", "init": "r",
        "mode": "full", "fraction": 1.0, "seed": 0, "metric": "miou", "val_metric": 0.5,
        "best_val_metric": 0.5, "checkpoint": str(loop / "ckpt"),
    }  # fmt: skip
    [exported] = export_rows(ctx, [row])
    return exported.model_version


def _embed(cfg: EarthloopConfig, version: str, ids: list[str]) -> dict[str, float]:
    """Embeddings and predictions rows for every chip: random vectors, known entropy/margin."""
    rng = np.random.default_rng(0)
    k = len(ids)
    entropy = rng.uniform(0, 1, k)
    batch = {
        "chip_id": np.array(ids),
        "location_id": np.array(ids),  # one date per "location": no location constraint
        "season": np.zeros(k, np.int32),
        "embedding": rng.normal(size=(k, 16)).astype(np.float32),
        "grid": np.ones((k, 8), np.float32),
        "grid_shape": np.tile(np.array([2, 2, 2], np.int32), (k, 1)),
        "mean_entropy": entropy,
        "mean_margin": 1.0 - entropy,
        "class_histogram": np.tile(np.array([0.2, 0.3, 0.5]), (k, 1)),
    }
    emb, pred = result_tables(batch, version)
    merge_rows(cfg.table_uri(EMBEDDINGS), emb, EMBEDDINGS.keys)
    merge_rows(cfg.table_uri(PREDICTIONS), pred, PREDICTIONS.keys)
    return dict(zip(ids, (1.0 - entropy).tolist(), strict=True))


def _params(world: dict[str, Any]) -> RoundParams:
    return RoundParams(model_version=world["version"], files_root=str(world["files"]))


def _rounds(cfg: EarthloopConfig) -> list[Json]:
    return sorted(read_table(cfg.table_uri(AL_ROUNDS)).to_pylist(), key=lambda r: r["rank"])


def test_round_selects_writes_rows_and_pushes_preannotated_tasks(world: dict[str, Any]) -> None:
    cfg, ls = world["cfg"], FakeLabelStudio()
    rep = run_round(cfg, _params(world), ls)  # type: ignore[arg-type]
    assert (rep.round, rep.resumed, rep.selected, rep.pushed) == (1, False, 6, 6)
    rows = _rounds(cfg)
    assert [r["round"] for r in rows] == [1] * 6 and [r["rank"] for r in rows] == list(range(1, 7))
    assert {r["model_version"] for r in rows} == {world["version"]}
    assert rows[0]["embeddings_table_version"] == rep.versions["embeddings"]
    # entropy: the six highest-entropy chips = the six lowest margins of the table
    lowest = sorted(world["margins"], key=world["margins"].__getitem__)[:6]
    assert sorted(r["chip_id"] for r in rows) == sorted(lowest)
    assert sorted(ls.chip_ids()) == sorted(lowest)
    assert ls.project is not None and ls.project["model_version"] == world["version"]
    for task in ls.task_list:
        chip = task["data"]["chip_id"]
        assert task["data"]["al_round"] == 1 and task["data"]["strategy"] == "entropy"
        [pred] = task["predictions"]
        assert pred["model_version"] == world["version"]
        assert pred["score"] == pytest.approx(world["margins"][chip])  # the model's confidence
        labels = {r["value"]["brushlabels"][0] for r in pred["result"]}
        assert labels <= set(CLASSES.values()) and labels
        size = task["data"]["height"]
        covered = sum(rle_to_mask(r["value"]["rle"], size, size).sum() for r in pred["result"])
        assert covered == size * size  # the class map covers the chip


def test_next_round_excludes_queued_and_labelled_chips(world: dict[str, Any]) -> None:
    cfg, ls = world["cfg"], FakeLabelStudio()
    first = run_round(cfg, _params(world), ls)  # type: ignore[arg-type]
    round1 = {r["chip_id"] for r in _rounds(cfg)}
    # a chip that would be selected next is labelled meanwhile (another project, say)
    margins = world["margins"]
    nxt = sorted((c for c in margins if c not in round1), key=margins.__getitem__)[0]
    label = {
        "chip_id": nxt, "annotation_id": "9", "project": "p", "kind": "segmentation",
        "mask_href": None, "classes": None, "annotator": "a", "lead_time_s": 1.0,
        "al_round": 0, "updated_at": datetime.now(UTC), "row_hash": "h",
    }  # fmt: skip
    schema = LABELS.schema
    merge_rows(cfg.table_uri(LABELS), pa.Table.from_pylist([label], schema=schema), LABELS.keys)
    second = run_round(cfg, _params(world), ls)  # type: ignore[arg-type]
    assert (first.round, second.round, second.resumed, second.pushed) == (1, 2, False, 6)
    round2 = {r["chip_id"] for r in _rounds(cfg) if r["round"] == 2}
    assert len(round2) == 6 and not round2 & round1 and nxt not in round2
    assert len(ls.chip_ids()) == len(set(ls.chip_ids())) == 12


def test_a_round_killed_before_its_push_is_finished_by_rerunning(world: dict[str, Any]) -> None:
    cfg, ls = world["cfg"], FakeLabelStudio()
    ls.fail_import = True
    with pytest.raises(LabelStudioError):
        run_round(cfg, _params(world), ls)  # type: ignore[arg-type]
    written = [r["chip_id"] for r in _rounds(cfg)]
    assert len(written) == 6 and ls.task_list == []  # rows first, then the push
    ls.fail_import = False
    again = run_round(cfg, _params(world), ls)  # type: ignore[arg-type]
    assert (again.round, again.resumed, again.pushed) == (1, True, 6)
    assert sorted(ls.chip_ids()) == sorted(written)
    assert [r["chip_id"] for r in _rounds(cfg)] == written  # the same batch, not a new one
    # half a push: three tasks vanish (deleted in the UI, or never created); a re-run of the
    # round restores exactly those, and nothing twice
    ls.task_list = ls.task_list[3:]
    fixed = run_round(cfg, RoundParams(**{**_params(world).__dict__, "round": 1}), ls)  # type: ignore[arg-type]
    assert (fixed.round, fixed.pushed, fixed.already_queued) == (1, 3, 3)
    assert sorted(ls.chip_ids()) == sorted(written)


def test_default_pick_is_the_largest_fraction_then_best_score(world: dict[str, Any]) -> None:
    cfg = world["cfg"]
    picked = pick_task_model(cfg)
    assert picked["model_version"] == world["version"]
    spec = project_spec(cfg, picked, files_root=str(world["files"]))
    assert spec.classes == CLASSES and spec.kind == "segmentation"
    assert spec.title == f"earthloop {cfg.name} landcover segmentation"


def test_the_pick_prefers_the_largest_fraction_of_the_init_then_the_best_score(
    world: dict[str, Any],
) -> None:
    cfg = world["cfg"]
    ctx_rows = read_table(cfg.table_uri(TASK_MODELS)).to_pylist()
    base = ctx_rows[0]
    # task_models rows of four trials, joined to their trials for init and fraction
    cells = {"a": ("seco", 0.1, 0.4), "b": ("seco", 0.1, 0.6), "c": ("seco", 0.01, 0.9),
             "d": ("random", 0.1, 0.95)}  # fmt: skip
    models = [{**base, "model_version": f"m-{t}", "source_trial": t, "val_metric": v}
              for t, (_, _, v) in cells.items()]  # fmt: skip
    trials = [{"sweep": base["source_sweep"], "trial_id": t, "init": i, "fraction": f}
              for t, (i, f, _) in cells.items()]  # fmt: skip
    merge_rows(
        cfg.table_uri(TASK_MODELS),
        pa.Table.from_pylist(models, TASK_MODELS.schema),
        ["model_version"],
    )
    merge_rows(
        cfg.table_uri(FINETUNE_TRIALS),
        pa.Table.from_pylist(trials, FINETUNE_TRIALS.schema),
        FINETUNE_TRIALS.keys,
    )
    assert pick_task_model(cfg, init="seco")["model_version"] == "m-b"
    assert pick_task_model(cfg, init="random")["model_version"] == "m-d"
    assert pick_task_model(cfg, model_version="m-c")["model_version"] == "m-c"
    with pytest.raises(ConfigError, match="init 'moco'"):
        pick_task_model(cfg, init="moco")
