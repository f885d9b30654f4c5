"""The embed job: what a task model sees in every chip of the index, for active learning.

Selection strategies compare chips by the model's pooled embedding (diversity, kNN disagreement,
seasonal disagreement) and by its uncertainty (entropy, margin). Computing those inside a
selection would run the model over the whole index every round; instead this job runs it once
per (chip, model version) and keeps the results in two Delta tables (contracts in
:mod:`earthloop.store.tables`):

* ``embeddings``: pooled embedding and a coarse per-pixel feature grid (flattened, with its
  ``(D, g, g)`` shape) — what "the model sees";
* ``predictions``: per-chip summaries of the class probabilities over valid pixels — mean
  entropy, mean margin and the predicted-class histogram — what selection ranks by.

It is a Ray Data pipeline: read groups of the index (one decode per tile region, the stream's
:func:`~earthloop.stream.reader.read_group`) → a pool of model actors (``map_batches`` with an
``ActorPoolStrategy``; a GPU each when the cluster has GPUs, CPU otherwise) → rows MERGEd by the
driver a chunk at a time, so a killed job keeps what it committed. It is incremental: only chips
without rows for this model version in *both* tables (read at their current version) are
computed, so a re-run after new ingests embeds only the new chips, and a re-run of a finished
job writes nothing.

Run as ``earthloop embed --model-version V`` or ``jobs/embed.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from earthloop.config import ConfigError, EarthloopConfig, parse_job_args
from earthloop.errors import fail
from earthloop.inference import forward_outputs, load_task_model
from earthloop.models.normalise import normalise
from earthloop.observe.logs import setup_logging
from earthloop.observe.progress import Progress
from earthloop.observe.ray_init import connect_if_available
from earthloop.store.delta import merge_rows, read_table, table_exists
from earthloop.store.tables import EMBEDDINGS, PREDICTIONS, TASK_MODELS
from earthloop.stream.dataset import load_index
from earthloop.stream.reader import plan_groups, read_group

log = logging.getLogger("earthloop.active")

__all__ = [
    "EmbedParams",
    "EmbedReport",
    "chip_summaries",
    "done_chip_ids",
    "main",
    "pending_rows",
    "resolve_model",
    "run_embed",
]


@dataclass
class EmbedParams:
    """The job's knobs (flags of ``earthloop embed``; a config section later)."""

    model_version: str
    grid_size: int = 8  # the coarse grid is grid_size x grid_size cells per chip
    batch_size: int = 32  # chips per model call
    chunk_rows: int = 512  # chips per Delta commit: what a killed job loses at most
    actors: int = 2  # most model actors (GPU: at most one per GPU)
    actor_cpus: float = 1.0
    read_cpus: float = 0.5
    use_gpu: bool | None = None  # None: when the cluster has a GPU
    max_cloud: float = 1.0
    split: str | None = None  # None: every chip of the index
    group_px: int = 1024  # read-group block (Earth Search COG tiles are 1024 px)
    cachemax_mb: int = 64
    limit: int | None = None  # at most this many pending chips (tests, trial runs)


@dataclass
class EmbedReport:
    model_version: str
    chips_table_version: int
    chips: int  # chips of the index that pass the filters
    already_done: int
    pending: int
    written: int
    embeddings_version: int
    predictions_version: int
    seconds: float

    @property
    def unreadable(self) -> int:
        """Pending chips with no row written (read errors); a re-run retries them."""
        return self.pending - self.written


# --------------------------------------------------------------------------------------------
# Pure parts: summaries and the incremental anti-join
# --------------------------------------------------------------------------------------------


def _entropy(p: np.ndarray, axis: int) -> np.ndarray:
    return np.asarray(-(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=axis))


def _margin(p: np.ndarray, axis: int) -> np.ndarray:
    """Top-1 minus top-2 probability; 1 when there is only one class."""
    if p.shape[axis] < 2:
        return np.ones(np.delete(p.shape, axis), dtype=p.dtype)
    top = -np.sort(-p, axis=axis)
    return np.asarray(np.take(top, 0, axis=axis) - np.take(top, 1, axis=axis))


