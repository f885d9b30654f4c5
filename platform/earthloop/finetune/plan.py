"""Planning a sweep on the driver, before any cluster is touched.

:func:`plan_sweep` validates the ``finetune:`` section, reads the label pool, checks every
initialisation against bands and architecture, builds every label subset and checks no class is
lost. Any problem raises here, naming the fraction/class/init/file, so a mistake costs seconds
and not a cluster allocation. The plan also carries the sweep's *fingerprint*: what defines its
trials, stored beside the experiment so that a restore under a changed definition fails instead
of mixing two sweeps in one table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from dataclasses import dataclass
from typing import Any

from earthloop.config import ConfigError, EarthloopConfig, FinetuneConfig, resolve_path
from earthloop.finetune.bigearthnet import BANDS as BIGEARTHNET_BANDS
from earthloop.finetune.data import Pool, build_pool, train_statistics
from earthloop.finetune.model import ResolvedInit, resolve_init
from earthloop.finetune.rows import RowContext
from earthloop.finetune.trial import TrialContext
from earthloop.models.backbones import ARCHITECTURES
from earthloop.s2.bands import resolve_bands
from earthloop.store.delta import table_exists
from earthloop.store.fs import read_bytes
from earthloop.store.tables import FINETUNE_TRIALS

log = logging.getLogger("earthloop.finetune")

__all__ = [
    "FINGERPRINT_FILE",
    "LabelSet",
    "SweepPlan",
    "fingerprint",
    "plan_summary",
    "plan_sweep",
    "stored_fingerprint",
    "trial_configs",
]

FINGERPRINT_FILE = "earthloop_sweep.json"

# settings that change logging or placement, not what a trial computes; chips_version is
# recorded resolved, under "chips"
_NOT_SHAPING = {
    "name",
    "log_every_s",
    "verbose",
    "resources",
    "storage_path",
    "max_failures",
    "chips_version",
    "keep_checkpoints",
}


@dataclass
class LabelSet:
    """The labelled subset of one (fraction, seed): the row's ``label_set_id`` names its ids."""

    fraction: float
    seed: int
    indices: list[int]
    ids: list[str]

    @property
    def set_id(self) -> str:
        return hashlib.sha1("\n".join(sorted(self.ids)).encode()).hexdigest()[:16]


@dataclass
class SweepPlan:
    """Everything checked and prepared for a sweep; what the driver hands to Tune or a loop."""

    cfg: EarthloopConfig
    fc: FinetuneConfig
    name: str
    storage_path: str
    bands: list[str]
    pool: Pool
    inits: dict[str, ResolvedInit]
    train_stats: tuple[list[float], list[float]]
    label_sets: dict[tuple[float, int], LabelSet]
    fingerprint: dict[str, Any]
    report_dir: str
    table_uri: str

    @property
    def experiment_path(self) -> str:
        """Where Tune keeps the sweep: a local folder or an ``s3://`` prefix."""
        return posixpath.join(self.storage_path, self.name)

    @property
    def n_cells(self) -> int:
        modes = len(self.fc.search.modes) if self.fc.search.modes_in_grid else 1
        return len(self.fc.fractions) * len(self.inits) * len(self.fc.seeds) * modes

    @property
    def n_trials(self) -> int:
        return self.n_cells * self.fc.search.num_samples

    def context(self) -> TrialContext:
        """What the workers need (the pool, inits, budget), without the driver-only parts."""
        fc = self.fc
        return TrialContext(
            pool=self.pool,
            inits=self.inits,
            train_stats=self.train_stats,
            task=fc.task,
            primary=fc.primary_metric,
            max_steps=fc.max_steps,
            eval_every=fc.eval_every,
            batch_size=fc.batch_size,
            augment=fc.augment,
            boundary_px=fc.boundary_px,
            checkpoint_every=fc.checkpoint_every,
            class_weights=fc.class_weights,
            train_crop=fc.train_crop,
            cpus=fc.resources.cpu,
            gpus=fc.resources.gpu,
            attempts_dir=posixpath.join(self.experiment_path, "attempts"),
            experiment_path=self.experiment_path,
        )

    def row_context(self) -> RowContext:
        """What a trial row needs from the plan (small and picklable, unlike the plan)."""
        pool = self.pool
        return RowContext(
            sweep=self.name,
            task=self.fc.task,
            metric=self.fc.primary_metric,
            backbone=self.fc.backbone,
            bands=self.bands,
            iterations=self.fc.iterations,
            max_steps=self.fc.max_steps,
            modes_in_grid=self.fc.search.modes_in_grid,
            chips_table=pool.chips.uri if pool.chips else pool.labels_source,
            chips_version=pool.chips.version if pool.chips else -1,
            labels_source=pool.labels_source,
            inits={k: (v.kind, v.path or "", v.method) for k, v in self.inits.items()},
            label_sets={
                f"{k[0]:g}|{k[1]}": (len(v.ids), v.set_id, v.ids)
                for k, v in self.label_sets.items()
            },
            table_uri=self.table_uri,
        )


