"""Pretraining checkpoints and resume, on the real worker loop in this process (no Ray cluster).

``train_loop`` is the function Ray Train runs on every worker; here the few ``ray.train`` calls it
makes are replaced by a harness that feeds the same batches every epoch (as the deterministic
ingest of ``runner.data_config`` does), keeps every reported checkpoint in a run directory, and
can "kill" the run right after a given checkpoint. One rank, CPU, one thread: an interrupted and
resumed run must then end bit-for-bit where the uninterrupted one does.
"""

from __future__ import annotations

import io
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import ray.train
import ray.train.torch
import torch
from earthloop.checkpoints import (
    META_FILE,
    STATE_FILE,
    CheckpointError,
    check_plain,
    list_candidates,
    load_state_file,
    save_checkpoint,
)
from earthloop.config import PretrainConfig
from earthloop.pretrain.engine import Engine, Position, Schedule, load_state, rng_state
from earthloop.pretrain.loop import EpochSlices, WorkerSetup, train_loop
from earthloop.pretrain.methods import build_method

CHANNELS = 4
BATCHES_PER_EPOCH = 6
EPOCHS = 3


class Killed(Exception):
    """Stands in for the driver or a worker dying right after a checkpoint was stored."""


def _batches() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    return [
        {
            "images": torch.rand(4, 3, CHANNELS, 32, 32, generator=g),
            "valid": torch.ones(4, 3, 32, 32, dtype=torch.bool),
        }
        for _ in range(BATCHES_PER_EPOCH)
    ]


class Harness:
    """The ``ray.train`` surface ``train_loop`` uses, backed by a run directory on disk."""

    def __init__(
        self, run_dir: Path, kill_after_step: int | None = None, *, one_stream: bool = False
    ) -> None:
        self.run_dir = run_dir
        self.kill_after_step = kill_after_step
        self.reports: list[dict[str, Any]] = []
        self.resume_from: str | None = None
        self.batches = _batches()
        self.trained_batches = 0
        # one_stream: the shard carries every epoch (as runner.training_data builds it), so
        # iterating it again would restart the pipeline; streams counts those (re)starts
        self.one_stream = one_stream
        self.streams = 0
        self.pulled = 0  # batches taken from the shard

    def install(self, mp: pytest.MonkeyPatch) -> None:
        ctx = SimpleNamespace(get_world_rank=lambda: 0, get_world_size=lambda: 1)
        mp.setattr(ray.train, "get_context", lambda: ctx)
        mp.setattr(ray.train, "get_checkpoint", self.get_checkpoint)
        mp.setattr(ray.train, "get_dataset_shard", lambda name: self)
        mp.setattr(ray.train, "report", self.report)
        mp.setattr(ray.train.torch, "get_device", lambda: torch.device("cpu"))
        mp.setattr(ray.train.torch, "prepare_model", lambda model, **kw: model)

    def get_checkpoint(self) -> ray.train.Checkpoint | None:
        return ray.train.Checkpoint(self.resume_from) if self.resume_from else None

    def iter_torch_batches(self, **kwargs: Any) -> Any:
        self.streams += 1
        epochs = EPOCHS if self.one_stream else 1
        for batch in self.batches * epochs:  # the same order every epoch
            self.pulled += 1
            yield batch

    def report(self, metrics: dict[str, Any], checkpoint: Any = None) -> None:
        entry = dict(metrics)
        if checkpoint is not None:
            dest = self.run_dir / f"checkpoint_{len(list(self.run_dir.glob('checkpoint_*'))):06d}"
            shutil.copytree(checkpoint.path, dest)
            entry["checkpoint"] = str(dest)
        self.reports.append(entry)
        if checkpoint is not None and metrics["step"] == self.kill_after_step:
            raise Killed(f"killed after the checkpoint at step {metrics['step']}")

    def newest(self) -> str:
        return str(max(self.run_dir.glob("checkpoint_*")))

    def epoch_ends(self) -> list[tuple[int, int]]:
        return [(int(r["epoch"]), int(r["step"])) for r in self.reports if r["kind"] == "epoch"]


