"""Pretraining methods as objects: each owns its model, its loss inputs and its optimiser.

Why objects and not a method string: the string used to be tested in a dozen places (which
model, which optimiser, which stream columns, how many dates, whether labels are needed). Now
each method answers those questions itself, with typed constructor arguments, and
:data:`METHODS` is the only place a name from the configuration is looked up. The training engine
(:mod:`earthloop.pretrain.engine`) only calls the small interface of :class:`Method`, so the same
engine trains every method, under Ray Train or in this process.

The torch modules themselves live in :mod:`earthloop.models.methods` (plain torch, no Ray, no
storage); a method object wraps one of them with what training needs around it.
"""

from __future__ import annotations

import json
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import Tensor, nn

from earthloop.config import ConfigError, PretrainConfig, resolve_path
from earthloop.models import CSCL, DenseContrastive, SeCo, UNet, build_backbone
from earthloop.models.normalise import normalise
from earthloop.models.unet import UNetDecoder

log = logging.getLogger("earthloop.pretrain")

__all__ = [
    "LR_SCHEDULES",
    "METHODS",
    "CSCLMethod",
    "DenseMethod",
    "LabelledSubset",
    "Method",
    "SeCoMethod",
    "build_method",
    "check_queue",
    "key_momentum_warning",
    "load_chip_ids",
    "lr_factor",
    "method_class",
]

LR_SCHEDULES = ("step", "cosine", "constant")


def lr_factor(kind: str, progress: float, milestones: Sequence[float] = (0.6, 0.8)) -> float:
    """The learning-rate multiplier at ``progress`` (fraction of training done, 0..1).

    ``step``: x0.1 at each milestone passed (SeCo's reference code: MoCo's step schedule at
    epochs 120 and 160 of 200, i.e. 0.6 and 0.8); ``cosine``: ``0.5 (1 + cos(pi p))``;
    ``constant``: 1.
    """
    p = min(max(progress, 0.0), 1.0)
    if kind == "step":
        return 0.1 ** sum(1 for m in milestones if p >= m)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if kind == "constant":
        return 1.0
    raise ValueError(f"lr schedule must be one of {LR_SCHEDULES}, got {kind!r}")


def check_queue(queue_size: int, samples_per_epoch: int) -> None:
    """Refuse a MoCo queue that is not smaller than what one epoch delivers.

    Each sample's key of the previous epoch was enqueued ``samples_per_epoch`` keys ago; a queue
    at least that long still holds it, so the query meets stale keys of its own location as
    negatives (with 1024 entries for ~100 locations, about nine of them).

    Raises:
        ConfigError: naming both numbers and what to do.
    """
    if queue_size >= samples_per_epoch:
        raise ConfigError(
            f"pretrain.queue_size={queue_size} is not smaller than the {samples_per_epoch} "
            "samples (locations) seen per epoch: the queue would hold keys of the query's own "
            "location from earlier epochs as negatives. Set pretrain.queue_size below "
            f"{samples_per_epoch} (e.g. {max(1, samples_per_epoch // 2)}) or pretrain on more "
            "locations."
        )


def key_momentum_warning(momentum: float, steps: int) -> str | None:
    """A warning when the momentum key encoder will barely leave its random start.

    After ``n`` steps the key encoder still holds ``momentum**n`` of its initial (random)
    weights; with ``n (1 - m) < 1`` that is more than ``1/e`` (e.g. 9 steps at 0.999: 99 %).
    """
    if momentum >= 1.0 or steps * (1.0 - momentum) < 1.0:
        left = momentum**steps
        return (
            f"pretrain.key_momentum={momentum} over {steps} steps: steps x (1 - m) = "
            f"{steps * (1.0 - momentum):.3g} < 1, the key encoder keeps {left:.0%} of its random "
            "initial weights and the keys stay nearly random; train longer or lower "
            f"key_momentum (e.g. {max(0.0, 1.0 - 5.0 / max(steps, 1)):.3g} for 5 time constants)"
        )
    return None


def load_chip_ids(spec: Iterable[str] | str) -> frozenset[str]:
    """The chip ids of ``spec``: a list, or a file of ids (one a line, ``#`` comments, or JSON).

    Raises:
        ConfigError: missing file, unreadable JSON, or no id at all.
    """
    if isinstance(spec, str):
        path = Path(resolve_path(spec))
        if not path.is_file():
            raise ConfigError(f"pretrain.cscl_labelled_chips: no file {path}")
        text = path.read_text()
        if text.lstrip().startswith("["):
            try:
                ids = [str(i) for i in json.loads(text)]
            except json.JSONDecodeError as exc:
                raise ConfigError(f"pretrain.cscl_labelled_chips: {path}: {exc}") from None
        else:
            lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
            ids = [line for line in lines if line]
    else:
        ids = [str(i) for i in spec]
    if not ids:
        raise ConfigError("pretrain.cscl_labelled_chips lists no chip id")
    return frozenset(ids)


