"""One active-learning round: embed (if needed) → select → ``al_rounds`` rows → Label Studio.

Why one function for the whole round: the demo, the webhook service and a user at a shell must
run exactly the same steps in the same order, and the order is what makes a round safe to kill
and re-run. The batch is written to ``al_rounds`` (MERGE on ``(round, chip_id)``) *before* it is
pushed, so a round killed after the MERGE is finished by re-running it: the latest round whose
chips are not all in the Label Studio project is pushed again, and push skips every chip the
project already holds (keyed on chip id, never on Label Studio's task ids). A round therefore
never creates a second task for a chip and never loses one it selected.

The pool is built from the Delta tables read once, at pinned versions (the versions are in the
report, and the embeddings version in every ``al_rounds`` row): chips of the index that pass the
cloud filter and have embeddings for the task model; chips already in ``al_rounds`` or
``labels`` are references for kNN/coverage but never selected again.

The pre-annotation of a chip is the task model's class map (:func:`earthloop.inference.predict`
on the chip's pixels, normalised as the model was trained). Its score is the model's
*confidence* on that chip, the mean top-1 minus top-2 probability (``predictions.mean_margin``
of the embed job): Label Studio's uncertainty sampling serves the lowest score first, so the
annotator's "next task" is the chip the model is least sure about.

Run as ``earthloop active-round`` or ``jobs/active_learning.py`` (a Ray job: embedding new chips
needs the cluster; selecting and pushing do not).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import posixpath
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from earthloop.active.embed import (
    EmbedParams,
    done_chip_ids,
    pending_rows,
    resolve_model,
    run_embed,
)
from earthloop.active.pool import Pool, pool_from_tables
from earthloop.active.select import select_batch, to_al_rounds
from earthloop.config import ConfigError, EarthloopConfig, parse_job_args, project_root
from earthloop.errors import fail
from earthloop.inference import load_task_model, predict_raw
from earthloop.labelstudio.client import Connection, LabelStudio, LabelStudioError
from earthloop.labelstudio.configs import CLASSIFICATION, SEGMENTATION
from earthloop.labelstudio.project import ProjectSpec, open_project
from earthloop.labelstudio.push import Prediction, PushReport, Selected, push_chips, queued_chips
from earthloop.observe.logs import setup_logging
from earthloop.observe.ray_init import connect_if_available
from earthloop.observe.recorders import LabelMetrics
from earthloop.store.delta import merge_rows, read_table, table_exists, table_version
from earthloop.store.fs import read_bytes
from earthloop.store.tables import (
    AL_ROUNDS,
    CHIPS,
    EMBEDDINGS,
    FINETUNE_TRIALS,
    LABELS,
    PREDICTIONS,
    TASK_MODELS,
)
from earthloop.stream.dataset import load_index
from earthloop.stream.reader import plan_groups, read_group

log = logging.getLogger("earthloop.active")

__all__ = [
    "RoundParams",
    "RoundReport",
    "main",
    "pick_task_model",
    "project_spec",
    "run_round",
]

Row = dict[str, Any]


@dataclass
class RoundParams:
    """The round's knobs (flags of ``earthloop active-round``); selection itself is ``cfg.active``."""

    model_version: str | None = None  # None: the pick of :func:`pick_task_model`
    init: str | None = None  # restrict the pick to task models of this initialisation
    project: str | None = None  # Label Studio project title; default from the config
    round: int | None = None  # re-run (push) this round instead of the next one
    files_root: str | None = None  # Label Studio's local-files root; default LS_FILES_ROOT
    max_cloud: float | None = None  # pool filter; default finetune.max_cloud
    embed_actors: int = 2


@dataclass
class RoundReport:
    round: int
    model_version: str
    project_id: int
    resumed: bool  # True: the round's rows existed; only missing tasks were pushed
    strategy: str = ""
    selected: int = 0
    pushed: int = 0
    already_queued: int = 0
    no_preview: int = 0
    embedded: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)  # tables read (pinned) and written
    seconds: dict[str, float] = field(default_factory=dict)  # wall time by stage


# --------------------------------------------------------------------------------------------
# The model and the project
# --------------------------------------------------------------------------------------------


def _sweep_name(cfg: EarthloopConfig) -> str:
    return cfg.finetune.name or f"{cfg.name}-finetune"