def _bands(cfg: EarthloopConfig, fc: FinetuneConfig) -> list[str]:
    if fc.source == "bigearthnet":
        names = fc.bands or list(BIGEARTHNET_BANDS)
    else:
        names = fc.bands or cfg.ingest.bands
    try:
        return [b.name for b in resolve_bands(list(names))]
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"finetune.bands: {exc.args[0]}") from None


def stored_fingerprint(experiment_path: str) -> dict[str, Any] | None:
    """The fingerprint a sweep at ``experiment_path`` started with, or None for a new sweep.

    Read through :mod:`earthloop.store.fs`: the experiment may live on ``s3://``.
    """
    try:
        data = read_bytes(posixpath.join(experiment_path, FINGERPRINT_FILE))
    except FileNotFoundError:
        return None
    stored: dict[str, Any] = json.loads(data)
    return stored


def fingerprint(
    fc: FinetuneConfig, bands: list[str], pool: Pool, inits: dict[str, ResolvedInit]
) -> dict[str, Any]:
    """What defines the sweep's trials: a restore under a changed definition would mix runs."""
    return {
        "finetune": fc.model_dump(exclude=_NOT_SHAPING),
        "bands": bands,
        "chips": pool.chips.as_dict() if pool.chips else None,
        "labels": pool.labels_source,
        "pool": pool.summary(),
        "inits": {k: [v.kind, v.path] for k, v in inits.items()},
    }


def _check_fingerprint(
    name: str, path: str, fp: dict[str, Any], stored: dict[str, Any] | None
) -> None:
    """Raise, naming the changed parts, when an existing sweep was defined differently."""
    if stored is None or stored == json.loads(json.dumps(fp, default=str)):
        return
    changed = sorted(
        k
        for k in fp
        if json.dumps(fp[k], default=str, sort_keys=True)
        != json.dumps(stored.get(k), default=str, sort_keys=True)
    )
    raise ConfigError(
        f"sweep {name!r} already exists at {path} with a different "
        f"definition (changed: {changed}); choose another finetune.name to start a new "
        "sweep, or delete that folder"
    )


def _label_sets(fc: FinetuneConfig, pool: Pool) -> dict[tuple[float, int], LabelSet]:
    """Every (fraction, seed) subset, checked to keep every class unless that is allowed."""
    label_sets: dict[tuple[float, int], LabelSet] = {}
    for seed in fc.seeds:
        for f in fc.fractions:
            if fc.allow_missing_classes:
                idx = pool.train_subset(f, seed)
            else:
                idx = pool.check_subset(
                    f, seed, fc.min_class_pixels if fc.task == "segmentation" else 1
                )
            label_sets[(f, seed)] = LabelSet(f, seed, idx, [pool.samples[i].id for i in idx])
    return label_sets


