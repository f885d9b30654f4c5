"""Validated job configuration: the one typed schema of every section (ingest to fine-tuning).

Every job reads one YAML file plus ``section.key=value`` overrides. Validation happens before any
Ray worker starts, so a typo costs a second, not a cluster allocation, and the error names the
offending key (``ingest.bands.2: unknown Sentinel-2 band 'B13'``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from earthloop.errors import ConfigError, fail
from earthloop.observe.logs import redact_url
from earthloop.s2.bands import resolve_bands
from earthloop.store.tables import TableSpec, table_uri

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "demo.yaml"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StacConfig(Section):
    """Where scenes come from: a STAC API URL or a static catalog path."""

    url: str = "http://127.0.0.1:8181"
    collection: str = "sentinel-2-l2a"
    timeout_s: float = Field(20.0, gt=0)
    max_retries: int = Field(4, ge=0)
    backoff_s: float = Field(0.5, ge=0)
    # Rewrite asset hrefs (e.g. ``s3://sentinel-cogs/`` → a local mirror) before reading.
    href_map: dict[str, str] = Field(default_factory=dict)


def _parse_instant(text: str, *, end: bool) -> _dt.datetime | None:
    """One side of a STAC datetime interval, in UTC: ``..``/empty (open), a year, a month, a date
    or an RFC 3339 timestamp; a year, month or day stands for its first (start) or last (end)
    second."""
    t = text.strip()
    if t in {"", ".."}:
        return None
    try:
        if len(t) == 4 and t.isdigit():
            first = _dt.datetime(int(t), 1, 1, tzinfo=_dt.UTC)
            span = first.replace(year=first.year + 1) - first
        elif len(t) == 7 and t[4] == "-":
            first = _dt.datetime.strptime(t, "%Y-%m").replace(tzinfo=_dt.UTC)
            nxt = first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
            span = nxt - first
        elif len(t) == 10:
            first = _dt.datetime.strptime(t, "%Y-%m-%d").replace(tzinfo=_dt.UTC)
            span = _dt.timedelta(days=1)
        else:
            stamp = _dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
            return (
                stamp.replace(tzinfo=_dt.UTC) if stamp.tzinfo is None else stamp.astimezone(_dt.UTC)
            )
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date (use YYYY, YYYY-MM, YYYY-MM-DD or an RFC 3339 timestamp)"
        ) from None
    return first + span - _dt.timedelta(seconds=1) if end else first


def parse_datetime_interval(text: str) -> tuple[_dt.datetime | None, _dt.datetime | None]:
    """Parse a STAC ``datetime`` search value (``start/end``, open ends as ``..``) in UTC.

    Validated when the config loads, because a reversed or unparsable interval otherwise surfaces
    as a traceback deep inside the ingest, after the cluster has been reached.
    """
    parts = text.split("/")
    if len(parts) > 2:
        raise ValueError(f"{text!r}: expected START/END with one '/'")
    start = _parse_instant(parts[0], end=False)
    end = _parse_instant(parts[-1], end=True)
    if start is not None and end is not None and start > end:
        raise ValueError(f"{text!r}: start {parts[0]} is after end {parts[-1]}")
    return start, end


class IngestConfig(Section):
    """SeCo-style sampling of locations × seasons and the per-chip cloud check."""

    bbox: tuple[float, float, float, float] | None = None  # lon/lat WGS84
    aoi_geojson: str | None = None  # path to a GeoJSON geometry/feature (collection)
    datetime: str = "2023-01-01/2023-12-31"
    max_scene_cloud: float = Field(80.0, ge=0, le=100)
    bands: list[str] = Field(default_factory=lambda: ["blue", "green", "red", "nir"])
    chip_size: int = Field(64, ge=8, le=4096)  # pixels on the 10 m grid
    num_locations: int = Field(32, ge=1)
    sampling: Literal["uniform", "gaussian", "grid"] = "uniform"
    centers: list[tuple[float, float]] = Field(default_factory=list)  # lon/lat for gaussian
    sigma_m: float = Field(5000.0, gt=0)
    dates_per_location: int = Field(4, ge=1)
    max_chip_cloud: float = Field(0.2, ge=0, le=1)
    max_chip_nodata: float = Field(0.0, ge=0, le=1)
    val_fraction: float = Field(0.2, ge=0, lt=1)
    seed: int = 0
    workers: int = Field(4, ge=1)

    @field_validator("bands")
    @classmethod
    def _known_bands(cls, v: list[str]) -> list[str]:
        for i, name in enumerate(v):
            try:
                resolve_bands([name])
            except KeyError as exc:
                raise ValueError(f"bands.{i}: {exc.args[0]}") from None
        resolve_bands(v)  # duplicates
        return v

    @field_validator("datetime", mode="before")
    @classmethod
    def _datetime_as_text(cls, v: Any) -> Any:
        # YAML reads `2023` as an int and `2023-01-01` as a date: both are valid STAC datetimes
        return v.isoformat() if isinstance(v, _dt.date) else str(v) if isinstance(v, int) else v

    @field_validator("datetime")
    @classmethod
    def _datetime_interval(cls, v: str) -> str:
        # ingest splits the interval into one search window per season, so both ends are needed
        start, end = parse_datetime_interval(v)
        if start is None or end is None:
            raise ValueError(f"{v!r}: give a closed interval START/END (seasons are split from it)")
        return v

    @model_validator(mode="after")
    def _gaussian_needs_centers(self) -> IngestConfig:
        if self.sampling == "gaussian" and not self.centers:
            raise ValueError("sampling 'gaussian' needs at least one entry in 'centers'")
        return self


class StreamConfig(Section):
    """How chips flow from COGs into training."""

    split: str | None = "train"
    max_cloud: float = Field(1.0, ge=0, le=1)
    gdal_cachemax_mb: int = Field(64, ge=1)


Method = Literal["seco", "dense", "cscl"]


class ProbeConfig(Section):
    """kNN probe on a small labelled set: the collapse watch that speaks in accuracy."""

    labels: str | None = None  # synthetic manifest.json (or any manifest with label rasters)
    kind: str = "landcover"
    chips: int = Field(240, ge=10)
    k: int = Field(10, ge=1)


class PretrainConfig(Section):
    """The ``pretrain:`` section: one contrastive method on Ray Train."""

    method: Method = "seco"
    backbone: str = "resnet18"
    bands: list[str] | None = None  # default: the ingest bands
    batch_size: int = Field(32, ge=1)  # global, split across workers
    epochs: int = Field(2, ge=1)
    max_steps: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)  # default: the method's (SeCo: SGD 0.03)
    # "linear": lr x batch_size / the method's reference batch (SeCo: 0.03 at 256, as the
    # reference code); methods without a reference batch (dense, CSCL: AdamW) are not scaled
    lr_scaling: Literal["linear", "none"] = "linear"
    # None: the method's own (SeCo: step, as the reference code; dense/CSCL: cosine)
    lr_schedule: Literal["step", "cosine", "constant"] | None = None
    # step schedule: x0.1 at each of these fractions of training (reference: epochs 120, 160/200)
    lr_milestones: list[float] = Field(default_factory=lambda: [0.6, 0.8])
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    temperature: float = Field(0.07, gt=0)
    queue_size: int = Field(16384, ge=1)
    key_momentum: float = Field(0.999, ge=0, le=1)
    feature_dim: int = Field(128, ge=8)
    dates: int = Field(3, ge=2)
    pixels_per_image: int = Field(64, ge=4)  # dense contrast
    cscl_window: int = Field(5, ge=3)
    cscl_dilation: int = Field(1, ge=1)
    cscl_pos_weight: float = Field(0.125, gt=0)
    # None: every label value (background 0 included) is a class; set to treat one as unlabelled
    cscl_ignore_index: int | None = None
    # CSCL is supervised: the chip ids whose labels it may use (a list, or a file of ids, one a
    # line or a JSON list), e.g. the fine-tuning label subset of one (fraction, seed). Required
    # for method cscl; labels of every other chip are never read into training.
    cscl_labelled_chips: list[str] | str | None = None
    checkpoint_every: int = Field(20, ge=1)
    # Checkpoints kept on storage (Ray's num_to_keep). Two, so that a newest checkpoint broken
    # mid-write still leaves one to resume from; each is ~3x the model (SeCo resnet18: 146 MB).
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(2, ge=0)
    run_name: str | None = None  # default: <config name>-<method>; re-using it resumes
    storage_path: str | None = None  # default: <workdir>/ray_results
    seed: int = 0
    log_every_s: float = Field(10.0, gt=0)
    probe: ProbeConfig = Field(default_factory=lambda: ProbeConfig())
    amp: bool = True  # bf16 autocast + channels-last when on GPU; ignored on CPU

    @model_validator(mode="after")
    def _cscl_window_odd(self) -> PretrainConfig:
        if self.cscl_window % 2 == 0:
            raise ValueError("cscl_window must be odd (the pixel sits in the middle)")
        return self

    @model_validator(mode="after")
    def _milestones(self) -> PretrainConfig:
        ms = self.lr_milestones
        if any(not 0 < m < 1 for m in ms) or ms != sorted(ms):
            raise ValueError(f"lr_milestones must be increasing fractions in (0, 1), got {ms}")
        return self


Task = Literal["segmentation", "classification", "multilabel"]
Mode = Literal["linear", "full"]
InitKind = Literal["random", "earthloop", "external"]
Range = float | tuple[float, float]

PRIMARY_METRIC: dict[str, str] = {
    "segmentation": "miou",
    "classification": "accuracy",
    "multilabel": "map",
}
"""The validation metric ASHA and the per-cell model selection maximise, per task."""


class InitSpec(Section):
    """One initialisation of the encoder: random, an earthloop backbone.pt, or a foreign state_dict.

    ``run`` names a pretraining run (``pretrain_runs`` table) instead of a ``path``.
    """

    name: str
    kind: InitKind | None = None  # default: random without path/run, else earthloop
    path: str | None = None
    run: str | None = None
    # external checkpoints carry no normalisation: give it, or train-split statistics are used
    mean: list[float] | None = None
    std: list[float] | None = None
    allow_missing_keys: bool = False  # external: accept a checkpoint that leaves layers random

    @model_validator(mode="after")
    def _kind(self) -> InitSpec:
        if self.kind is None:
            self.kind = "random" if self.path is None and self.run is None else "earthloop"
        if self.kind == "random" and (self.path or self.run):
            raise ValueError(f"init {self.name!r}: kind 'random' takes no path/run")
        if self.kind != "random" and not (self.path or self.run):
            raise ValueError(f"init {self.name!r}: kind {self.kind!r} needs a path (or run)")
        if self.kind == "external" and self.run:
            raise ValueError(f"init {self.name!r}: 'run' names an earthloop pretraining run")
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"init {self.name!r}: give both mean and std, or neither")
        return self


class SplitConfig(Section):
    """Spatially disjoint train/val/test blocks (never random pixels or random chips).

    ``index``: train/val from the chip index ``split`` column (~5 km blocks at ingest); the test
    split is carved from the index's val blocks by a salted block hash (``index_test_share`` of
    them, at ``block_deg`` = the ingest block size). ``blocks``: a fresh three-way split of
    ``block_deg`` lon/lat blocks (``val_fraction`` / ``test_fraction`` of the blocks), for AOIs
    too small for 5 km blocks (the synthetic tiles are 1-5 km wide).
    """

    mode: Literal["index", "blocks"] = "index"
    block_deg: float = Field(0.05, gt=0)
    val_fraction: float = Field(0.2, ge=0, lt=1)  # blocks mode
    test_fraction: float = Field(0.2, gt=0, lt=1)  # blocks mode
    index_test_share: float = Field(0.5, gt=0, lt=1)  # index mode: val blocks that become test
    salt: str = "earthloop-finetune"
    drop_overlapping: bool = True  # drop val/test chips whose footprint touches a train chip
    # A held-out region (lon/lat [west, south, east, north]): its chips are never trained on,
    # selected on or counted in "test"; they are scored apart as "heldout" at the trial's best
    # val iteration. Does a model trained in one country work in another? Only this tells.
    heldout_bbox: list[float] | None = None

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        if self.mode == "blocks" and self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must leave blocks for training")
        b = self.heldout_bbox
        if b is not None and (len(b) != 4 or not (b[0] < b[2] and b[1] < b[3])):
            raise ValueError(
                f"finetune.split.heldout_bbox must be [west, south, east, north] with west < east "
                f"and south < north, got {b}"
            )
        return self


class SearchConfig(Section):
    """Per grid cell, ``num_samples`` draws of these; the best by validation metric is reported."""

    num_samples: int = Field(1, ge=1)
    lr: Range = 1e-3
    weight_decay: Range = 1e-4
    encoder_lr_mult: Range = 0.1  # full fine-tuning: encoder lr = lr x this
    modes: list[Mode] = Field(default_factory=lambda: ["full"])  # type: ignore[arg-type]
    modes_in_grid: bool = False  # True: linear vs full become separate curves, not a search

    @field_validator("lr", "weight_decay", "encoder_lr_mult")
    @classmethod
    def _range(cls, v: Range) -> Range:
        if isinstance(v, tuple):
            lo, hi = v
            if not 0 < lo <= hi:
                raise ValueError(f"range must be [low, high] with 0 < low <= high, got {list(v)}")
        elif v < 0:
            raise ValueError(f"must be >= 0, got {v}")
        return v

    @field_validator("modes")
    @classmethod
    def _modes(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("modes must list 'linear' and/or 'full', each once")
        return v


class AshaConfig(Section):
    """ASHA early stopping; ``scope: cell`` runs one ASHA per (fraction, init, seed) cell.

    A single global ASHA would compare a 1 % trial with a 10 % trial and stop the 1 % one for
    having fewer labels, which is exactly the effect the sweep measures.
    """

    enabled: bool = True
    grace_period: int = Field(2, ge=1)  # evaluations before a trial can be stopped
    reduction_factor: float = Field(3.0, gt=1)
    scope: Literal["cell", "global"] = "cell"


class ResourcesConfig(Section):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)
    max_concurrent_trials: int | None = Field(None, ge=1)


class FinetuneConfig(Section):
    name: str | None = None  # sweep name; default <config name>-finetune; re-using it resumes
    task: Task = "segmentation"
    source: Literal["chips", "bigearthnet"] = "chips"
    labels: str | None = None  # manifest.json with label rasters; default <data_dir>/manifest.json
    kind: str = "landcover"  # which labels of the manifest (landcover / croptype)
    parcel_boundaries: bool = (
        True  # boundary mIoU also uses parcel edges when the manifest has them
    )
    bigearthnet_dir: str | None = None
    bigearthnet_classes: Literal[19, 43] = 19
    bands: list[str] | None = None  # default: the ingest bands (bigearthnet: its 12 bands)
    backbone: str = "resnet18"
    inits: list[InitSpec] = Field(default_factory=lambda: [InitSpec(name="random")])
    fractions: list[float] = Field(default_factory=lambda: [0.01, 0.1])
    seeds: list[int] = Field(default_factory=lambda: [0])
    allow_missing_classes: bool = False
    min_class_pixels: int = Field(1, ge=1)  # segmentation: pixels a class needs in a subset
    multilabel_min_share: float = Field(0.05, gt=0, lt=1)  # chips -> multi-hot: min class share
    max_cloud: float = Field(0.2, ge=0, le=1)  # chip cloud + shadow fraction admitted to the pool
    chips_version: int | None = None  # pin the chip index version (default: latest)
    max_eval_chips: int | None = Field(400, ge=1)  # cap on val and on test chips each
    max_steps: int = Field(200, ge=1)
    eval_every: int = Field(20, ge=1)  # one Tune iteration = this many optimiser steps
    batch_size: int = Field(16, ge=1)
    augment: bool = True  # flips / 90-degree rotations of the labelled chips
    # Segmentation: train on random train_crop x train_crop windows of the labelled chips (val
    # and test stay whole). A step then costs ~(crop/chip)^2 of a whole-chip step, so a CPU
    # budget buys that many times more optimiser steps; None trains on whole chips.
    train_crop: int | None = Field(None, ge=8)
    # "balanced": cross-entropy weighted by median class frequency over the trial's labelled
    # pixels (SegNet's median-frequency balancing). mIoU weighs every class alike; without it a
    # full pool's majority classes drown the rare ones, while small stratified subsets are
    # balanced by construction, so "more labels" could score *lower* (the demo did).
    class_weights: Literal["none", "balanced"] = "none"
    boundary_px: int = Field(2, ge=1)
    search: SearchConfig = Field(default_factory=lambda: SearchConfig.model_validate({}))
    asha: AshaConfig = Field(default_factory=lambda: AshaConfig.model_validate({}))
    resources: ResourcesConfig = Field(default_factory=lambda: ResourcesConfig.model_validate({}))
    split: SplitConfig = Field(default_factory=lambda: SplitConfig.model_validate({}))
    checkpoint_every: int = Field(1, ge=1)  # evaluations between trial checkpoints
    # Checkpoints kept per trial (None: all). Tune syncs its experiment state to storage with a
    # lag; a driver killed in that window restores a trial from the checkpoint the last synced
    # state names, so it must not have been deleted yet. 3 covers checkpoints seconds apart.
    keep_checkpoints: int | None = Field(3, ge=1)
    max_failures: int = Field(1, ge=0)  # retries of a failed trial
    storage_path: str | None = None  # default <workdir>/ray_results
    log_every_s: float = Field(30.0, gt=0)
    verbose: int = Field(1, ge=0, le=3)  # Tune's own progress table

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("at least one label fraction is needed")
        for f in v:
            if not 0 < f <= 1:
                raise ValueError(f"label fractions must be in (0, 1], got {f}")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate label fractions in {v}")
        return sorted(v)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v):
            raise ValueError("seeds must be a non-empty list without duplicates")
        return v

    @field_validator("inits")
    @classmethod
    def _inits(cls, v: list[InitSpec]) -> list[InitSpec]:
        if not v:
            raise ValueError("at least one initialisation is needed")
        names = [i.name for i in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate init names {dup}")
        return v

    @model_validator(mode="after")
    def _consistency(self) -> FinetuneConfig:
        if self.eval_every > self.max_steps:
            raise ValueError(f"eval_every={self.eval_every} exceeds max_steps={self.max_steps}")
        if self.source == "bigearthnet":
            if not self.bigearthnet_dir:
                raise ValueError("source 'bigearthnet' needs bigearthnet_dir")
            if self.task == "segmentation":
                raise ValueError("BigEarthNet has scene labels only: use task multilabel")
        return self

    @property
    def primary_metric(self) -> str:
        return PRIMARY_METRIC[self.task]

    @property
    def iterations(self) -> int:
        """Tune iterations (evaluations) of a trial that is never stopped early."""
        return -(-self.max_steps // self.eval_every)


ScoreName = Literal["random", "entropy", "margin", "knn", "seasonal"]
StrategyName = Literal["random", "entropy", "margin", "knn", "seasonal", "coreset", "hybrid"]
SET_STRATEGIES = frozenset({"coreset", "hybrid"})  # strategies that choose a whole set


class WeightedStrategy(Section):
    """One strategy of a mix and how much its rank counts."""

    name: StrategyName
    weight: float = Field(1.0, gt=0)


class NeighbourConfig(Section):
    """Nearest-neighbour search for knn, coreset and hybrid (see ``active/nn.py``)."""

    backend: Literal["faiss", "numpy"] = "faiss"
    exact_max_pairs: int = Field(500_000_000, ge=0)  # queries × references below this: exact
    nprobe: int = Field(16, ge=1)
    nlist: int | None = Field(None, ge=1)
    pca_dims: int | None = Field(64, ge=2)  # projection for IVF searches; None = full dims


class ConstraintConfig(Section):
    """What may never share a batch."""

    min_cosine_distance: float = Field(0.05, ge=0, le=2)  # closer = near-duplicate
    min_distance_m: float = Field(1000.0, ge=0)  # closer on the ground = neighbour; 0 = off
    one_per_location: bool = True


class KnnConfig(Section):
    k: int = Field(10, ge=1)


class SeasonalConfig(Section):
    source: Literal["embeddings", "predictions", "both"] = "embeddings"
    min_dates: int = Field(2, ge=2)


class HybridConfig(Section):
    uncertainty: list[WeightedStrategy] = Field(
        default_factory=lambda: [WeightedStrategy(name="entropy")]
    )
    pool_factor: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _scorers_only(self) -> HybridConfig:
        bad = [s.name for s in self.uncertainty if s.name in SET_STRATEGIES]
        if bad or not self.uncertainty:
            raise ValueError(f"hybrid.uncertainty takes scoring strategies only, not {bad}")
        return self


class SelectionConfig(Section):
    """The ``active:`` section: how a round picks the chips to label.

    ``strategies`` is one strategy, or a weighted mix of scoring strategies (random, entropy,
    margin, knn, seasonal); coreset and hybrid choose sets and stand alone.
    """

    batch_size: int = Field(100, ge=1)
    seed: int = 0
    strategies: list[WeightedStrategy] = Field(
        default_factory=lambda: [WeightedStrategy(name="hybrid")], min_length=1
    )
    knn: KnnConfig = Field(default_factory=lambda: KnnConfig())
    seasonal: SeasonalConfig = Field(default_factory=lambda: SeasonalConfig())
    hybrid: HybridConfig = Field(default_factory=lambda: HybridConfig())
    neighbours: NeighbourConfig = Field(default_factory=lambda: NeighbourConfig())
    constraints: ConstraintConfig = Field(default_factory=lambda: ConstraintConfig())

    @model_validator(mode="after")
    def _combinable(self) -> SelectionConfig:
        names = [s.name for s in self.strategies]
        if len(set(names)) != len(names):
            raise ValueError(f"strategies: each strategy at most once, got {names}")
        sets = [n for n in names if n in SET_STRATEGIES]
        if sets and len(names) > 1:
            raise ValueError(f"strategies: {sets[0]} chooses a whole set and cannot be mixed")
        return self


class RayConfig(Section):
    address: str | None = "auto"
    num_workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "SPREAD"


class EarthloopConfig(Section):
    """The whole configuration; jobs read the sections they need."""

    name: str = "demo"
    workdir: str = "runs/demo"  # local path or s3:// URI; tables and checkpoints live below it
    data_dir: str = "data/synthetic"  # where `earthloop sample-data` writes
    stac: StacConfig = Field(default_factory=lambda: StacConfig())
    ingest: IngestConfig = Field(default_factory=lambda: IngestConfig())
    stream: StreamConfig = Field(default_factory=lambda: StreamConfig())
    ray: RayConfig = Field(default_factory=lambda: RayConfig())
    pretrain: PretrainConfig = Field(default_factory=lambda: PretrainConfig())
    finetune: FinetuneConfig = Field(default_factory=lambda: FinetuneConfig())
    active: SelectionConfig = Field(default_factory=lambda: SelectionConfig())

    @model_validator(mode="after")
    def _default_bands(self) -> EarthloopConfig:
        # "default: the ingest bands", decided once here rather than by every stage
        if self.pretrain.bands is None:
            self.pretrain.bands = list(self.ingest.bands)
        # BigEarthNet brings its own 12 bands (finetune.plan); a chip-index sweep reads ours
        if self.finetune.bands is None and self.finetune.source != "bigearthnet":
            self.finetune.bands = list(self.ingest.bands)
        return self

    def redacted_dump(self) -> dict[str, Any]:
        """The whole config as plain data, safe to store in a run row or print: credentials in
        URLs are masked (``stac.url`` may carry a password; run tables live for ever)."""
        data = self.model_dump()
        data["stac"]["url"] = redact_url(self.stac.url)
        return data

    def table_uri(self, table: TableSpec | str) -> str:
        """URI of a Delta table under the workdir (see :mod:`earthloop.store.tables`)."""
        return table_uri(resolve_path(self.workdir), table)

    def path(self, *parts: str) -> str:
        return _join(self.workdir, *parts)


def project_root() -> Path:
    """Base of relative paths in configs: ``$EARTHLOOP_ROOT``, else the current directory.

    A Ray job runs in a temporary copy of the working dir; the job scripts set EARTHLOOP_ROOT so
    that ``runs/demo`` still means the user's project folder, not that copy.
    """
    return Path(os.environ.get("EARTHLOOP_ROOT") or Path.cwd())


def resolve_path(path: str) -> str:
    """Absolute form of a config path; URIs (``s3://…``) are returned unchanged."""
    if "://" in path:
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (project_root() / p).resolve())