@dataclass(frozen=True)
class LabelledSubset:
    """The chips a supervised pretraining may take labels from; every other chip is dropped.

    Used as a Ray Data ``map_batches`` function (numpy batches with a ``chip_id`` column) on the
    labelled chip stream, before any column reaches a worker: a chip outside the subset never
    contributes an image or a label. In a label-efficiency curve this is the fine-tuning label
    subset of the point being measured.
    """

    chip_ids: frozenset[str]

    def rows(self, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The chip-index rows inside the subset."""
        return [r for r in rows if str(r["chip_id"]) in self.chip_ids]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "chip_id" not in batch:
            raise KeyError("a labelled-subset filter needs the batch's chip_id column")
        ids = batch["chip_id"]
        keep = np.fromiter((str(i) in self.chip_ids for i in ids), dtype=bool, count=len(ids))
        return {k: v[keep] for k, v in batch.items()}


class Method(ABC):
    """A pretraining method: model, per-batch inputs, loss, optimiser and learning-rate schedule.

    ``model`` is the plain module (what checkpoints and exports hold); ``net`` is what the
    forward pass runs through, the same module unless :meth:`distribute` wrapped it (DDP).
    Anything a method keeps beyond its model (SeCo's queues) is a registered buffer of the model,
    so :meth:`state_dict` is the model's and a checkpoint never stores a thing twice.
    """

    name: ClassVar[str]
    #: stream columns a batch must carry
    columns: ClassVar[tuple[str, ...]]
    #: the label kind a supervised method trains on (from ``pretrain.probe.labels``), else None
    label_kind: ClassVar[str | None] = None

    #: the schedule used when ``pretrain.lr_schedule`` is not set
    default_lr_schedule: ClassVar[str] = "cosine"
    #: the global batch the default learning rate is meant for (linear scaling), None: not scaled
    reference_batch: ClassVar[int | None] = None

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float | None = None,
        weight_decay: float = 1e-4,
        lr_schedule: str | None = None,
        lr_milestones: Sequence[float] = (0.6, 0.8),
        lr_scale: float = 1.0,
    ) -> None:
        self.model = model
        self.net: nn.Module = model
        defaults = dict(getattr(type(model), "default_optimizer_params", {}))
        self.lr = float(lr or defaults.get("lr", 1e-3)) * lr_scale
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule or self.default_lr_schedule
        lr_factor(self.lr_schedule, 0.0)  # an unknown schedule fails here, not at step 1
        self.lr_milestones = tuple(lr_milestones)

    # -- built from the configuration ---------------------------------------------------------

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: PretrainConfig, in_channels: int, *, seed: int) -> Self:
        """The method a ``pretrain`` section asks for; ``seed`` drives its private RNG."""

    @classmethod
    def check(cls, cfg: PretrainConfig) -> None:
        """Raise :class:`ConfigError` when ``cfg`` cannot train this method (on the driver)."""
        if cls.label_kind is not None and not cfg.probe.labels:
            raise ConfigError(
                f"pretrain.method={cls.name} is supervised: set pretrain.probe.labels"
            )

    @classmethod
    def stream_dates(cls, cfg: PretrainConfig) -> int | None:
        """Dates per location the stream must deliver; ``None``: single chips with labels."""
        return None

    @classmethod
    def lr_scale(cls, cfg: PretrainConfig) -> float:
        """``batch_size / reference_batch`` under linear scaling (the Goyal et al. rule MoCo uses)."""
        if cfg.lr_scaling == "linear" and cls.reference_batch:
            return cfg.batch_size / cls.reference_batch
        return 1.0

    @classmethod
    def schedule_args(cls, cfg: PretrainConfig) -> dict[str, Any]:
        """The learning-rate arguments of ``__init__`` a ``pretrain`` section asks for."""
        return {
            "lr": cfg.lr,
            "lr_schedule": cfg.lr_schedule,
            "lr_milestones": tuple(cfg.lr_milestones),
            "lr_scale": cls.lr_scale(cfg),
        }

    @classmethod
    def check_data(cls, cfg: PretrainConfig, n_samples: int) -> list[str]:
        """Check ``cfg`` against the ``n_samples`` one epoch delivers (on the driver).

        Returns warnings (also logged); raises :class:`ConfigError` for what cannot work.
        """
        return []

    @classmethod
    def labelled_subset(cls, cfg: PretrainConfig) -> LabelledSubset | None:
        """The chips whose labels a supervised method may use; None for self-supervised ones."""
        return None

    # -- training -----------------------------------------------------------------------------

    @abstractmethod
    def inputs(self, batch: dict[str, Tensor], mean: Tensor, std: Tensor) -> dict[str, Tensor]:
        """Map a stream batch to what the model's ``forward`` expects (normalised)."""

    def loss(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """The forward pass: ``out["loss"]`` to minimise plus ``loss_*`` terms to log."""
        out: dict[str, Tensor] = self.net(inputs)
        return out

    def optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters (the dense methods' default; SeCo overrides)."""
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def lr_at(self, progress: float) -> float:
        """The learning rate at ``progress`` (0..1) of training: the engine sets it every step.

        A function of the position alone, so a resumed run continues the schedule exactly
        without a scheduler state in the checkpoint.
        """
        return self.lr * lr_factor(self.lr_schedule, progress, self.lr_milestones)

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Run the forward pass through ``wrap(model)`` (e.g. DDP); state stays the plain model's."""
        self.net = wrap(self.model)

    @property
    def backbone(self) -> Any:
        """The encoder that is exported and probed (typed loosely: backbones differ)."""
        return self.model.backbone

    @property
    def decoder(self) -> UNetDecoder | None:
        """The pretrained U-Net decoder to export with the encoder (None: encoder-only method).

        Dense contrast and CSCL put their loss on the decoder's output, so most of what they
        learn is in the decoder; fine-tuning restores it (everything but the output layer).
        """
        dec = getattr(self.model, "decoder", None)
        return dec if isinstance(dec, UNetDecoder) else None

    # -- state beyond the optimiser -----------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state)

    def rng_state(self) -> Tensor | None:
        """The model's private generator state (dates, augmentations), if it has one."""
        gen = getattr(self.model, "generator", None)
        return gen.get_state() if isinstance(gen, torch.Generator) else None

    def set_rng_state(self, state: Tensor | None) -> None:
        gen = getattr(self.model, "generator", None)
        if isinstance(gen, torch.Generator) and state is not None:
            gen.set_state(state)


def _image_series(batch: dict[str, Tensor], mean: Tensor, std: Tensor) -> tuple[Tensor, Tensor]:
    valid = batch["valid"].bool()
    return normalise(batch["images"].float(), mean, std, valid), valid


class SeCoMethod(Method):
    """SeCo (MoCo-v2 with three subspaces) trained with SGD, the paper's recipe."""

    name = "seco"
    columns = ("images", "valid")
    default_lr_schedule = "step"  # the reference code's MoCo step schedule
    reference_batch = 256  # the reference code's lr 0.03 is for batch 256

    def __init__(
        self,
        arch: str,
        in_channels: int,
        *,
        feature_dim: int = 128,
        queue_size: int = 16384,
        key_momentum: float = 0.999,
        temperature: float = 0.07,
        seed: int | None = None,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        **schedule: Any,
    ) -> None:
        model = SeCo(
            build_backbone(arch, in_channels),
            feature_dim=feature_dim,
            queue_size=queue_size,
            momentum=key_momentum,
            temperature=temperature,
            seed=seed,
        )
        super().__init__(model, weight_decay=weight_decay, **schedule)
        self.momentum = momentum

    @classmethod
    def from_config(cls, cfg: PretrainConfig, in_channels: int, *, seed: int) -> Self:
        return cls(
            cfg.backbone,
            in_channels,
            feature_dim=cfg.feature_dim,
            queue_size=cfg.queue_size,
            key_momentum=cfg.key_momentum,
            temperature=cfg.temperature,
            seed=seed,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            **cls.schedule_args(cfg),
        )

    @classmethod
    def check(cls, cfg: PretrainConfig) -> None:
        super().check(cfg)
        if cfg.dates < 3:
            raise ConfigError(
                "pretrain.dates must be >= 3 for SeCo (query, season key, augment key)"
            )

    @classmethod
    def check_data(cls, cfg: PretrainConfig, n_samples: int) -> list[str]:
        """Refuse a queue not smaller than an epoch; warn when the key encoder cannot move."""
        steps_per_epoch = n_samples // cfg.batch_size  # the loop drops incomplete batches
        check_queue(cfg.queue_size, steps_per_epoch * cfg.batch_size)
        steps = steps_per_epoch * cfg.epochs
        if cfg.max_steps is not None:
            steps = min(steps, cfg.max_steps)
        warning = key_momentum_warning(cfg.key_momentum, steps)
        if warning is None:
            return []
        log.warning("%s", warning)
        return [warning]

    @classmethod
    def stream_dates(cls, cfg: PretrainConfig) -> int | None:
        return cfg.dates

    def inputs(self, batch: dict[str, Tensor], mean: Tensor, std: Tensor) -> dict[str, Tensor]:
        images, _ = _image_series(batch, mean, std)
        # zero reflectance in standardised units: brightness jitter scales reflectance about it
        black = -torch.as_tensor(mean, dtype=images.dtype) / torch.as_tensor(
            std, dtype=images.dtype
        )
        return {"images": images, "black_level": black}

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            self.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )


class DenseMethod(Method):
    """Pixel-level contrast between two dates of a location (Embedding Earth), AdamW."""

    name = "dense"
    columns = ("images", "valid")

    def __init__(
        self,
        arch: str,
        in_channels: int,
        *,
        pixels_per_image: int = 64,
        seed: int | None = None,
        weight_decay: float = 1e-4,
        **schedule: Any,
    ) -> None:
        model = DenseContrastive(
            UNet(build_backbone(arch, in_channels)), num_pixels=pixels_per_image, seed=seed
        )
        super().__init__(model, weight_decay=weight_decay, **schedule)

    @classmethod
    def from_config(cls, cfg: PretrainConfig, in_channels: int, *, seed: int) -> Self:
        return cls(
            cfg.backbone,
            in_channels,
            pixels_per_image=cfg.pixels_per_image,
            seed=seed,
            weight_decay=cfg.weight_decay,
            **cls.schedule_args(cfg),
        )

    @classmethod
    def stream_dates(cls, cfg: PretrainConfig) -> int | None:
        return 2

    def inputs(self, batch: dict[str, Tensor], mean: Tensor, std: Tensor) -> dict[str, Tensor]:
        images, valid = _image_series(batch, mean, std)
        return {"images": images, "valid": valid}


class CSCLMethod(Method):
    """Supervised context-self contrast on crop-type labels (Tarasiou et al.), AdamW."""

    name = "cscl"
    columns = ("image", "valid", "label")
    label_kind = "croptype"

    def __init__(
        self,
        arch: str,
        in_channels: int,
        *,
        window: int = 5,
        dilation: int = 1,
        pos_weight: float = 0.125,
        ignore_index: int | None = None,
        weight_decay: float = 1e-4,
        **schedule: Any,
    ) -> None:
        model = CSCL(
            UNet(build_backbone(arch, in_channels)),
            kernel_size=window,
            dilation=dilation,
            pos_weight=pos_weight,
            ignore_index=ignore_index,
        )
        super().__init__(model, weight_decay=weight_decay, **schedule)

    @classmethod
    def from_config(cls, cfg: PretrainConfig, in_channels: int, *, seed: int) -> Self:
        return cls(
            cfg.backbone,
            in_channels,
            window=cfg.cscl_window,
            dilation=cfg.cscl_dilation,
            pos_weight=cfg.cscl_pos_weight,
            ignore_index=cfg.cscl_ignore_index,
            weight_decay=cfg.weight_decay,
            **cls.schedule_args(cfg),
        )

    @classmethod
    def check(cls, cfg: PretrainConfig) -> None:
        super().check(cfg)
        if cfg.cscl_labelled_chips is None:
            raise ConfigError(
                "pretrain.method=cscl trains on labels: set pretrain.cscl_labelled_chips to the "
                "chip ids it may take labels from (in a label-efficiency run, the fine-tuning "
                "label subset of that fraction and seed; see docs/methods.md)"
            )
        load_chip_ids(cfg.cscl_labelled_chips)

    @classmethod
    def labelled_subset(cls, cfg: PretrainConfig) -> LabelledSubset | None:
        if cfg.cscl_labelled_chips is None:
            raise ConfigError("pretrain.method=cscl needs pretrain.cscl_labelled_chips")
        return LabelledSubset(load_chip_ids(cfg.cscl_labelled_chips))

    def inputs(self, batch: dict[str, Tensor], mean: Tensor, std: Tensor) -> dict[str, Tensor]:
        valid = batch["valid"].bool()
        image = normalise(batch["image"].float(), mean, std, valid)
        # clouds are unlabelled (-1); 0 stays a class (background), see losses/cscl.py
        label = torch.where(
            valid, batch["label"].long(), torch.full_like(batch["label"].long(), -1)
        )
        return {"image": image, "label": label}


#: The only place a configured method name is looked up.
METHODS: dict[str, type[Method]] = {m.name: m for m in (SeCoMethod, DenseMethod, CSCLMethod)}


def method_class(name: str) -> type[Method]:
    """The method registered as ``name``; an unknown name is an error naming the choices."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(
            f"unknown pretraining method {name!r} (choices: {', '.join(sorted(METHODS))})"
        ) from None


def build_method(cfg: PretrainConfig, in_channels: int, *, seed: int | None = None) -> Method:
    """The configured method for ``in_channels`` bands; ``seed`` defaults to ``cfg.seed``."""
    return method_class(cfg.method).from_config(
        cfg, in_channels, seed=cfg.seed if seed is None else seed
    )