def _masked_mean(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-chip mean over valid pixels; NaN for a chip with none (nothing to be uncertain about)."""
    n = valid.reshape(len(valid), -1).sum(axis=1)
    s = np.where(valid, values, 0.0).reshape(len(valid), -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def chip_summaries(
    task: str, probs: np.ndarray, valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-chip ``(mean entropy, mean margin, predicted-class histogram)`` of probabilities.

    Segmentation: ``probs`` ``(B, K, H, W)`` over the scored classes; entropy (nats) and margin
    (top-1 minus top-2) are averaged over valid pixels (clouds are no evidence of uncertainty)
    and the histogram holds each class's fraction of valid pixels. Classification ``(B, K)``:
    the chip's own entropy and margin, the histogram one-hot on the predicted class.
    Multi-label ``(B, K)`` sigmoids: mean binary entropy over labels, margin ``|2p - 1|``
    averaged over labels (low = near the decision boundary, as for the softmax margin), the
    histogram 1 for each label predicted present.
    """
    p = probs.astype(np.float64)
    b, k = p.shape[:2]
    if task == "segmentation":
        v = np.ones((b, *p.shape[2:]), dtype=bool) if valid is None else valid.astype(bool)
        entropy = _masked_mean(_entropy(p, 1), v)
        margin = _masked_mean(_margin(p, 1), v)
        pred = p.argmax(axis=1)
        n = np.maximum(v.reshape(b, -1).sum(axis=1), 1)[:, None]
        hist = np.stack([((pred == c) & v).reshape(b, -1).sum(axis=1) for c in range(k)], 1) / n
        return entropy, margin, hist
    if task == "multilabel":
        q = np.stack([p, 1.0 - p], axis=1)
        return _entropy(q, 1).mean(axis=1), np.abs(2 * p - 1).mean(axis=1), (p > 0.5) * 1.0
    hist = np.zeros_like(p)
    hist[np.arange(b), p.argmax(axis=1)] = 1.0
    return _entropy(p, 1), _margin(p, 1), hist


def _ids_for(uri: str, model_version: str) -> set[str]:
    if not table_exists(uri):
        return set()
    t = read_table(uri, columns=["chip_id", "model_version"])
    t = t.filter(pc.equal(t["model_version"], model_version))
    return set(t["chip_id"].to_pylist())


def done_chip_ids(cfg: EarthloopConfig, model_version: str) -> set[str]:
    """Chips with rows for ``model_version`` in both tables (current versions).

    Both, because the two MERGEs of a chunk are two commits: a job killed between them left
    an embedding without its prediction, and that chip must be computed again.
    """
    emb = _ids_for(cfg.table_uri(EMBEDDINGS), model_version)
    return emb & _ids_for(cfg.table_uri(PREDICTIONS), model_version)


def pending_rows(rows: Iterable[dict[str, Any]], done: set[str]) -> list[dict[str, Any]]:
    """Index rows whose chip has no result yet for the model version (the anti-join)."""
    return [r for r in rows if r["chip_id"] not in done]


def resolve_model(cfg: EarthloopConfig, model_version: str) -> dict[str, Any]:
    """The ``task_models`` row of ``model_version``; a ConfigError names the known ones."""
    uri = cfg.table_uri(TASK_MODELS)
    rows = read_table(uri).to_pylist() if table_exists(uri) else []
    for r in rows:
        if r["model_version"] == model_version:
            return dict(r)
    known = sorted(r["model_version"] for r in rows)[-10:]
    raise ConfigError(
        f"no task model {model_version!r} in {uri} (export one with a sweep; known: {known})"
    )


# --------------------------------------------------------------------------------------------
# Ray Data stages
# --------------------------------------------------------------------------------------------


class _ReadGroups:
    """``flat_map`` callable: one read group in, its readable chips out (errors counted)."""

    def __init__(self, bands: Sequence[str], cachemax_mb: int) -> None:
        self.bands = list(bands)
        self.cachemax_mb = cachemax_mb

    def __call__(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        rows = json.loads(item["group"])
        out = list(read_group(rows, self.bands, cachemax_mb=self.cachemax_mb))
        bad = [r for r in out if r["error"]]
        if bad:
            log.warning("%d of %d chips unreadable: %s", len(bad), len(out), bad[0]["error"])
        keep = ("chip_id", "location_id", "season", "image", "valid")
        return [{k: r[k] for k in keep} for r in out if not r["error"]]


def _stack(column: Any) -> np.ndarray:
    """Ray hands variable-shaped columns as object arrays of arrays: stack them."""
    arr = np.asarray(column)
    return np.stack(list(arr)) if arr.dtype == object else arr


class EmbedActor:
    """A model actor: loads the task model once, then embeds and summarises batches."""

    def __init__(self, model_uri: str, grid_size: int, use_gpu: bool, threads: int) -> None:
        torch.set_num_threads(max(1, threads))
        self.model, self.meta = load_task_model(model_uri)
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.grid_size = grid_size

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        images = torch.from_numpy(_stack(batch["image"]).astype(np.float32))
        valid = _stack(batch["valid"]).astype(bool)
        x = normalise(images, self.meta["mean"], self.meta["std"], torch.from_numpy(valid))
        out = forward_outputs(
            self.model, x.to(self.device), self.meta["class_ids"], grid_size=self.grid_size
        )
        entropy, margin, hist = chip_summaries(self.model.task, out.probs, valid)
        b = len(images)
        return {
            "chip_id": np.asarray(batch["chip_id"]),
            "location_id": np.asarray(batch["location_id"]),
            "season": np.asarray(batch["season"], dtype=np.int32),
            "embedding": out.embedding.astype(np.float32),
            "grid": out.grid.reshape(b, -1).astype(np.float32),
            "grid_shape": np.tile(np.asarray(out.grid.shape[1:], np.int32), (b, 1)),
            "mean_entropy": entropy,
            "mean_margin": margin,
            "class_histogram": hist,
        }


def _list_column(values: Any, item: pa.DataType) -> pa.Array:
    arr = _stack(values)
    arr = arr.reshape(len(arr), -1)
    offsets = np.arange(0, arr.size + 1, max(arr.shape[1], 1), dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(arr.ravel(), type=item))


def result_tables(batch: dict[str, Any], model_version: str) -> tuple[pa.Table, pa.Table]:
    """One batch of actor output as ``embeddings`` and ``predictions`` rows (their schemas)."""
    n = len(batch["chip_id"])
    ids = pa.array([str(c) for c in batch["chip_id"]], pa.string())
    version = pa.array([model_version] * n, pa.string())
    now = pa.array([datetime.now(UTC)] * n, EMBEDDINGS.schema.field("created_at").type)
    emb = pa.Table.from_arrays(
        [
            ids,
            version,
            pa.array([str(x) for x in batch["location_id"]], pa.string()),
            pa.array(np.asarray(batch["season"], np.int32)),
            _list_column(batch["embedding"], pa.float32()),
            _list_column(batch["grid"], pa.float32()),
            _list_column(batch["grid_shape"], pa.int32()),
            now,
        ],
        schema=EMBEDDINGS.schema,
    )
    pred = pa.Table.from_arrays(
        [
            ids,
            version,
            pa.array(np.asarray(batch["mean_entropy"], np.float64)),
            pa.array(np.asarray(batch["mean_margin"], np.float64)),
            _list_column(batch["class_histogram"], pa.float64()),
            pa.nulls(n, pa.string()),
            now,
        ],
        schema=PREDICTIONS.schema,
    )
    return emb, pred


# --------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------


def _pool(params: EmbedParams) -> tuple[Any, dict[str, float], bool]:
    """The actor pool and each actor's resources: a GPU each when the cluster has GPUs."""
    import ray  # heavy: only the job itself needs Ray
    from ray.data import ActorPoolStrategy

    gpus = float(ray.cluster_resources().get("GPU", 0.0))
    use_gpu = gpus >= 1 if params.use_gpu is None else params.use_gpu
    size = min(params.actors, int(gpus)) if use_gpu else params.actors
    resources = {"num_cpus": params.actor_cpus, "num_gpus": 1.0 if use_gpu else 0.0}
    return ActorPoolStrategy(min_size=1, max_size=max(1, size)), resources, use_gpu


def _dataset(rows: list[dict[str, Any]], model: dict[str, Any], params: EmbedParams) -> Any:
    """Read groups of ``rows`` → chips → model actors (lazy: runs as the driver consumes it)."""
    import ray.data  # heavy: only the job itself needs Ray

    groups = plan_groups(rows, params.group_px)
    items = [{"group": json.dumps(g)} for g in groups]
    compute, resources, use_gpu = _pool(params)
    log.info(
        "embed %s: %d chips in %d read groups, %s actors (%s)",
        model["model_version"],
        len(rows),
        len(groups),
        compute.max_size,
        "GPU" if use_gpu else "CPU",
    )
    ds: Any = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 512)))
    ds = ds.flat_map(_ReadGroups(model["bands"], params.cachemax_mb), num_cpus=params.read_cpus)
    return ds.map_batches(
        EmbedActor,
        fn_constructor_kwargs={
            "model_uri": model["path"],
            "grid_size": params.grid_size,
            "use_gpu": use_gpu,
            "threads": int(params.actor_cpus),
        },
        batch_size=params.batch_size,
        batch_format="numpy",
        compute=compute,
        **resources,
    )