def _pool(cfg: EarthloopConfig, fc: FinetuneConfig, bands: list[str]) -> Pool:
    if fc.source == "chips" and not table_exists(cfg.table_uri("chips")):
        raise ConfigError(
            f"no chip table at {cfg.table_uri('chips')}: run `earthloop ingest` first"
        )
    try:
        return build_pool(cfg, fc, bands)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise ConfigError(f"finetune data: {exc}") from None


def _check_train_crop(fc: FinetuneConfig, pool: Pool) -> None:
    """Refuse a training crop larger than the chips here, not at every trial's first step."""
    if fc.train_crop is None:
        return
    if fc.task != "segmentation":
        # a crop would cut away part of the scene a chip label describes; a config switched to
        # another task (the demo's, say) still runs, on whole chips
        log.warning("finetune.train_crop=%d applies to segmentation only: task %s trains on "
                    "whole chips", fc.train_crop, fc.task)  # fmt: skip
        return
    sizes = {int(s.row["chip_size"]) for s in pool.samples if "chip_size" in s.row}
    if sizes and fc.train_crop > min(sizes):
        raise ConfigError(
            f"finetune.train_crop={fc.train_crop} is larger than the chips of this index "
            f"({min(sizes)} px); use at most {min(sizes)} or leave it unset"
        )


def plan_sweep(cfg: EarthloopConfig) -> SweepPlan:
    """Validate everything and prepare the label pool and subsets; raises before any training.

    Raises :class:`~earthloop.config.ConfigError` for configuration and data problems,
    :class:`~earthloop.finetune.subsets.EmptyClassError` when a fraction loses a class, and
    :class:`~earthloop.finetune.model.IncompatibleCheckpointError` for an initialisation that
    does not fit.
    """
    fc = cfg.finetune
    if fc.backbone not in ARCHITECTURES:
        raise ConfigError(
            f"finetune.backbone: unknown {fc.backbone!r}; available {sorted(ARCHITECTURES)}"
        )
    name = fc.name or f"{cfg.name}-finetune"
    storage = resolve_path(fc.storage_path) if fc.storage_path else cfg.path("ray_results")
    bands = _bands(cfg, fc)
    stored = stored_fingerprint(posixpath.join(storage, name))
    if stored and stored.get("chips") and fc.chips_version is None:
        # a restored sweep keeps reading the index version it started on
        fc = fc.model_copy(update={"chips_version": int(stored["chips"]["version"])})
    inits = {spec.name: resolve_init(spec, fc.backbone, bands, cfg) for spec in fc.inits}
    pool = _pool(cfg, fc, bands)
    _check_train_crop(fc, pool)
    label_sets = _label_sets(fc, pool)
    missing_eval = _eval_only_classes(pool)
    if missing_eval:
        log.warning(
            "classes in val/test but not in the train split (no init can learn them): %s",
            missing_eval,
        )
    needs_stats = any(i.mean is None for i in inits.values())
    stats = train_statistics(pool) if needs_stats else ([], [])
    fp = fingerprint(fc, bands, pool, inits)
    _check_fingerprint(name, posixpath.join(storage, name), fp, stored)
    return SweepPlan(
        cfg,
        fc,
        name,
        storage,
        bands,
        pool,
        inits,
        stats,
        label_sets,
        fp,
        cfg.path("reports", name),
        cfg.table_uri(FINETUNE_TRIALS),
    )


def _eval_only_classes(pool: Pool) -> list[str]:
    train = pool.class_counts(pool.indices("train"))
    ev = pool.class_counts(pool.indices("val") + pool.indices("test"))
    return [pool.class_names[c] for c in pool.class_ids if ev.get(c, 0) > 0 and not train.get(c)]