def pick_task_model(
    cfg: EarthloopConfig, model_version: str | None = None, init: str | None = None
) -> Row:
    """The ``task_models`` row a round uses.

    An explicit ``model_version`` wins. Otherwise, among the task models of ``finetune.task``
    exported by the configured sweep (and of initialisation ``init`` when given): the largest
    label fraction, then the best validation score, then the newest. The largest fraction is
    preferred over the best score because the short demo sweep's validation scores are noisy,
    and the model trained on the most labels is the one a user would deploy.

    Raises:
        ConfigError: no such model (the message names what exists).
    """
    if model_version:
        return resolve_model(cfg, model_version)
    uri = cfg.table_uri(TASK_MODELS)
    models = read_table(uri).to_pylist() if table_exists(uri) else []
    sweep = _sweep_name(cfg)
    models = [m for m in models if m["task"] == cfg.finetune.task and m["source_sweep"] == sweep]
    trials_uri = cfg.table_uri(FINETUNE_TRIALS)
    trials = {
        (t["sweep"], t["trial_id"]): t
        for t in (read_table(trials_uri).to_pylist() if table_exists(trials_uri) else [])
    }
    for m in models:
        t = trials.get((m["source_sweep"], m["source_trial"]), {})
        m["init"], m["fraction"] = t.get("init"), float(t.get("fraction") or 0.0)
    if init:
        models = [m for m in models if m["init"] == init]
    if not models:
        raise ConfigError(
            f"no {cfg.finetune.task} task model of sweep {sweep!r}"
            + (f" with init {init!r}" if init else "")
            + f" in {uri}: run the fine-tuning sweep first, or pass --model-version"
        )

    def rank(m: Row) -> tuple[float, float, float]:
        val = m["val_metric"] if m["val_metric"] is not None else -math.inf
        return (m["fraction"], float(val), m["created_at"].timestamp())

    return max(models, key=rank)


def _model_meta(model: Row) -> dict[str, Any]:
    """The exported file's metadata (classes, class ids, normalisation) from its ``meta.json``;
    the model file itself when the side file is missing."""
    try:
        meta: dict[str, Any] = json.loads(
            read_bytes(posixpath.join(posixpath.dirname(model["path"]), "meta.json"))
        )
        return meta
    except (FileNotFoundError, OSError, ValueError):
        return load_task_model(model["path"])[1]


def default_files_root() -> Path:
    """Label Studio's local-files document root, as ``infra/local/env.sh`` exports it."""
    return Path(os.environ.get("LS_FILES_ROOT") or project_root() / "runs")


def project_spec(
    cfg: EarthloopConfig, model: Row, *, title: str | None = None, files_root: str | None = None
) -> ProjectSpec:
    """The labeling project of a task model: its class set, kind and (stable) title.

    The title depends on the config and the label kind, never on the model version: every
    round of the loop queues into the same project, whatever model selected the chips.

    Raises:
        ConfigError: a multi-label model (no label config for it yet).
    """
    meta = _model_meta(model)
    task = str(meta["task"])
    if task not in (SEGMENTATION, CLASSIFICATION):
        raise ConfigError(f"task {task!r}: the labeling loop handles segmentation and scenes only")
    classes = {int(c): str(n) for c, n in zip(meta["class_ids"], meta["classes"], strict=True)}
    root = Path(files_root) if files_root else default_files_root()
    name = title or f"earthloop {cfg.name} {cfg.finetune.kind} {task}"
    return ProjectSpec(name, task, classes, root)


# --------------------------------------------------------------------------------------------
# Tables at pinned versions
# --------------------------------------------------------------------------------------------


def _read_pinned(uri: str, versions: dict[str, int], name: str) -> pa.Table | None:
    """The table at its current version, recorded in ``versions``; None when it does not exist."""
    if not table_exists(uri):
        return None
    versions[name] = table_version(uri)
    return read_table(uri, versions[name])


def _rounds(cfg: EarthloopConfig, versions: dict[str, int]) -> list[Row]:
    table = _read_pinned(cfg.table_uri(AL_ROUNDS), versions, "al_rounds")
    return [] if table is None else table.to_pylist()


def _label_vectors(labels: pa.Table | None, class_ids: Sequence[int]) -> dict[str, np.ndarray]:
    """Chip id → class fractions of its labels (the pull's ``class_histogram``, by class id),
    averaged over annotations: what kNN disagreement compares for segmentation masks."""
    if labels is None or "class_histogram" not in labels.column_names:
        return {}
    sums: dict[str, np.ndarray] = {}
    for chip, hist in zip(
        labels.column("chip_id").to_pylist(),
        labels.column("class_histogram").to_pylist(),
        strict=True,
    ):
        if not hist:
            continue
        h = np.asarray([hist[c] if c < len(hist) else 0.0 for c in class_ids], dtype=np.float64)
        if h.sum() > 0:
            sums[chip] = sums.get(chip, np.zeros_like(h)) + h / h.sum()
    return {c: v / v.sum() for c, v in sums.items()}


