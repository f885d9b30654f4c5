"""Fine-tuning sweep configuration (the ``finetune:`` section), validated before Ray is touched.

The sweep is a grid (label fraction x initialisation x seed) times a small hyper-parameter search
(learning rate, weight decay, encoder learning-rate multiplier, linear probe vs. full fine-tuning).
Every value of the search accepts either one number (fixed) or ``[low, high]`` (log-uniform), so
the same section describes a quick demo and a real search.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from earthloop.config import (
    EarthloopConfig,
    Section,
    validate_section,
)

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

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        if self.mode == "blocks" and self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must leave blocks for training")
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


def finetune_config(cfg: EarthloopConfig) -> FinetuneConfig:
    """Validate the raw ``finetune:`` mapping with errors that name the key."""
    return validate_section(FinetuneConfig, cfg.finetune, "finetune")