def _config(**over: Any) -> dict[str, Any]:
    pc = PretrainConfig(
        backbone="resnet_tiny",
        batch_size=4,
        queue_size=16,
        epochs=EPOCHS,
        checkpoint_every=4,
        log_every_s=1000,
        **over,
    )
    setup = WorkerSetup(
        pretrain=pc, mean=[0.0] * CHANNELS, std=[1.0] * CHANNELS, run_name="t", job_name="test"
    )
    return {"setup": setup}


def _run(h: Harness, mp: pytest.MonkeyPatch, **over: Any) -> None:
    config = _config(**over)
    if h.one_stream:
        config["setup"] = replace(config["setup"], batches_per_epoch=BATCHES_PER_EPOCH)
    with mp.context() as m:
        h.install(m)
        train_loop(config)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Harness:
    run = tmp_path_factory.mktemp("uninterrupted")
    h = Harness(run)
    with pytest.MonkeyPatch.context() as mp:
        _run(h, mp)
    return h


def _weights(checkpoint_dir: str) -> dict[str, torch.Tensor]:
    return load_state(checkpoint_dir)["model"]


def _assert_same_model(a: str, b: str) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, different[:5]


def test_uninterrupted_run_steps_and_epochs(uninterrupted: Harness) -> None:
    assert uninterrupted.epoch_ends() == [(1, 6), (2, 12), (3, 18)]
    assert uninterrupted.reports[-1]["step"] == EPOCHS * BATCHES_PER_EPOCH


