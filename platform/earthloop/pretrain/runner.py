"""Driver of a pretraining run: validate, prepare data, launch Ray Train, export, record.

Everything that can be wrong with the request (unknown band, batch smaller than the number of
workers, no chip table, too few dates per location) is found here, before a single worker is
scheduled.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from earthloop.config import ConfigError, EarthloopConfig, PretrainConfig, resolve_path
from earthloop.models import save_backbone
from earthloop.pretrain.data import band_statistics, build_probe
from earthloop.pretrain.engine import load_state
from earthloop.pretrain.loop import WorkerSetup, train_loop
from earthloop.pretrain.methods import LabelledSubset, Method, build_method, method_class
from earthloop.s2.bands import resolve_bands
from earthloop.store.delta import TableRef, merge_rows, read_table, table_exists
from earthloop.store.fs import as_uri, local_staging, ray_storage
from earthloop.store.labels import LabelSource, label_source_from_manifest
from earthloop.store.tables import CHIPS, PRETRAIN_METRICS, PRETRAIN_RUNS
from earthloop.stream import (
    chip_dataset,
    count_index,
    rows_with_ids,
    sample_index,
    seco_dataset,
    snapshot,
)

log = logging.getLogger("earthloop.pretrain")


@dataclass
class PretrainPlan:
    """Everything validated and resolved on the driver."""

    cfg: EarthloopConfig
    pc: PretrainConfig
    method: type[Method]
    bands: list[str]
    run_name: str
    storage_path: str
    chips_uri: str
    labels: LabelSource | None


@dataclass
class PretrainResult:
    run_name: str
    checkpoint: str | None
    backbone_path: str | None
    chips: TableRef
    metrics: dict[str, Any]
    runs_table: str
    metrics_table: str


def plan_pretrain(cfg: EarthloopConfig) -> PretrainPlan:
    pc = cfg.pretrain
    method = method_class(pc.method)
    try:
        bands = [b.name for b in resolve_bands(pc.bands or cfg.ingest.bands)]
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"pretrain.bands: {exc.args[0]}") from None
    if pc.batch_size < cfg.ray.num_workers:
        raise ConfigError(
            f"pretrain.batch_size={pc.batch_size} is smaller than ray.num_workers="
            f"{cfg.ray.num_workers}: every worker needs at least one sample per step"
        )
    method.check(pc)
    chips_uri = cfg.table_uri(CHIPS)
    if not table_exists(chips_uri):
        raise ConfigError(f"no chip table at {chips_uri}: run `earthloop ingest` first")
    labels = None
    if pc.probe.labels:
        try:
            pc.probe.labels = resolve_path(pc.probe.labels)
            labels = label_source_from_manifest(pc.probe.labels, method.label_kind or pc.probe.kind)
        except (FileNotFoundError, KeyError, ValueError) as exc:
            raise ConfigError(f"pretrain.probe.labels: {exc}") from None
    run_name = pc.run_name or f"{cfg.name}-{pc.method}"
    storage = pc.storage_path or cfg.path("ray_results")
    return PretrainPlan(cfg, pc, method, bands, run_name, storage, chips_uri, labels)


def _check_bands_in_index(rows: list[dict[str, Any]], bands: list[str], uri: str) -> None:
    have = set(rows[0]["bands"])
    missing = [b for b in bands if b not in have]
    if missing:
        raise ConfigError(
            f"pretrain.bands: {missing} not in the chip index {uri} (it has {sorted(have)}); "
            "re-run ingest with those bands"
        )


#: index rows the driver samples for normalisation statistics and the kNN probe (bounded: the
#: driver never holds the whole index, issue 11)
INDEX_SAMPLE = 4096


@dataclass
class TrainingData:
    """The run's Ray dataset (every epoch, one pipeline), a bounded sample of the index rows it
    reads (statistics and probe), the pinned table version and the samples per epoch."""

    ds: Any
    sample: list[dict[str, Any]]
    ref: TableRef
    n_samples: int


def training_data(plan: PretrainPlan) -> TrainingData:
    """The stream the method asks for: date series per location, or labelled single chips."""
    cfg, pc, split = plan.cfg, plan.pc, plan.cfg.stream.split
    ref = snapshot(plan.chips_uri)
    sample = sample_index(
        ref, split=split, max_cloud=cfg.stream.max_cloud, n=INDEX_SAMPLE, seed=pc.seed
    )
    if not sample:
        raise ConfigError(f"the chip index {plan.chips_uri} has no '{split}' chips")
    _check_bands_in_index(sample, plan.bands, plan.chips_uri)
    common: dict[str, Any] = {
        "version": ref.version,
        "split": split,
        "bands": plan.bands,
        "max_cloud": cfg.stream.max_cloud,
        "cachemax_mb": cfg.stream.gdal_cachemax_mb,
        "epochs": pc.epochs,
    }
    dates = plan.method.stream_dates(pc)
    columns = list(plan.method.columns)
    if dates is not None:
        ds, ref, n_samples = seco_dataset(plan.chips_uri, dates=dates, **common)
        ds = ds.select_columns(columns)  # fused into the location readers by Ray Data
    else:
        assert plan.labels is not None  # checked by the method in plan_pretrain
        subset = plan.method.labelled_subset(pc)
        # the readers emit only what training takes (chip_id too when a subset filters on it)
        wanted = [*columns, "chip_id"] if subset is not None else columns
        ds, ref = chip_dataset(plan.chips_uri, labels=plan.labels.rasters, columns=wanted, **common)
        n_samples = count_index(ref, split=split, max_cloud=cfg.stream.max_cloud)
        if subset is not None:  # a supervised method sees only the chips it may take labels from
            inside = rows_with_ids(
                ref, subset.chip_ids, split=split, max_cloud=cfg.stream.max_cloud
            )
            n_samples = _labelled_count(inside, subset, split)
            ds = ds.map_batches(subset, batch_format="numpy").select_columns(columns)
    if n_samples < pc.batch_size:
        raise ConfigError(
            f"only {n_samples} training samples but pretrain.batch_size={pc.batch_size}"
        )
    return TrainingData(ds, sample, ref, n_samples)


def _labelled_count(inside: list[dict[str, Any]], subset: LabelledSubset, split: str | None) -> int:
    """How many stream chips the labelled subset keeps; none at all is a configuration error."""
    missing = len(subset.chip_ids) - len({str(r["chip_id"]) for r in inside})
    if not inside:
        raise ConfigError(
            f"pretrain.cscl_labelled_chips: none of its {len(subset.chip_ids)} chip ids is a "
            f"'{split}' chip of the index (are they chip ids of this chip table?)"
        )
    if missing:
        log.warning(
            "%d of the %d labelled chips are not '%s' chips of the index and are not used",
            missing,
            len(subset.chip_ids),
            split,
        )
    return len(inside)


def worker_setup(plan: PretrainPlan, data: TrainingData) -> WorkerSetup:
    """Normalisation statistics and the kNN probe, computed once on the driver for every worker."""
    # Ray is a heavy optional dependency: imported only when a run is launched
    import ray

    pc = plan.pc
    mean, std = band_statistics(data.sample, plan.bands, seed=pc.seed)
    probe_ref = None
    if plan.labels is not None:
        # a supervised method trains on its own label kind; the probe uses the configured one
        probe_labels = (
            label_source_from_manifest(pc.probe.labels, pc.probe.kind)
            if plan.method.label_kind is not None and pc.probe.labels
            else plan.labels
        )
        probe = build_probe(data.sample, plan.bands, probe_labels, pc.probe.chips, seed=pc.seed)
        probe_ref = ray.put(probe)
    return WorkerSetup(
        pretrain=pc,
        mean=mean,
        std=std,
        run_name=plan.run_name,
        probe_ref=probe_ref,
        cpus_per_worker=plan.cfg.ray.cpus_per_worker,
        metrics_table=plan.cfg.table_uri(PRETRAIN_METRICS),
        batches_per_epoch=batches_per_epoch(
            data.n_samples, pc.batch_size, plan.cfg.ray.num_workers
        ),
    )


def batches_per_epoch(n_samples: int, batch_size: int, world: int) -> int:
    """Batches each rank trains per epoch when one stream carries every epoch.

    Ray Train splits the stream equally between ranks, so every rank cuts its share into epochs
    of the same number of batches and all ranks cross each epoch boundary at the same step.
    """
    per_rank = max(1, batch_size // world)
    return max(1, (n_samples // world) // per_rank)


def make_trainer(plan: PretrainPlan, data: TrainingData, setup: WorkerSetup) -> Any:
    """The Ray ``TorchTrainer`` of the run, storing checkpoints where the plan says."""
    # Ray is a heavy optional dependency: imported only when a run is launched
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg, pc = plan.cfg, plan.pc
    # s3:// storage: Ray gets our filesystem (endpoint and http consent as for Delta); a local
    # path stays Ray's default. Workers resolve S3 credentials from their own environment.
    storage_path, storage_fs = ray_storage(plan.storage_path)
    return TorchTrainer(
        train_loop_per_worker=train_loop,
        train_loop_config={"setup": setup},
        scaling_config=ScalingConfig(
            num_workers=cfg.ray.num_workers,
            use_gpu=cfg.ray.use_gpu,
            resources_per_worker={"CPU": cfg.ray.cpus_per_worker},
            placement_strategy=cfg.ray.placement_strategy,
        ),
        run_config=RunConfig(
            name=plan.run_name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=FailureConfig(max_failures=pc.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=pc.keep_checkpoints),
        ),
        datasets={"train": data.ds},
        dataset_config=data_config(),
    )


def run_pretrain(cfg: EarthloopConfig) -> PretrainResult:
    """Validate, then train with Ray Train on the connected cluster; returns where things are."""
    # Ray is a heavy optional dependency: imported only when a run is launched
    import ray

    plan = plan_pretrain(cfg)
    # one progress line per epoch from our loop is readable; Ray Data's bars per operator are not
    ray.data.DataContext.get_current().enable_progress_bars = False
    data = training_data(plan)
    plan.method.check_data(plan.pc, data.n_samples)  # e.g. a queue not smaller than an epoch
    setup = worker_setup(plan, data)
    log.info(
        "pretraining %s (%s, %s) on %d %s samples from %s@v%d; %d workers",
        plan.run_name,
        plan.pc.method,
        plan.pc.backbone,
        data.n_samples,
        cfg.stream.split,
        plan.chips_uri,
        data.ref.version,
        cfg.ray.num_workers,
    )
    trainer = make_trainer(plan, data, setup)
    recorder = RunRecorder(cfg.table_uri(PRETRAIN_RUNS), plan, data.ref)
    result = _fit(trainer, recorder)
    checkpoint = (
        as_uri(result.checkpoint.filesystem, result.checkpoint.path)
        if result.checkpoint is not None
        else None
    )
    final = dict(result.metrics or {})
    try:
        backbone_path = _export(result, plan, setup, checkpoint)
    except BaseException as exc:
        recorder.write("failed", error=f"export: {type(exc).__name__}: {exc}", final=final)
        raise
    status = "failed" if result.error else "finished"
    err = f"{type(result.error).__name__}: {result.error}" if result.error else None
    recorder.write(status, error=err, final=final, checkpoint=checkpoint, backbone=backbone_path)
    return PretrainResult(
        plan.run_name,
        checkpoint,
        backbone_path,
        data.ref,
        final,
        recorder.uri,
        setup.metrics_table or "",
    )


def _fit(trainer: Any, recorder: RunRecorder) -> Any:
    """``trainer.fit()`` with the run row saying running, interrupted or failed."""
    recorder.write("running")
    signals: list[str] = []
    try:
        with _sigterm_as_interrupt(signals):
            return trainer.fit()
    except (KeyboardInterrupt, SystemExit) as exc:
        # SystemExit: Ray's own Ctrl-C handler aborts the run and exits the driver that way
        why = f"stopped by {signals[-1]}" if signals else f"{type(exc).__name__}: {exc}"
        recorder.write("interrupted", error=why.rstrip(": "))
        raise
    except BaseException as exc:
        recorder.write("failed", error=f"{type(exc).__name__}: {exc}")
        raise


def _export(result: Any, plan: PretrainPlan, setup: WorkerSetup, source: str | None) -> str | None:
    """The final checkpoint's backbone as ``models/<run>/backbone.pt``; None without one."""
    if result.checkpoint is None:
        return None
    # as_directory: the checkpoint itself when local, a download when on S3
    with result.checkpoint.as_directory() as local_ckpt:
        return export_backbone(
            local_ckpt,
            plan,
            setup.mean,
            setup.std,
            plan.cfg.path("models", plan.run_name, "backbone.pt"),
            source=source,
        )