def _index(
    cfg: EarthloopConfig, params: EmbedParams, bands: Sequence[str]
) -> tuple[list[dict[str, Any]], int]:
    """The chip index at its current version, filtered; its bands checked against the model's."""
    rows, ref = load_index(cfg.table_uri("chips"), split=params.split, max_cloud=params.max_cloud)
    if rows:
        missing = [b for b in bands if b not in rows[0]["bands"]]
        if missing:
            raise ConfigError(f"the model needs bands {missing} that the chip index lacks")
    return rows, ref.version


def run_embed(cfg: EarthloopConfig, params: EmbedParams) -> EmbedReport:
    """Embed and summarise every chip without results for the model version; MERGE them.

    Needs a connected Ray cluster (``ray.init``) unless nothing is pending.
    """
    t0 = time.perf_counter()
    model = resolve_model(cfg, params.model_version)
    rows, chips_version = _index(cfg, params, model["bands"])
    done = done_chip_ids(cfg, params.model_version)
    todo = pending_rows(rows, done)[: params.limit]
    emb_uri, pred_uri = cfg.table_uri(EMBEDDINGS), cfg.table_uri(PREDICTIONS)
    written, versions = 0, {"emb": -1, "pred": -1}
    if todo:
        ds = _dataset(todo, model, params)
        with Progress("embed", len(todo), unit="chips", every_s=30.0, logger=log) as progress:
            for batch in ds.iter_batches(batch_size=params.chunk_rows, batch_format="numpy"):
                emb, pred = result_tables(batch, params.model_version)
                versions["emb"] = merge_rows(emb_uri, emb, EMBEDDINGS.keys)["version"]
                versions["pred"] = merge_rows(pred_uri, pred, PREDICTIONS.keys)["version"]
                written += emb.num_rows
                progress.update(emb.num_rows)
    report = EmbedReport(
        params.model_version,
        chips_version,
        len(rows),
        len(rows) - len(pending_rows(rows, done)),
        len(todo),
        written,
        versions["emb"],
        versions["pred"],
        time.perf_counter() - t0,
    )
    log.info("embed done: %s", json.dumps(asdict(report)))
    return report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, prog="earthloop embed")
    d = EmbedParams(model_version="")
    p.add_argument("--model-version", required=True, help="a model_version of task_models")
    p.add_argument("--grid-size", type=int, default=d.grid_size)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--chunk-rows", type=int, default=d.chunk_rows, help="chips per commit")
    p.add_argument("--actors", type=int, default=d.actors, help="most model actors")
    p.add_argument("--actor-cpus", type=float, default=d.actor_cpus)
    p.add_argument("--read-cpus", type=float, default=d.read_cpus)
    p.add_argument("--gpu", dest="use_gpu", action="store_true", default=None)
    p.add_argument("--cpu", dest="use_gpu", action="store_false")
    p.add_argument("--max-cloud", type=float, default=d.max_cloud)
    p.add_argument("--split", default=None, help="train/val/test; default every chip")
    p.add_argument("--limit", type=int, default=None, help="at most this many pending chips")
    return p