def test_one_stream_crosses_epochs_without_a_restart(
    uninterrupted: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every epoch from one shard iteration: no pipeline restart at an epoch boundary, and the
    run is the per-epoch run bit for bit (same batches, same epoch ends)."""
    h = Harness(tmp_path, one_stream=True)
    _run(h, monkeypatch)
    assert uninterrupted.streams == EPOCHS  # the per-epoch loop restarts the shard each epoch
    assert h.streams == 1
    assert h.epoch_ends() == uninterrupted.epoch_ends() == [(1, 6), (2, 12), (3, 18)]
    _assert_same_model(h.newest(), uninterrupted.newest())


def test_epoch_slices_read_ahead_across_the_boundary() -> None:
    """The next epoch's first batch comes from the already-running stream: with a prefetching
    producer it is ready before the current epoch's last batch is consumed."""
    produced: list[int] = []

    def stream() -> Any:
        for i in range(3 * 4):
            produced.append(i)
            yield i

    def prefetching(it: Any, depth: int) -> Any:  # what iter_torch_batches' prefetch does
        buf = [next(it) for _ in range(depth)]
        for x in it:
            yield buf.pop(0)
            buf.append(x)
        yield from buf

    starts: list[int] = []

    def factory() -> Any:
        starts.append(1)
        return prefetching(iter(stream()), depth=2)

    slices = EpochSlices(factory, per_epoch=4)
    assert list(slices(0))[-1] == 3
    assert 4 in produced  # epoch 1's first batch was read while epoch 0 drained
    assert list(slices(1)) == [4, 5, 6, 7] and list(slices(2)) == [8, 9, 10, 11]
    assert len(starts) == 1
    with pytest.raises(ValueError, match="epochs run in order"):
        slices(1)


def test_started_stream_reads_its_first_batch_before_the_first_epoch() -> None:
    """``start()`` (called before the model is built) reads the first batch in the background;
    epoch 0 then gets it without a second stream, and a resume still skips by count."""
    import threading

    read: list[int] = []
    first_read = threading.Event()

    def stream() -> Any:
        for i in range(12):
            read.append(i)
            if i == 0:
                first_read.set()
            yield i

    slices = EpochSlices(stream, per_epoch=4)
    slices.start()
    assert first_read.wait(5), "start() did not read the first batch"
    assert read[:1] == [0]
    assert list(slices(0)) == [0, 1, 2, 3] and slices.streams_started == 1

    resumed = EpochSlices(stream, per_epoch=4)
    resumed.start()
    assert list(resumed(2)) == [8, 9, 10, 11] and resumed.streams_started == 1


def test_started_stream_raises_its_first_read_error_at_the_first_epoch() -> None:
    """A failure while the first batch is read in the background surfaces in training."""

    def broken() -> Any:
        raise OSError("index unreadable")
        yield  # a generator: the error comes on the first read, as from a stream

    slices = EpochSlices(broken, per_epoch=2)
    slices.start()  # does not raise: nothing waits on the thread yet
    with pytest.raises(OSError, match="index unreadable"):
        list(slices(0))


def test_one_stream_resume_skips_earlier_epochs_by_count(
    uninterrupted: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed at step 8 (epoch 2, batch 2): a restarted worker's fresh stream skips epoch 1 and
    the 2 trained batches (read, not trained) and ends where the uninterrupted run ends."""
    h = Harness(tmp_path, kill_after_step=8, one_stream=True)
    with pytest.raises(Killed):
        _run(h, monkeypatch)
    h2 = Harness(tmp_path, one_stream=True)
    h2.resume_from = h.newest()
    _run(h2, monkeypatch)
    assert h2.streams == 1 and h2.pulled == EPOCHS * BATCHES_PER_EPOCH
    assert h2.epoch_ends() == [(2, 12), (3, 18)]
    _assert_same_model(h2.newest(), uninterrupted.newest())


def test_killed_mid_epoch_resumes_inside_the_epoch(
    uninterrupted: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed at step 8 (epoch 2, batch 2): the resumed run skips those 2 batches, not replays."""
    h = Harness(tmp_path, kill_after_step=8)
    with pytest.raises(Killed):
        _run(h, monkeypatch)
    meta = load_state(h.newest())
    assert (meta["step"], meta["epoch"], meta["batch_in_epoch"]) == (8, 1, 2)

    h2 = Harness(tmp_path)
    h2.resume_from = h.newest()
    _run(h2, monkeypatch)
    assert h2.reports[-1]["step"] == uninterrupted.reports[-1]["step"] == 18
    assert h2.epoch_ends() == [(2, 12), (3, 18)]  # epoch 2 ends at the same step as before
    assert h2.reports[0]["resumed_from_step"] == 8
    # same weights, queues, RNG streams: the continuation is the uninterrupted run
    _assert_same_model(h2.newest(), uninterrupted.newest())


def test_truncated_newest_checkpoint_falls_back_and_names_the_file(
    uninterrupted: Harness,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(tmp_path, kill_after_step=8)
    with pytest.raises(Killed):
        _run(h, monkeypatch)
    broken = Path(h.newest()) / STATE_FILE
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # a write cut short

    h2 = Harness(tmp_path)
    h2.resume_from = h.newest()  # what Ray hands back: its latest checkpoint, the broken one
    with caplog.at_level(logging.WARNING, logger="earthloop.pretrain"):
        _run(h2, monkeypatch)
    text = caplog.text
    assert str(broken) in text and "truncated or corrupt" in text
    assert "falling back to checkpoint" in text and "(step 6)" in text  # the epoch-end one
    assert h2.reports[0]["resumed_from_step"] == 6
    assert h2.epoch_ends() == [(2, 12), (3, 18)]
    _assert_same_model(h2.newest(), uninterrupted.newest())


def test_no_loadable_checkpoint_is_an_error_naming_every_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, kill_after_step=4)
    with pytest.raises(Killed):
        _run(h, monkeypatch)
    (Path(h.newest()) / STATE_FILE).write_bytes(b"PK\x03\x04 not a zip")
    h2 = Harness(tmp_path)
    h2.resume_from = h.newest()
    with pytest.raises(CheckpointError) as err:
        _run(h2, monkeypatch)
    assert str(Path(h.newest()) / STATE_FILE) in str(err.value)
    assert "no checkpoint loads" in str(err.value)


def test_checkpoints_load_with_weights_only(uninterrupted: Harness) -> None:
    state = torch.load(
        Path(uninterrupted.newest()) / STATE_FILE, map_location="cpu", weights_only=True
    )
    assert state["format"] == 2 and state["step"] == 18
    assert isinstance(state["rng"][0]["torch"], torch.Tensor)
    assert (Path(uninterrupted.newest()) / META_FILE).exists()


def test_a_pickled_object_in_the_state_is_refused_at_save_time(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"state\['rng'\]\['numpy'\].*numpy.ndarray"):
        save_checkpoint(tmp_path, {"rng": {"numpy": np.zeros(3)}}, {"step": 1})
    check_plain({"ok": [1, 2.0, "x", None, torch.zeros(2), {"n": (1, 2)}]})


def test_a_file_holding_pickled_objects_is_refused_with_its_name(tmp_path: Path) -> None:
    f = tmp_path / STATE_FILE
    torch.save({"step": 1, "cfg": SimpleNamespace(a=1)}, f)
    with pytest.raises(CheckpointError, match=rf"{f}.*weights_only"):
        load_state_file(f)


def test_candidates_order_by_step_not_name(tmp_path: Path) -> None:
    """Tune reuses checkpoint indices after a stale restore: names do not tell the newest."""
    import pyarrow.fs

    for name, step in [("checkpoint_000001", 30), ("checkpoint_000002", 10), ("checkpoint_3", 20)]:
        d = tmp_path / name
        d.mkdir()
        save_checkpoint(d, {"step": step}, {"step": step})
    (tmp_path / "checkpoint_000009").mkdir()  # no meta: an upload cut short, tried last
    got = [c.name for c in list_candidates(pyarrow.fs.LocalFileSystem(), str(tmp_path))]
    assert got == ["checkpoint_000001", "checkpoint_3", "checkpoint_000002", "checkpoint_000009"]


def test_seco_checkpoint_holds_nothing_twice(tmp_path: Path) -> None:
    """A resumable SeCo checkpoint is query encoder + key encoder + queues + SGD momentum.

    The file is the sum of those tensors (plus a few KB), i.e. no copy of the model is stored
    twice; measured for the demo's resnet18 in docs/methods.md.
    """
    pc = PretrainConfig(backbone="resnet_tiny", queue_size=64)
    method = build_method(pc, CHANNELS)
    engine = Engine(
        method,
        Schedule.from_config(pc),
        mean=torch.zeros(CHANNELS),
        std=torch.ones(CHANNELS),
        device=torch.device("cpu"),
        batch_size=4,
    )
    engine.step({"images": torch.rand(4, 3, CHANNELS, 32, 32), "valid": torch.ones(4, 3, 32, 32)})
    model, opt = method.model, engine.opt
    state = engine.training_state(Position(1, 0, 1), {}, 1, [rng_state(method)])
    save_checkpoint(tmp_path, state, {"step": 1})
    tensor_bytes = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    tensor_bytes += sum(
        v.numel() * v.element_size()
        for s in opt.state_dict()["state"].values()
        for v in s.values()
        if isinstance(v, torch.Tensor)
    )
    size = (tmp_path / STATE_FILE).stat().st_size
    assert tensor_bytes < size < tensor_bytes * 1.05 + 200_000, (size, tensor_bytes)
    assert all(v.dtype in {torch.float32, torch.int64} for v in state["model"].values())
    buf = io.BytesIO()
    torch.save(state["model"], buf)
    assert buf.tell() < size  # the optimiser state is not a second copy of the model