def build_pool(
    cfg: EarthloopConfig, model: Row, index_ids: Sequence[str], versions: dict[str, int]
) -> Pool:
    """The selection pool for ``model``: indexed chips with embeddings, at pinned versions.

    Raises:
        ConfigError: no embeddings for the model (the embed step did not run).
    """
    mv = model["model_version"]
    emb = _read_pinned(cfg.table_uri(EMBEDDINGS), versions, "embeddings")
    if emb is None:
        raise ConfigError(f"no embeddings table: run `earthloop embed --model-version {mv}`")
    ids = pa.array(list(index_ids), pa.string())
    emb = emb.filter(pc.and_(pc.equal(emb["model_version"], mv), pc.is_in(emb["chip_id"], ids)))
    if emb.num_rows == 0:
        raise ConfigError(f"no embeddings of model {mv} for the indexed chips: run the embed job")
    chips = _read_pinned(cfg.table_uri(CHIPS), versions, "chips")
    preds = _read_pinned(cfg.table_uri(PREDICTIONS), versions, "predictions")
    labels = _read_pinned(cfg.table_uri(LABELS), versions, "labels")
    queued = _read_pinned(cfg.table_uri(AL_ROUNDS), versions, "al_rounds")
    meta = _model_meta(model)
    return pool_from_tables(
        emb,
        chips=chips,
        predictions=preds,
        labels=labels,
        al_rounds=queued,
        model_version=mv,
        label_vectors=_label_vectors(labels, [int(c) for c in meta["class_ids"]]) or None,
    )


# --------------------------------------------------------------------------------------------
# Pre-annotations
# --------------------------------------------------------------------------------------------


def _confidences(
    cfg: EarthloopConfig, model_version: str, chip_ids: Sequence[str]
) -> dict[str, float]:
    """Chip id → the model's confidence (mean margin) from the embed job's ``predictions``."""
    uri = cfg.table_uri(PREDICTIONS)
    if not table_exists(uri):
        return {}
    t = read_table(uri, columns=["chip_id", "model_version", "mean_margin"])
    t = t.filter(
        pc.and_(
            pc.equal(t["model_version"], model_version),
            pc.is_in(t["chip_id"], pa.array(list(chip_ids), pa.string())),
        )
    )
    return dict(zip(t["chip_id"].to_pylist(), t["mean_margin"].to_pylist(), strict=True))


def predictions_for(
    cfg: EarthloopConfig, model: Row, spec: ProjectSpec, rows: Sequence[Row]
) -> dict[str, Prediction]:
    """The task model's pre-annotation of each chip of ``rows`` (unreadable chips: none).

    Segmentation: the class map of :func:`~earthloop.inference.predict`; scenes: the predicted
    class. The score is the chip's confidence in [0, 1]; a chip with no valid pixel (NaN
    margin) gets 0.5, neither first nor last in the annotator's queue.
    """
    if not rows:
        return {}
    net, meta = load_task_model(model["path"])
    bands, class_ids = list(meta["bands"]), [int(c) for c in meta["class_ids"]]
    conf = _confidences(cfg, model["model_version"], [r["chip_id"] for r in rows])
    out: dict[str, Prediction] = {}
    for group in plan_groups([dict(r) for r in rows]):
        read = [r for r in read_group(group, bands) if not r["error"]]
        if not read:
            continue
        images = np.stack([r["image"] for r in read]).astype(np.float32)
        valid = np.stack([r["valid"] for r in read])
        maps = predict_raw(net, images, valid, meta["mean"], meta["std"], class_ids)
        for r, m in zip(read, maps, strict=True):
            score = conf.get(r["chip_id"])
            score = 0.5 if score is None or not math.isfinite(score) else float(score)
            score = min(max(score, 0.0), 1.0)
            version = model["model_version"]
            if spec.kind == SEGMENTATION:
                out[r["chip_id"]] = Prediction(version, score, mask=np.asarray(m, np.uint8))
            else:
                out[r["chip_id"]] = Prediction(version, score, classes=(spec.classes[int(m)],))
    return out


# --------------------------------------------------------------------------------------------
# The round
# --------------------------------------------------------------------------------------------


