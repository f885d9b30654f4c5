"""Pretraining method objects and the engine, in this process (plain torch, tiny models)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from earthloop.config import ConfigError, PretrainConfig
from earthloop.pretrain.engine import Engine, Hooks, Schedule
from earthloop.pretrain.local import train_in_memory
from earthloop.pretrain.methods import (
    METHODS,
    CSCLMethod,
    DenseMethod,
    Method,
    SeCoMethod,
    build_method,
    method_class,
)

C = 4


def _series(b: int = 4, t: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.rand(b, t, C, 32, 32, generator=g),
        "valid": torch.rand(b, t, 32, 32, generator=g) > 0.1,
    }


def _chips(b: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.rand(b, C, 32, 32, generator=g),
        "valid": torch.ones(b, 32, 32, dtype=torch.bool),
        "label": torch.randint(1, 4, (b, 32, 32), generator=g),
    }


def _cfg(method: str) -> PretrainConfig:
    return PretrainConfig(method=method, backbone="resnet_tiny", queue_size=16)


BATCHES = {"seco": _series, "dense": lambda: _series(t=2), "cscl": _chips}


def _engine(method: Method, hooks: Hooks | None = None, **schedule: Any) -> Engine:
    return Engine(
        method,
        Schedule(**{"epochs": 1, **schedule}),
        mean=torch.full((C,), 0.5),
        std=torch.full((C,), 0.3),
        device=torch.device("cpu"),
        batch_size=4,
        hooks=hooks,
    )


def test_registry_is_the_configs_choices_and_rejects_unknown_names() -> None:
    assert dict(METHODS) == {"seco": SeCoMethod, "dense": DenseMethod, "cscl": CSCLMethod}
    with pytest.raises(ConfigError, match=r"unknown pretraining method 'moco'.*cscl, dense, seco"):
        method_class("moco")


@pytest.mark.parametrize(
    ("name", "optimiser", "lr"),
    [
        ("seco", torch.optim.SGD, 0.03),
        ("dense", torch.optim.AdamW, 1e-3),
        ("cscl", torch.optim.AdamW, 1e-3),
    ],
)
def test_each_method_owns_its_optimiser_and_default_lr(
    name: str, optimiser: type, lr: float
) -> None:
    method = build_method(_cfg(name), C)
    opt = method.optimizer()
    assert isinstance(opt, optimiser)
    assert opt.param_groups[0]["lr"] == pytest.approx(lr)
    assert build_method(_cfg(name).model_copy(update={"lr": 0.5}), C).optimizer().param_groups[0][
        "lr"
    ] == pytest.approx(0.5)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_state_round_trips_and_continues_identically(name: str) -> None:
    """Copying a method's state and RNG into a fresh one makes the next step identical."""
    torch.manual_seed(0)
    a = build_method(_cfg(name), C, seed=3)
    ea = _engine(a)
    ea.step(BATCHES[name]())
    b = build_method(_cfg(name), C, seed=99)
    eb = _engine(b)
    rngs = [{"torch": torch.get_rng_state(), "method": a.rng_state()}]
    # deep copy: a saved checkpoint shares no tensors with the run that wrote it
    eb.restore(copy.deepcopy(ea.training_state(ea.pos, {}, 0, rngs)))
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    rng = torch.get_rng_state()
    ta, _ = ea.step(BATCHES[name]())
    torch.set_rng_state(rng)
    tb, _ = eb.step(BATCHES[name]())
    assert ta == tb
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in state_a)


def test_seco_queues_are_part_of_the_method_state() -> None:
    method = build_method(_cfg("seco"), C)
    _engine(method).step(_series())
    queues = {k: v for k, v in method.state_dict().items() if "queue" in k}
    assert queues, "SeCo's negative queues must be checkpointed with the model"


def test_method_checks_fail_on_the_driver() -> None:
    with pytest.raises(ConfigError, match="dates must be >= 3"):
        SeCoMethod.check(PretrainConfig(dates=2))
    with pytest.raises(ConfigError, match="cscl is supervised"):
        CSCLMethod.check(PretrainConfig(method="cscl"))
    assert SeCoMethod.stream_dates(PretrainConfig(dates=4)) == 4
    assert DenseMethod.stream_dates(PretrainConfig()) == 2
    assert CSCLMethod.stream_dates(PretrainConfig()) is None


class _Recorder(Hooks):
    def __init__(self) -> None:
        self.checkpoints: list[dict[str, Any]] = []
        self.epochs: list[dict[str, Any]] = []

    def checkpoint(self, engine: Engine, state: Any, metrics: dict[str, Any]) -> None:
        self.checkpoints.append({"state": state([]), "metrics": metrics})

    def epoch_end(self, engine: Engine, metrics: dict[str, Any]) -> None:
        self.epochs.append(metrics)


def test_engine_checkpoints_on_schedule_and_stops_at_max_steps_inside_the_epoch() -> None:
    hooks = _Recorder()
    method = build_method(_cfg("seco"), C)
    engine = _engine(method, hooks, epochs=3, max_steps=5, checkpoint_every=2)
    pos = engine.run(lambda epoch: [_series(seed=i) for i in range(3)])
    # epoch 0: steps 1-3 (checkpoint at 2, epoch end at 3); epoch 1: 4, 5 (checkpoint at 4),
    # stopped by max_steps after 2 of its 3 batches: the position stays inside the epoch
    assert (pos.step, pos.epoch, pos.batch) == (5, 1, 2)
    kinds = [(c["metrics"]["kind"], c["metrics"]["step"]) for c in hooks.checkpoints]
    assert kinds == [("step", 2), ("epoch", 3), ("step", 4), ("epoch", 5)]
    last = hooks.checkpoints[-1]["state"]
    assert (last["epoch"], last["batch_in_epoch"], last["epoch_batches"]) == (1, 2, 2)
    assert hooks.checkpoints[1]["state"]["epoch_batches"] == 0  # epoch boundary: next starts at 0
    assert [m["batches"] for m in hooks.epochs] == [3, 2]


def test_cosine_schedule_is_checkpointed_and_restored() -> None:
    method = SeCoMethod("resnet_tiny", C, queue_size=16, seed=0, cosine_steps=4)
    engine = _engine(method)
    engine.step(_series())
    state = engine.training_state(engine.pos, {}, 0, [])
    assert state["scheduler"]["last_epoch"] == 1
    other = _engine(SeCoMethod("resnet_tiny", C, queue_size=16, seed=0, cosine_steps=4))
    other.restore(state)
    assert other.opt.param_groups[0]["lr"] == pytest.approx(engine.opt.param_groups[0]["lr"])
    assert other.opt.param_groups[0]["lr"] < 0.03


def test_in_memory_training_is_seeded_and_reports_history() -> None:
    g = np.random.default_rng(0)
    samples = {
        "images": g.random((12, 3, C, 32, 32), dtype=np.float32),
        "valid": np.ones((12, 3, 32, 32), dtype=bool),
    }

    def run() -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        method = SeCoMethod("resnet_tiny", C, queue_size=16, seed=0)
        hist = train_in_memory(
            method, samples, [0.5] * C, [0.3] * C, steps=4, batch_size=4, probe_every=2
        )
        return hist, method.state_dict()

    (h1, s1), (h2, s2) = run(), run()
    assert [e["step"] for e in h1] == [0, 2, 4]
    assert h1[1:] == h2[1:]
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