def trial_configs(plan: SweepPlan) -> list[dict[str, Any]]:
    """The grid's concrete configs when nothing is searched (plain-loop runs and benchmarks)."""
    s = plan.fc.search
    for v in (s.lr, s.weight_decay, s.encoder_lr_mult):
        if isinstance(v, tuple) and v[0] != v[1]:
            raise ValueError("trial_configs needs fixed lr/weight_decay/encoder_lr_mult")
    fixed = lambda v: v[0] if isinstance(v, tuple) else v  # noqa: E731
    modes = list(s.modes) if s.modes_in_grid or len(s.modes) == 1 else [s.modes[0]]
    return [
        {
            "fraction": f,
            "init": i,
            "seed": seed,
            "mode": m,
            "lr": fixed(s.lr),
            "weight_decay": fixed(s.weight_decay),
            "encoder_lr_mult": fixed(s.encoder_lr_mult),
        }
        for f in plan.fc.fractions
        for i in plan.inits
        for seed in plan.fc.seeds
        for m in modes
    ]


def plan_summary(plan: SweepPlan) -> dict[str, Any]:
    """What the report says about the setup (data version, split sizes, subsets)."""
    pool = plan.pool
    return {
        "sweep": plan.name,
        "task": plan.fc.task,
        "metric": plan.fc.primary_metric,
        "backbone": plan.fc.backbone,
        "bands": plan.bands,
        "labels": pool.labels_source,
        "chips": pool.chips.as_dict() if pool.chips else None,
        "pool": pool.summary(),
        "dropped_overlap": pool.dropped_overlap,
        "split": plan.fc.split.model_dump(),
        "label_sets": {f"{k[0]:g}|{k[1]}": len(v.ids) for k, v in plan.label_sets.items()},
        "max_steps": plan.fc.max_steps,
        "batch_size": plan.fc.batch_size,
        "train_crop": plan.fc.train_crop,
        "class_weights": plan.fc.class_weights,
        "search": plan.fc.search.model_dump(),
        "asha": plan.fc.asha.model_dump(),
        "inits": {
            k: {"kind": v.kind, "path": v.path, "method": v.method} for k, v in plan.inits.items()
        },
        "classes": {
            pool.class_names[c]: n
            for c, n in sorted(pool.class_counts(pool.indices("train")).items())
        },
        "pretraining": pretraining_facts(plan.cfg, plan.fc),
    }


def pretraining_facts(cfg: EarthloopConfig, fc: FinetuneConfig) -> dict[str, dict[str, Any]]:
    """How much pretraining stands behind each ``run:`` init: steps, wall time, places seen.

    A reader of a label-efficiency table must see whether "SeCo" means nine optimiser steps or
    a day on a GPU; without it a flat curve reads as "pretraining does not work".
    """
    from earthloop.store.delta import read_table, table_exists

    runs_uri = cfg.table_uri("pretrain_runs")
    named = {spec.name: spec.run for spec in fc.inits if spec.run}
    if not named or not table_exists(runs_uri):
        return {}
    runs = {r["run_name"]: r for r in read_table(runs_uri).to_pylist()}
    out: dict[str, dict[str, Any]] = {}
    for init, run in named.items():
        r = runs.get(str(run))
        if r is None:
            continue
        started, finished = r.get("started_at"), r.get("finished_at")
        facts: dict[str, Any] = {
            "run": run,
            "method": r.get("method"),
            "steps": r.get("final_step"),
            "wall_s": (finished - started).total_seconds() if started and finished else None,
            "knn_accuracy": r.get("knn_accuracy"),
            "status": r.get("status"),
        }
        try:  # the places it could see: train-split locations of the index version it read
            chips = read_table(
                str(r["chips_table"]), int(r["chips_table_version"]), ["location_id", "split"]
            )
            split = json.loads(r.get("config") or "{}").get("stream", {}).get("split", "train")
            ids = [
                loc
                for loc, sp in zip(
                    chips["location_id"].to_pylist(), chips["split"].to_pylist(), strict=True
                )
                if split is None or sp == split
            ]
            facts["locations"] = len(set(ids))
            facts["chips"] = len(ids)
        except Exception as exc:  # a moved or vacuumed index: the report still renders
            log.warning("pretraining run %s: its chip index is unreadable: %s", run, exc)
        out[init] = facts
    return out
