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

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Self

import torch
from torch import Tensor, nn

from earthloop.config import ConfigError, PretrainConfig
from earthloop.models import CSCL, DenseContrastive, SeCo, UNet, build_backbone
from earthloop.models.normalise import normalise

__all__ = [
    "METHODS",
    "CSCLMethod",
    "DenseMethod",
    "Method",
    "SeCoMethod",
    "build_method",
    "method_class",
]


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

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float | None = None,
        weight_decay: float = 1e-4,
        cosine_steps: int | None = None,
    ) -> None:
        self.model = model
        self.net: nn.Module = model
        defaults = dict(getattr(type(model), "default_optimizer_params", {}))
        self.lr = float(lr or defaults.get("lr", 1e-3))
        self.weight_decay = weight_decay
        self.cosine_steps = cosine_steps

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

    def scheduler(self, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
        """Cosine decay over ``cosine_steps`` when set, else a constant learning rate."""
        if not self.cosine_steps:
            return None
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.cosine_steps))

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Run the forward pass through ``wrap(model)`` (e.g. DDP); state stays the plain model's."""
        self.net = wrap(self.model)

    @property
    def backbone(self) -> Any:
        """The encoder that is exported and probed (typed loosely: backbones differ)."""
        return self.model.backbone

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
        lr: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        cosine_steps: int | None = None,
    ) -> None:
        model = SeCo(
            build_backbone(arch, in_channels),
            feature_dim=feature_dim,
            queue_size=queue_size,
            momentum=key_momentum,
            temperature=temperature,
            seed=seed,
        )
        super().__init__(model, lr=lr, weight_decay=weight_decay, cosine_steps=cosine_steps)
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
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )

    @classmethod
    def check(cls, cfg: PretrainConfig) -> None:
        super().check(cfg)
        if cfg.dates < 3:
            raise ConfigError(
                "pretrain.dates must be >= 3 for SeCo (query, season key, augment key)"
            )

    @classmethod
    def stream_dates(cls, cfg: PretrainConfig) -> int | None:
        return cfg.dates

    def inputs(self, batch: dict[str, Tensor], mean: Tensor, std: Tensor) -> dict[str, Tensor]:
        images, _ = _image_series(batch, mean, std)
        return {"images": images}

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
        lr: float | None = None,
        weight_decay: float = 1e-4,
    ) -> None:
        model = DenseContrastive(
            UNet(build_backbone(arch, in_channels)), num_pixels=pixels_per_image, seed=seed
        )
        super().__init__(model, lr=lr, weight_decay=weight_decay)

    @classmethod
    def from_config(cls, cfg: PretrainConfig, in_channels: int, *, seed: int) -> Self:
        return cls(
            cfg.backbone,
            in_channels,
            pixels_per_image=cfg.pixels_per_image,
            seed=seed,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
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
        lr: float | None = None,
        weight_decay: float = 1e-4,
    ) -> None:
        model = CSCL(
            UNet(build_backbone(arch, in_channels)),
            kernel_size=window,
            dilation=dilation,
            pos_weight=pos_weight,
        )
        super().__init__(model, lr=lr, weight_decay=weight_decay)

    @classmethod
    def from_config(cls, cfg: PretrainConfig, in_channels: int, *, seed: int) -> Self:
        return cls(
            cfg.backbone,
            in_channels,
            window=cfg.cscl_window,
            dilation=cfg.cscl_dilation,
            pos_weight=cfg.cscl_pos_weight,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
        )

    def inputs(self, batch: dict[str, Tensor], mean: Tensor, std: Tensor) -> dict[str, Tensor]:
        valid = batch["valid"].bool()
        image = normalise(batch["image"].float(), mean, std, valid)
        label = batch["label"].long() * valid.long()  # clouds are unlabelled (0 = ignore)
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
