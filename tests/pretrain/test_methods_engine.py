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
    LabelledSubset,
    Method,
    SeCoMethod,
    build_method,
    load_chip_ids,
    lr_factor,
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
    return PretrainConfig(
        method=method, backbone="resnet_tiny", queue_size=16, cscl_labelled_chips=["c0"]
    )


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
    ("name", "optimiser", "lr", "scale"),
    [
        # SeCo's 0.03 is the reference code's lr for batch 256: linear scaling to the batch (32)
        ("seco", torch.optim.SGD, 0.03, 32 / 256),
        # AdamW defaults of ours, not tied to a batch size: not scaled
        ("dense", torch.optim.AdamW, 1e-3, 1.0),
        ("cscl", torch.optim.AdamW, 1e-3, 1.0),
    ],
)
def test_each_method_owns_its_optimiser_and_default_lr(
    name: str, optimiser: type, lr: float, scale: float
) -> None:
    method = build_method(_cfg(name), C)
    opt = method.optimizer()
    assert isinstance(opt, optimiser)
    assert opt.param_groups[0]["lr"] == pytest.approx(lr * scale)
    assert build_method(_cfg(name).model_copy(update={"lr": 0.5}), C).optimizer().param_groups[0][
        "lr"
    ] == pytest.approx(0.5 * scale)
    unscaled = _cfg(name).model_copy(update={"lr_scaling": "none"})
    assert build_method(unscaled, C).lr == pytest.approx(lr)


def test_linear_lr_scaling_follows_the_batch() -> None:
    cfg = _cfg("seco")
    lrs = [build_method(cfg.model_copy(update={"batch_size": b}), C).lr for b in (64, 256, 512)]
    assert lrs == pytest.approx([0.0075, 0.03, 0.06])


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
    with pytest.raises(ConfigError, match="cscl_labelled_chips"):
        CSCLMethod.check(PretrainConfig(method="cscl", probe={"labels": "m.json"}))
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


def test_a_mid_epoch_checkpoint_is_not_counted_as_data_wait() -> None:
    """Batches are ready at once, a step checkpoint takes 0.3 s: the epoch's data wait stays near
    zero and the checkpoint shows as bookkeeping (the demo showed 70-78 % "data wait" in every
    epoch that held a checkpoint while its stream was ahead)."""
    import time

    class SlowCheckpoint(_Recorder):
        def checkpoint(self, engine: Engine, state: Any, metrics: dict[str, Any]) -> None:
            if metrics["kind"] == "step":
                time.sleep(0.3)
            super().checkpoint(engine, state, metrics)

    hooks = SlowCheckpoint()
    engine = _engine(build_method(_cfg("seco"), C), hooks, epochs=1, checkpoint_every=2)
    batches = [_series(seed=i) for i in range(3)]
    engine.run(lambda epoch: iter(batches))
    (m,) = hooks.epochs
    assert m["bookkeeping_s"] >= 0.3
    assert m["data_wait_fraction"] < 0.05, m


def test_lr_schedule_values() -> None:
    # step: x0.1 at 60 % and 80 % of training (the reference code's epochs 120 and 160 of 200)
    step = [lr_factor("step", p) for p in (0.0, 0.59, 0.6, 0.79, 0.8, 1.0)]
    assert step == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cosine = [lr_factor("cosine", p) for p in (0.0, 0.25, 0.5, 1.0)]
    assert cosine == pytest.approx([1, 0.5 + 0.5 * np.cos(np.pi / 4), 0.5, 0.0])
    assert lr_factor("constant", 0.9) == 1.0
    with pytest.raises(ValueError, match="lr schedule"):
        lr_factor("linear", 0.5)


def test_engine_applies_the_schedule_per_step_and_resume_continues_it() -> None:
    """SeCo's step schedule over 10 steps: 0.03 for 6 steps, 0.003 for 2, 0.0003 for 2."""

    def run(method: Method, steps: int, state: dict[str, Any] | None = None) -> list[float]:
        engine = _engine(method, max_steps=10)
        if state is not None:
            engine.restore(state)
        used = []
        for _ in range(steps):
            engine.step(_series())
            used.append(engine.opt.param_groups[0]["lr"])
        run.state = engine.training_state(engine.pos, {}, 0, [])  # type: ignore[attr-defined]
        return used

    def seco() -> Method:
        return SeCoMethod("resnet_tiny", C, queue_size=16, seed=0, lr=0.03)

    full = run(seco(), 10)
    assert full == pytest.approx([0.03] * 6 + [0.003] * 2 + [0.0003] * 2)
    run(seco(), 7)
    assert run(seco(), 3, copy.deepcopy(run.state)) == pytest.approx(full[7:])  # type: ignore[attr-defined]
    # epochs only: the schedule moves per epoch (0/3, 1/3 -> full lr; 2/3 -> past 0.6)
    assert [SeCoMethod("resnet_tiny", C, lr=1.0).lr_at(e / 3) for e in range(3)] == [1, 1, 0.1]