def _index_rows(cfg: EarthloopConfig, params: RoundParams, versions: dict[str, int]) -> list[Row]:
    """The chip index at its current version, filtered like the fine-tuning pool (clouds)."""
    max_cloud = cfg.finetune.max_cloud if params.max_cloud is None else params.max_cloud
    rows, ref = load_index(cfg.table_uri(CHIPS), max_cloud=max_cloud)
    versions["chips"] = ref.version
    return rows


def ensure_embedded(
    cfg: EarthloopConfig, model: Row, rows: Sequence[Row], params: RoundParams
) -> int:
    """Embed the indexed chips that have no rows for the model yet; returns how many were new.

    Raises:
        ConfigError: chips need embedding and no Ray cluster is connected (the embed job is a
            Ray Data pipeline; starting a private local Ray here would hide a missing cluster).
    """
    mv = model["model_version"]
    todo = pending_rows(rows, done_chip_ids(cfg, mv))
    if not todo:
        return 0
    import ray  # heavy: only needed when there is something to embed

    if not ray.is_initialized():
        raise ConfigError(f"{len(todo)} chip(s) have no embeddings for {mv} and no Ray cluster")
    max_cloud = cfg.finetune.max_cloud if params.max_cloud is None else params.max_cloud
    embed = EmbedParams(model_version=mv, max_cloud=max_cloud, actors=params.embed_actors)
    return run_embed(cfg, embed).written


def _push(
    cfg: EarthloopConfig,
    client: LabelStudio,
    spec: ProjectSpec,
    model: Row,
    picks: Sequence[Row],
    chips: Mapping[str, Row],
) -> PushReport:
    """Push ``picks`` (``al_rounds`` rows, rank order) that the project does not hold yet."""
    pid = open_project(client, spec)
    have = queued_chips(client, pid)
    todo = [p for p in picks if p["chip_id"] not in have]
    preds = predictions_for(cfg, model, spec, [chips[p["chip_id"]] for p in todo])
    selected = [Selected(p["chip_id"], p["strategy"], p["score"], p["round"]) for p in picks]
    return push_chips(client, spec, selected, chips, preds)


def _select(
    cfg: EarthloopConfig, model: Row, rows: Sequence[Row], round_: int, rep: RoundReport
) -> list[Row]:
    """Select the round's batch and MERGE it into ``al_rounds``; returns its rows."""
    pool = build_pool(cfg, model, [r["chip_id"] for r in rows], rep.versions)
    sel = select_batch(pool, cfg.active, round_=round_)
    rep.strategy, rep.refused = sel.strategy, dict(sel.rejected)
    table = to_al_rounds(
        sel,
        round_=round_,
        model_version=model["model_version"],
        embeddings_table_version=rep.versions.get("embeddings"),
    )
    if table.num_rows:
        stats = merge_rows(cfg.table_uri(AL_ROUNDS), table, AL_ROUNDS.keys)
        rep.versions["al_rounds_written"] = int(stats["version"])
    return list(table.to_pylist())


def _round_to_run(
    client: LabelStudio, spec: ProjectSpec, rounds: Sequence[Row], wanted: int | None
) -> tuple[int, list[Row]]:
    """Which round this run is, and its existing rows (empty: select a new batch).

    An explicit round with rows is re-pushed; otherwise the latest round is re-pushed when some
    of its chips are not in the project (a round killed between its MERGE and its push), and a
    new round (latest + 1) is selected when it is complete.
    """
    by_round: dict[int, list[Row]] = {}
    for r in rounds:
        by_round.setdefault(int(r["round"]), []).append(r)
    if wanted is not None:
        return wanted, sorted(by_round.get(wanted, []), key=lambda r: r["rank"])
    if not by_round:
        return 1, []
    last = max(by_round)
    have = queued_chips(client, open_project(client, spec))
    missing = [r for r in by_round[last] if r["chip_id"] not in have]
    if missing:
        return last, sorted(by_round[last], key=lambda r: r["rank"])
    return last + 1, []


