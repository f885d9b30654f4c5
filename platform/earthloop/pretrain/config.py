"""Pretraining configuration (the ``pretrain:`` section), validated before any worker starts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from earthloop.config import (
    EarthloopConfig,
    Section,
    validate_section,
)

Method = Literal["seco", "dense", "cscl"]


class ProbeConfig(Section):
    """kNN probe on a small labelled set: the collapse watch that speaks in accuracy."""

    labels: str | None = None  # synthetic manifest.json (or any manifest with label rasters)
    kind: str = "landcover"
    chips: int = Field(240, ge=10)
    k: int = Field(10, ge=1)


class PretrainConfig(Section):
    method: Method = "seco"
    backbone: str = "resnet18"
    bands: list[str] | None = None  # default: the ingest bands
    batch_size: int = Field(32, ge=1)  # global, split across workers
    epochs: int = Field(2, ge=1)
    max_steps: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)  # default: the method's (SeCo: SGD 0.03)
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
    checkpoint_every: int = Field(20, ge=1)
    # Checkpoints kept on storage (Ray's num_to_keep). Two, so that a newest checkpoint broken
    # mid-write still leaves one to resume from; each is ~3x the model (SeCo resnet18: 148 MB).
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


def pretrain_config(cfg: EarthloopConfig) -> PretrainConfig:
    """Validate the raw ``pretrain:`` mapping with errors that name the key."""
    return validate_section(PretrainConfig, cfg.pretrain, "pretrain")
