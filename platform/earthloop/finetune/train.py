"""The training loop of one fine-tuning trial, in plain torch (Tune only wraps it).

Keeping Ray out of this loop lets the same code run as a Tune trial, in the benchmark's plain
Python loop (the overhead comparison must time identical work) and in unit tests.

Budget in optimiser steps, not epochs: a 1 % subset has a handful of chips and a 10 % one ten
times more, so equal epochs would give the small budget ten times fewer updates and confound
"fewer labels" with "less training". Every ``eval_every`` steps the model is scored on the val
split (one Tune iteration, what ASHA compares); the test split is scored whenever val improves,
and the test scores at the best val iteration are the trial's result (model selection on val,
never on test).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from earthloop.finetune.data import TrialArrays
from earthloop.finetune.metrics import SegmentationMeter, classification_metrics, multilabel_metrics
from earthloop.finetune.model import param_groups
from earthloop.inference import predict
from earthloop.models.on_device import upload
from earthloop.models.task import TaskModel, class_mask

__all__ = ["EvalSpec", "TrainParams", "balanced_weights", "evaluate", "fit"]

StateFn = Callable[[], dict[str, Any]]
ReportFn = Callable[[dict[str, Any], StateFn | None], None]
# what is scored at the best val iteration: one test set, or named ones ("test", "heldout")
Scored = TrialArrays | dict[str, TrialArrays] | None


@dataclass
class TrainParams:
    lr: float
    weight_decay: float
    encoder_lr_mult: float
    mode: str  # linear | full
    batch_size: int
    max_steps: int
    eval_every: int
    seed: int
    augment: bool = True
    checkpoint_every: int = 1  # evaluations
    eval_batch: int = 64
    warmup_steps: int | None = None  # default: 10 % of max_steps, at most 50
    class_weights: str = "none"  # none | balanced (median-frequency, FinetuneConfig)
    train_crop: int | None = None  # segmentation: random crops of this size (FinetuneConfig)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalSpec:
    task: str
    num_outputs: int
    class_ids: list[int]
    class_names: dict[int, str]
    ignore_index: int | None
    boundary_px: int
    primary: str

    def class_mask(self) -> Tensor:
        """Logit channels that are real classes (the ignore class is never predicted)."""
        return class_mask(self.task, self.num_outputs, self.class_ids)


class _BatchStream:
    """Concatenated seeded permutations of the training indices; checkpointable position."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.rng = np.random.default_rng(seed)
        self.buf: list[int] = []

    def next(self, size: int) -> np.ndarray:
        while len(self.buf) < size:
            self.buf.extend(self.rng.permutation(self.n).tolist())
        out, self.buf = self.buf[:size], self.buf[size:]
        return np.asarray(out, dtype=np.int64)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "buf": list(self.buf)}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.rng.bit_generator.state = s["rng"]
        self.buf = list(s["buf"])