def run_round(
    cfg: EarthloopConfig, params: RoundParams, client: LabelStudio | None = None
) -> RoundReport:
    """Run (or finish) one round; see the module docstring for the order and why.

    Raises:
        ConfigError: no task model, no embeddings and no cluster to compute them.
        LabelStudioError: Label Studio unreachable or refusing.
    """
    client = client or LabelStudio(Connection.from_env())
    t0 = time.perf_counter()
    model = pick_task_model(cfg, params.model_version, params.init)
    spec = project_spec(cfg, model, title=params.project, files_root=params.files_root)
    versions: dict[str, int] = {}
    round_, existing = _round_to_run(client, spec, _rounds(cfg, versions), params.round)
    rep = RoundReport(round_, model["model_version"], open_project(client, spec), bool(existing))
    rep.versions = versions
    rows = _index_rows(cfg, params, versions)
    chips = {r["chip_id"]: r for r in rows}
    rep.seconds["plan"] = time.perf_counter() - t0
    picks = existing
    if not existing:
        t = time.perf_counter()
        rep.embedded = ensure_embedded(cfg, model, rows, params)
        rep.seconds["embed"] = time.perf_counter() - t
        t = time.perf_counter()
        picks = _select(cfg, model, rows, round_, rep)
        rep.seconds["select"] = time.perf_counter() - t
    else:
        rep.strategy = str(existing[0]["strategy"])
        if not params.model_version and existing[0]["model_version"] != model["model_version"]:
            # the pre-annotations of a round come from the model that selected it
            model = resolve_model(cfg, str(existing[0]["model_version"]))
            rep.model_version = model["model_version"]
        missing = [p["chip_id"] for p in existing if p["chip_id"] not in chips]
        for c in missing:  # a chip dropped from the index since: its row is kept, not pushed
            log.warning("round %d: chip %s is no longer in the chip index", round_, c)
        picks = [p for p in existing if p["chip_id"] in chips]
    rep.selected = len(picks)
    t = time.perf_counter()
    pushed = _push(cfg, client, spec, model, picks, chips)
    rep.seconds["push"] = time.perf_counter() - t
    rep.pushed, rep.already_queued = pushed.created, pushed.already_queued
    rep.no_preview = len(pushed.no_preview)
    if existing and params.round is None and pushed.created == 0 and pushed.no_preview:
        # The round's only missing chips cannot be previewed: re-pushing it would never
        # finish, so it counts as done and the next round is selected.
        log.warning("round %d: %d chip(s) have no preview; next round", round_, rep.no_preview)
        return run_round(cfg, RoundParams(**{**asdict(params), "round": round_ + 1}), client)
    metrics = LabelMetrics("label")
    # "hybrid(entropy)" → "hybrid": a metric label is a bounded identifier
    metrics.tasks_pushed(rep.pushed, method=rep.strategy.split("(")[0] or "other")
    log.info("round %d done: %s", round_, json.dumps(asdict(rep), default=str))
    return rep


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, prog="earthloop active-round")
    p.add_argument("--model-version", default=None, help="task model (default: see --init)")
    p.add_argument("--init", default=None, help="pick among task models of this init")
    p.add_argument("--project", default=None, help="Label Studio project title")
    p.add_argument("--round", type=int, default=None, help="re-push this round's rows")
    p.add_argument("--files-root", default=None, help="Label Studio local-files root")
    p.add_argument("--max-cloud", type=float, default=None, help="pool cloud filter")
    p.add_argument("--embed-actors", type=int, default=2)
    return p


def _print(rep: RoundReport, url: str) -> None:
    state = "re-pushed (rows existed)" if rep.resumed else "selected"
    print(f"round:       {rep.round} ({state}), strategy {rep.strategy}")
    print(f"model:       {rep.model_version}")
    print(f"chips:       {rep.selected} in the batch, {rep.embedded} newly embedded")
    print(
        f"pushed:      {rep.pushed} task(s), {rep.already_queued} already queued, "
        f"{rep.no_preview} without preview"
    )
    print(f"tables:      {json.dumps(rep.versions)}")
    print(f"time:        {json.dumps({k: round(v, 1) for k, v in rep.seconds.items()})}")
    print(f"Label Studio: {url}/projects/{rep.project_id}/data")


def main(argv: list[str] | None = None) -> int:
    """``earthloop active-round [flags] [--config FILE] [section.key=value ...]``."""
    cfg, ns = parse_job_args(argv, "One active-learning round: embed, select, push.", _parser())
    setup_logging()
    params = RoundParams(**vars(ns))
    try:
        client = LabelStudio(Connection.from_env())
        pick_task_model(cfg, params.model_version, params.init)  # fail before Ray starts
        connect_if_available(cfg.ray.address)  # only embedding new chips needs it
        rep = run_round(cfg, params, client)
    except (ConfigError, LabelStudioError) as exc:
        return fail("earthloop active-round", exc)
    _print(rep, client.url)
    return 0