def main(argv: list[str] | None = None) -> int:
    """``earthloop embed --model-version V [flags] [--config FILE] [section.key=value ...]``."""
    cfg, ns = parse_job_args(
        argv, "Embed and summarise chips with a task model (Ray Data).", _parser()
    )
    setup_logging()
    params = EmbedParams(**vars(ns))
    try:
        resolve_model(cfg, params.model_version)  # a wrong version fails before Ray starts
        if not connect_if_available(cfg.ray.address):
            return fail(
                "earthloop embed",
                f"no Ray cluster at {os.environ.get('RAY_ADDRESS') or cfg.ray.address}",
            )
        rep = run_embed(cfg, params)
    except ConfigError as exc:
        return fail("earthloop embed", exc)
    print(f"model:       {rep.model_version}")
    print(f"chips:       {rep.chips} (index v{rep.chips_table_version}), {rep.already_done} done")
    print(f"written:     {rep.written} of {rep.pending} pending ({rep.unreadable} unreadable)")
    print(f"tables:      {cfg.table_uri(EMBEDDINGS)} v{rep.embeddings_version}, ")
    print(f"             {cfg.table_uri(PREDICTIONS)} v{rep.predictions_version}")
    print(f"time:        {rep.seconds:.1f}s")
    return 1 if rep.unreadable else 0