def _augment(x: Tensor, y: Tensor | None, gen: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """Per-sample random flip + 90-degree rotation (the dihedral group: no resampling, no
    interpolation of labels, and overhead imagery has no canonical "up").

    The draws are made per sample on the host, in the order they always were (so a seed gives
    the same trial); the samples are then transformed in at most 8 groups, one per element of
    the group, not one by one: on a GPU each per-sample operation was a kernel launch, and the
    fine-tuning trials were launch-bound (docs/benchmarks.md#gpu).
    """
    ks: list[int] = []
    flips: list[bool] = []
    for _ in range(x.shape[0]):
        ks.append(int(torch.randint(0, 4, (1,), generator=gen)))
        flips.append(bool(torch.randint(0, 2, (1,), generator=gen)))
    groups: dict[tuple[int, bool], list[int]] = {}
    for i, key in enumerate(zip(ks, flips, strict=True)):
        groups.setdefault(key, []).append(i)
    rows = {key: upload(torch.tensor(idx), x.device) for key, idx in groups.items()}
    return _dihedral(x, rows), (_dihedral(y, rows) if y is not None else None)


def _dihedral(t: Tensor, rows: dict[tuple[int, bool], Tensor]) -> Tensor:
    """``t`` with the samples of ``rows[(k, flip)]`` rotated ``k`` quarter turns, then flipped."""
    out = torch.empty_like(t)
    for (k, flip), idx in rows.items():
        part = torch.rot90(t.index_select(0, idx), k, dims=(-2, -1))
        out.index_copy_(0, idx, part.flip(-1) if flip else part)
    return out


def _crop_offsets(
    n: int, h: int, w: int, size: int, gen: torch.Generator
) -> tuple[list[int], list[int]]:
    """Top-left corners of ``n`` random ``size`` windows in ``h`` x ``w``, drawn on the host."""
    if size > h or size > w:
        raise ValueError(f"finetune.train_crop={size} is larger than the {h}x{w} chips")
    rs: list[int] = []
    cs: list[int] = []
    for _ in range(n):
        rs.append(int(torch.randint(0, h - size + 1, (1,), generator=gen)))
        cs.append(int(torch.randint(0, w - size + 1, (1,), generator=gen)))
    return rs, cs


def _crop_windows(t: Tensor, rs: list[int], cs: list[int], size: int) -> Tensor:
    """Sample ``i``'s ``size`` window at ``(rs[i], cs[i])`` of ``t`` (..., H, W), one gather."""
    dev = t.device
    span = torch.arange(size, device=dev)
    rows = upload(torch.tensor(rs), dev)[:, None] + span  # (B, S)
    cols = upload(torch.tensor(cs), dev)[:, None] + span
    batch = torch.arange(t.shape[0], device=dev)[:, None, None]
    moved = t.movedim((-2, -1), (1, 2))  # (B, H, W, ...)
    return moved[batch, rows[:, :, None], cols[:, None, :]].movedim((1, 2), (-2, -1)).contiguous()


def _random_crop(x: Tensor, y: Tensor, size: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """A random ``size`` window per sample, the same window for image and label raster.

    Why: on a CPU the step cost follows the pixels, and a few labelled chips are fitted by many
    cheap steps sooner than by a few whole-chip ones (docs/finetune.md#demo-crops).
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if size > h or size > w:
        raise ValueError(f"finetune.train_crop={size} is larger than the {h}x{w} chips")
    if size == h and size == w:
        return x, y
    rs, cs = _crop_offsets(int(x.shape[0]), h, w, size, gen)
    return _crop_windows(x, rs, cs, size), _crop_windows(y, rs, cs, size)


def _any_labelled(
    targets: np.ndarray,
    idx: np.ndarray,
    window: tuple[list[int], list[int], int] | None,
    ignore: int,
) -> bool:
    """Whether the batch (chips ``idx`` of the host ``targets``, cropped) has a labelled pixel.

    Decided on the host copy of the labels: the same test on the device batch would wait for
    the step's kernels (a device sync per step).
    """
    for j, i in enumerate(idx.tolist()):
        t = targets[i]
        if window is not None:
            rs, cs, size = window
            t = t[..., rs[j] : rs[j] + size, cs[j] : cs[j] + size]
        if (t != ignore).any():
            return True
    return False


def balanced_weights(targets: np.ndarray, spec: EvalSpec) -> Tensor | None:
    """Median-frequency class weights (SegNet) from the labelled targets of one trial.

    Weight ``median(f) / f_c`` over the classes the subset holds; classes it lacks get weight 0
    (they cannot be learnt from it anyway) and the ignore class is never counted. Computed on the
    trial's own subset, so a 1 % cell and the full pool are each balanced for what they see.
    None for multi-label tasks, whose loss is per class already.
    """
    if spec.task == "multilabel":
        return None
    t = np.asarray(targets).reshape(-1)
    if spec.ignore_index is not None:
        t = t[t != spec.ignore_index]
    t = t[(t >= 0) & (t < spec.num_outputs)]
    counts = np.bincount(t.astype(np.int64), minlength=spec.num_outputs).astype(np.float64)
    present = counts > 0
    if not present.any():
        return None
    freq = counts / counts.sum()
    w = np.zeros(spec.num_outputs, dtype=np.float64)
    w[present] = float(np.median(freq[present])) / freq[present]
    return torch.from_numpy(w.astype(np.float32))


def _loss(
    logits: Tensor,
    y: Tensor,
    spec: EvalSpec,
    mask: Tensor,
    weight: Tensor | None = None,
    labelled: bool | None = None,
) -> Tensor:
    """The task's loss; ``labelled``: whether any target pixel is labelled, when the caller
    knows it from the host (else it is read from ``y``, a device sync on a GPU)."""
    if spec.task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, y.float())
    shape = [1, -1] + [1] * (logits.ndim - 2)
    logits = logits.masked_fill(~mask.view(shape), -1e4)
    ignore = spec.ignore_index if spec.ignore_index is not None else -100
    if spec.task == "segmentation":
        if labelled is None:
            labelled = bool((y != ignore).any())
        if not labelled:
            return logits.sum() * 0.0  # a batch of only unlabelled pixels teaches nothing
    return F.cross_entropy(logits, y, weight=weight, ignore_index=ignore)


def evaluate(
    model: TaskModel, data: TrialArrays, spec: EvalSpec, batch: int = 64
) -> dict[str, Any]:
    """Every metric of the task on ``data`` (per-class values under ``per_class``)."""
    pred = predict(model, data.images, spec.class_ids, batch=batch)
    if spec.task == "segmentation":
        meter = SegmentationMeter(
            spec.num_outputs,
            ignore_index=spec.ignore_index,
            boundary_px=spec.boundary_px,
            classes=spec.class_ids,
        )
        meter.update(pred, data.targets, boundary=data.boundary)
        m = meter.compute()
        per = {spec.class_names.get(c, str(c)): v for c, v in m.pop("iou").items()}
        m.pop("boundary_iou", None)
        m["per_class"] = per
        return m
    if spec.task == "classification":
        m = classification_metrics(pred, data.targets, spec.num_outputs, classes=spec.class_ids)
        m["per_class"] = {spec.class_names.get(c, str(c)): v for c, v in m.pop("iou").items()}
        return m
    m = multilabel_metrics(pred, data.targets)
    m["per_class"] = {
        spec.class_names.get(spec.class_ids[k], str(k)): v for k, v in m.pop("ap").items()
    }
    return m


def _scalars(prefix: str, m: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in m.items():
        if k == "per_class":
            out[f"{prefix}per_class"] = json.dumps(
                {
                    n: (None if isinstance(x, float) and math.isnan(x) else round(float(x), 6))
                    for n, x in v.items()
                },
                sort_keys=True,
            )
        elif isinstance(v, int | float | np.floating | np.integer):
            out[f"{prefix}{k}"] = float(v)
    return out


def _schedule(step: int, max_steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 0: the usual fine-tuning schedule."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, max_steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


@dataclass
class _Loop:
    """The mutable state of one trial's training: everything a checkpoint must restore."""

    model: TaskModel
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    stream: _BatchStream
    gen: torch.Generator
    step: int = 0
    iteration: int = 0
    best: dict[str, Any] = field(
        default_factory=lambda: {"best_val": -math.inf, "best_iteration": 0}
    )

    @classmethod
    def start(cls, model: TaskModel, n_train: int, p: TrainParams) -> _Loop:
        torch.manual_seed(p.seed)
        gen = torch.Generator().manual_seed(p.seed + 1)
        opt = torch.optim.AdamW(param_groups(model, p.lr, p.weight_decay, p.encoder_lr_mult))
        warmup = (
            p.warmup_steps if p.warmup_steps is not None else min(50, max(1, p.max_steps // 10))
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, p.max_steps, warmup))
        return cls(model, opt, sched, _BatchStream(n_train, p.seed), gen)

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.stream.load_state_dict(state["stream"])
        self.gen.set_state(state["generator"])
        self.step, self.iteration = int(state["step"]), int(state["iteration"])
        self.best = dict(state["best"])

    def state_fn(self) -> StateFn:
        """The checkpoint of *now*: step, iteration and best are copied at this evaluation."""
        snap = (self.step, self.iteration, dict(self.best))

        def state_fn() -> dict[str, Any]:
            return {
                "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "stream": self.stream.state_dict(),
                "generator": self.gen.get_state(),
                "step": snap[0],
                "iteration": snap[1],
                "best": snap[2],
            }

        return state_fn

    def train_step(
        self,
        x_all: Tensor,
        y_all: Tensor,
        p: TrainParams,
        spec: EvalSpec,
        mask: Tensor,
        weight: Tensor | None = None,
        y_host: np.ndarray | None = None,
    ) -> tuple[Tensor, int]:
        """One optimiser step on the next batch; returns (loss, batch size).

        The loss stays on the device (``fit`` reads the mean at evaluations); ``y_host``, the
        host copy of ``y_all``, lets the all-unlabelled test run without reading the device.
        """
        chips = self.stream.next(p.batch_size)
        idx = upload(torch.from_numpy(chips), x_all.device)
        x, y = x_all[idx], y_all[idx]
        window = None
        h, w = int(x.shape[-2]), int(x.shape[-1])
        size = p.train_crop
        if size is not None and spec.task == "segmentation" and (size, size) != (h, w):
            rs, cs = _crop_offsets(len(chips), h, w, size, self.gen)
            x, y = _crop_windows(x, rs, cs, size), _crop_windows(y, rs, cs, size)
            window = (rs, cs, size)
        if p.augment:
            x, y_aug = _augment(x, y if spec.task == "segmentation" else None, self.gen)
            if y_aug is not None:
                y = y_aug
        labelled = None
        if y_host is not None and spec.task == "segmentation":
            ignore = spec.ignore_index if spec.ignore_index is not None else -100
            labelled = _any_labelled(y_host, chips, window, ignore)
        loss = _loss(self.model(x), y, spec, mask, weight, labelled)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        self.step += 1
        return loss.detach(), int(x.shape[0])

    def evaluate(
        self, val: TrialArrays, test: Scored, spec: EvalSpec, p: TrainParams
    ) -> tuple[dict[str, Any], float]:
        """Score val; score the test set(s) when val improved (or at the first evaluation)."""
        self.iteration += 1
        best = self.best
        val_m = evaluate(self.model, val, spec, p.eval_batch)
        score = float(val_m.get(spec.primary, float("nan")))
        improved = not math.isnan(score) and score > best["best_val"]
        sets = {"test": test} if isinstance(test, TrialArrays) else dict(test or {})
        if improved or (self.iteration == 1 and sets and "test" not in best):
            best["best_val"] = score if not math.isnan(score) else best["best_val"]
            best["best_iteration"] = self.iteration
            if sets:
                # every scored set at the same (best-val) weights: a held-out region is judged
                # by the model selected on val, never by its own best iteration
                best["test"] = {
                    k: v
                    for name, arrays in sets.items()
                    for k, v in _scalars(
                        f"{name}_", evaluate(self.model, arrays, spec, p.eval_batch)
                    ).items()
                }
        return val_m, score


def fit(
    model: TaskModel,
    train: TrialArrays,
    val: TrialArrays,
    test: Scored,
    p: TrainParams,
    spec: EvalSpec,
    *,
    report: ReportFn | None = None,
    state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train for ``p.max_steps`` (or from ``state`` on), evaluating every ``p.eval_every`` steps.

    ``report(metrics, state_fn)`` is called after every evaluation; ``state_fn`` (None when no
    checkpoint is due) returns everything needed to resume. Returns the last metrics.
    """
    if len(train) == 0:
        raise ValueError("the labelled training subset is empty")
    loop = _Loop.start(model, len(train), p)
    if state is not None:
        loop.load(state)
    start_step = loop.step
    # the labelled subset is small: it lives on the model's device for the whole trial, so a
    # GPU trial copies it once instead of once per step
    device = next(model.parameters()).device
    mask = spec.class_mask().to(device)
    x_all = torch.from_numpy(train.images).to(device)
    y_all = torch.from_numpy(train.targets).to(device)
    y_host = np.asarray(train.targets)
    if p.class_weights not in ("none", "balanced"):
        raise ValueError(f"class_weights must be 'none' or 'balanced', got {p.class_weights!r}")
    weight = balanced_weights(train.targets, spec) if p.class_weights == "balanced" else None
    weight = weight.to(device) if weight is not None else None
    model.train()
    last: dict[str, Any] = {}
    t0 = time.perf_counter()
    samples = 0
    # summed on the device; read once per evaluation (which reads the device anyway)
    loss_sum: Tensor | float = 0.0
    loss_n = 0
    while loop.step < p.max_steps:
        loss, n = loop.train_step(x_all, y_all, p, spec, mask, weight, y_host)
        samples += n
        loss_sum += loss
        loss_n += 1
        if loop.step % p.eval_every != 0 and loop.step != p.max_steps:
            continue
        val_m, score = loop.evaluate(val, test, spec, p)
        last = {
            "step": loop.step,
            "evals": loop.iteration,
            "start_step": start_step,
            "train_loss": float(loss_sum) / max(loss_n, 1),
            "samples_per_s": samples / max(time.perf_counter() - t0, 1e-9),
            "n_labelled": len(train),
            **_scalars("val_", val_m),
            "val_metric": score,
            "best_val_metric": float(loop.best["best_val"]),
            "best_iteration": int(loop.best["best_iteration"]),
            **loop.best.get("test", {}),
        }
        loss_sum, loss_n = 0.0, 0
        due = loop.iteration % p.checkpoint_every == 0 or loop.step >= p.max_steps
        if report is not None:
            report(last, loop.state_fn() if due else None)
    return last