def data_config() -> Any:
    """Ray Train data ingest with a deterministic per-epoch, per-rank batch order.

    Mid-epoch resume skips the batches a checkpoint already trained on, which is only right if
    every epoch hands each rank the same batches in the same order: ``preserve_order`` fixes the
    order blocks leave the pipeline, and without locality hints the streaming split assigns them
    to ranks by that order alone (each block goes to the rank with the fewest rows so far).
    The price is head-of-line blocking in the read pipeline and, on a multi-node cluster, blocks
    read on one node and trained on another (locality off): see docs/methods.md.
    """
    from ray.train import DataConfig

    opts = DataConfig.default_ingest_options()
    opts.preserve_order = True
    return DataConfig(execution_options=opts, enable_shard_locality=False)


class RunInterrupted(KeyboardInterrupt):
    """The driver was asked to stop (SIGTERM, as sent by ``ray job stop``).

    A ``KeyboardInterrupt``: Ray's blocking ``ray.get`` turns only that (and ``SystemExit``)
    raised by a signal handler into an interruption; any other exception there is swallowed.
    """


@contextmanager
def _sigterm_as_interrupt(received: list[str]) -> Iterator[None]:
    """Turn SIGTERM into :class:`RunInterrupted` while training, so the run row says so.

    ``ray job stop`` sends SIGTERM and, 3 s later, SIGKILL: the handler only records the signal
    (in ``received``) and raises; the caller writes one small row (~50 ms) in that window.
    Outside the main thread (no signals there) a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        raise RunInterrupted(f"stopped by {received[-1]}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


RUNS_SCHEMA = PRETRAIN_RUNS.schema  # the contract lives in store.tables


class RunRecorder:
    """The run's row in ``pretrain_runs``, upserted at start and at every way a run can end.

    ``status`` is ``running`` (written before training; a row left ``running`` means the driver
    was killed outright), ``finished``, ``failed`` (with the error) or ``interrupted`` (stopped
    by SIGTERM/Ctrl-C; re-submitting the same run name resumes it). A failed write is logged,
    never raised: it must not hide the run's own outcome.
    """

    def __init__(self, uri: str, plan: PretrainPlan, ref: TableRef) -> None:
        self.uri, self.plan, self.ref = uri, plan, ref
        self.started = datetime.now(UTC)

    def row(
        self,
        status: str,
        *,
        error: str | None = None,
        final: dict[str, Any] | None = None,
        checkpoint: str | None = None,
        backbone: str | None = None,
    ) -> dict[str, Any]:
        plan, f = self.plan, final or {}
        return {
            "run_name": plan.run_name,
            "method": plan.pc.method,
            "backbone": plan.pc.backbone,
            "bands": plan.bands,
            "config": json.dumps(plan.cfg.redacted_dump(), default=str, sort_keys=True),
            "chips_table": self.ref.uri,
            "chips_table_version": self.ref.version,
            "checkpoint": checkpoint,
            "backbone_path": backbone,
            "final_step": int(f.get("step", 0)),
            "resumed_from_step": int(f.get("resumed_from_step", 0)),
            "world_size": int(f.get("world_size", plan.cfg.ray.num_workers)),
            "knn_accuracy": float(f.get("knn_accuracy", float("nan"))),
            "started_at": self.started,
            "finished_at": None if status == "running" else datetime.now(UTC),
            "status": status,
            "error": error[-4000:] if error else None,
        }

    def write(self, status: str, **kwargs: Any) -> None:
        row = self.row(status, **kwargs)
        schema = RUNS_SCHEMA
        try:
            if table_exists(self.uri):
                have = set(read_table(self.uri).schema.names)
                if "error" not in have:  # a table written before the column existed
                    log.warning(
                        "%s has no 'error' column (older table): run %s error not stored: %s",
                        self.uri,
                        row["run_name"],
                        row["error"],
                    )
                    row.pop("error")
                    schema = pa.schema([f for f in RUNS_SCHEMA if f.name != "error"])
            merge_rows(self.uri, pa.Table.from_pylist([row], schema=schema), ["run_name"])
        except Exception as exc:
            log.warning(
                "could not record run %s as %s in %s: %s", row["run_name"], status, self.uri, exc
            )


def export_backbone(
    checkpoint_dir: str,
    plan: PretrainPlan,
    mean: list[float],
    std: list[float],
    out: str,
    *,
    source: str | None = None,
) -> str:
    """Write the pretrained encoder with its bands and normalisation (one file, one call to load).

    Dense contrast and CSCL export their U-Net decoder with it (their losses act on its output):
    fine-tuning restores both and adds only a fresh output layer. ``checkpoint_dir`` is local;
    ``source`` is where that checkpoint lives (recorded in the file). ``out`` may be an
    ``s3://`` URI: ``save_backbone`` knows only local files (models stay free of storage), so
    the file is written in a local staging folder and uploaded.
    """
    method = build_method(plan.pc, len(plan.bands))
    state = load_state(checkpoint_dir)
    method.load_state_dict(state["model"])
    with local_staging(posixpath.dirname(out)) as folder:
        save_backbone(
            os.path.join(folder, posixpath.basename(out)),
            method.backbone,
            arch=plan.pc.backbone,
            bands=plan.bands,
            mean=mean,
            std=std,
            method=plan.pc.method,
            decoder=method.decoder,
            extra={
                "run_name": plan.run_name,
                "step": int(state["step"]),
                "checkpoint": source or str(checkpoint_dir),
            },
        )
    return out