def test_queue_not_smaller_than_an_epoch_is_refused() -> None:
    cfg = PretrainConfig(queue_size=1024, batch_size=32)
    # 111 locations in batches of 32 (incomplete batches dropped): 96 samples per epoch
    with pytest.raises(ConfigError, match=r"queue_size=1024 is not smaller than the 96 samples"):
        SeCoMethod.check_data(cfg, 111)
    with pytest.raises(ConfigError, match="queue_size=96"):
        SeCoMethod.check_data(cfg.model_copy(update={"queue_size": 96}), 111)
    SeCoMethod.check_data(cfg.model_copy(update={"queue_size": 95, "key_momentum": 0.9}), 111)
    assert DenseMethod.check_data(cfg, 111) == []  # no queue


def test_demo_config_queue_fits_the_demo_data() -> None:
    """The demo pretrains on ~830 train-split locations of demo_world: its queue must pass the
    refusal there, and would be refused on the ~101 locations of the older `demo` preset."""
    from earthloop.config import load_config

    pc = load_config("configs/demo.yaml", []).pretrain
    assert SeCoMethod.check_data(pc, 800) == []
    with pytest.raises(ConfigError, match="queue_size=256"):
        SeCoMethod.check_data(pc, 101)


def test_short_run_warns_that_the_key_encoder_stays_random() -> None:
    # the demo's 3 epochs x 3 steps at momentum 0.999: the key encoder keeps 99 % of its init
    cfg = PretrainConfig(queue_size=64, batch_size=32, epochs=3, key_momentum=0.999)
    (warning,) = SeCoMethod.check_data(cfg, 101)
    assert "9 steps" in warning and "keeps 99%" in warning
    assert SeCoMethod.check_data(cfg.model_copy(update={"epochs": 400}), 101) == []
    assert SeCoMethod.check_data(cfg.model_copy(update={"key_momentum": 0.8}), 101) == []


def test_cscl_inputs_keep_background_and_unlabel_clouds() -> None:
    method = build_method(_cfg("cscl"), C)
    batch = _chips(1)
    batch["label"][0, :2] = 0  # background rows
    batch["valid"][0, :, :3] = False  # a cloudy strip
    label = method.inputs(batch, torch.full((C,), 0.5), torch.full((C,), 0.3))["label"]
    assert (label[0, :, :3] == -1).all()  # clouds: no label
    assert (label[0, :2, 3:] == 0).all()  # background: class 0, not "unlabelled"


def test_cscl_labelled_subset_drops_every_chip_outside_it(tmp_path: Any) -> None:
    subset = LabelledSubset(frozenset({"a", "c"}))
    batch = {
        "chip_id": np.array(["a", "b", "c", "d"], dtype=object),
        "label": np.arange(4 * 2 * 2).reshape(4, 2, 2),
        "image": np.zeros((4, 1, 2, 2), dtype=np.float32),
    }
    out = subset(batch)
    assert out["chip_id"].tolist() == ["a", "c"]
    # no label of "b" or "d" survives: their values (4..7, 12..15) are gone
    assert sorted(out["label"].ravel().tolist()) == [0, 1, 2, 3, 8, 9, 10, 11]
    assert len(out["image"]) == 2
    assert subset.rows([{"chip_id": "a"}, {"chip_id": "b"}]) == [{"chip_id": "a"}]
    ids = tmp_path / "ids.txt"
    ids.write_text("a  # the first\n\nc\n")
    assert load_chip_ids(str(ids)) == frozenset({"a", "c"})
    (tmp_path / "ids.json").write_text('["x", "y"]')
    assert load_chip_ids(str(tmp_path / "ids.json")) == frozenset({"x", "y"})
    with pytest.raises(ConfigError, match="no file"):
        load_chip_ids(str(tmp_path / "missing.txt"))
    cfg = PretrainConfig(method="cscl", cscl_labelled_chips=str(ids))
    assert CSCLMethod.labelled_subset(cfg) == LabelledSubset(frozenset({"a", "c"}))
    assert SeCoMethod.labelled_subset(cfg) is None


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
    assert [e["step"] for e in h1] == [0, 1, 2, 4]
    assert h1[1:] == h2[1:]
    # the first step's loss is there (a report's first/last pair), without a probe
    assert np.isfinite(h1[1]["loss"]) and set(h1[1]) == {"step", "loss"}
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


@pytest.mark.parametrize("name", ["seco", "dense", "cscl"])
def test_every_method_trains_under_bf16_autocast(name: str) -> None:
    """A GPU worker runs the loss under bf16 autocast. SeCo's views are made in ``forward``,
    and its blur's matrix products came out bf16 and could not be written back into the
    float32 batch: the first step on an H200 failed. CPU autocast reproduces it."""
    from earthloop.config import PretrainConfig
    from earthloop.pretrain.methods import build_method

    torch.manual_seed(0)
    pc = PretrainConfig(method=name, backbone="resnet_tiny", queue_size=64, batch_size=8, seed=0)
    method = build_method(pc, 4)
    if name == "cscl":
        batch = {
            "image": torch.randn(8, 4, 32, 32),
            "valid": torch.ones(8, 32, 32, dtype=torch.bool),
            "label": torch.randint(0, 3, (8, 32, 32)),
        }
    else:
        t = 3 if name == "seco" else 2
        batch = {
            "images": torch.randn(8, t, 4, 32, 32),
            "valid": torch.ones(8, t, 32, 32, dtype=torch.bool),
        }
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method.loss(method.inputs(batch, torch.zeros(4), torch.ones(4)))
    out["loss"].backward()
    assert torch.isfinite(out["loss"].detach()).all()
    grads = [p.grad for p in method.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