def _join(base: str, *parts: str) -> str:
    if "://" in base:
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(resolve_path(base)).joinpath(*parts))


def _coerce(text: str) -> Any:
    """Parse an override value the way YAML would (numbers, lists, booleans, null)."""
    return yaml.safe_load(text)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides onto a nested mapping, creating sections as needed."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        key, _, value = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override {item!r} has an empty key")
        node = raw
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
            node = child
        node[parts[-1]] = _coerce(value)
    return raw


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see configs/demo.yaml for every key)"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None
) -> EarthloopConfig:
    """Load, override and validate a config; defaults to the embedded demo."""
    source = Path(path) if path else DEFAULT_CONFIG
    if not source.exists():
        raise ConfigError(f"config file not found: {source}")
    try:
        raw = yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    raw = apply_overrides(raw, list(overrides or []))
    try:
        return EarthloopConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(source))) from None


def parse_job_args(
    argv: list[str] | None, description: str, flags: argparse.ArgumentParser | None = None
) -> tuple[EarthloopConfig, argparse.Namespace]:
    """Common ``[job flags] --config FILE [section.key=value ...]`` handling of every entry point.

    ``flags`` is a job's own parser (``add_help=False``): its options are taken out first, the
    rest is the config, and ``--help`` shows both. Returns the validated config and the job's
    flags (or the common namespace when the job has none).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    common = argparse.ArgumentParser(description=description, add_help=flags is None)
    common.add_argument("--config", default=None, help=f"YAML config (default {DEFAULT_CONFIG})")
    common.add_argument("overrides", nargs="*", help="section.key=value overrides")
    job_ns = None
    if flags is not None:
        if "-h" in args or "--help" in args:  # one help for both, before any required flag
            argparse.ArgumentParser(
                prog=flags.prog, description=description, parents=[flags, common]
            ).parse_args(["--help"])
        job_ns, args = flags.parse_known_args(args)
    ns = common.parse_args(args)
    try:
        cfg = load_config(ns.config, ns.overrides)
    except ConfigError as exc:
        raise SystemExit(fail("earthloop", exc)) from None
    return cfg, (job_ns if job_ns is not None else ns)
