"""Moving host-drawn values to the training device without making the host wait.

The methods draw their random parameters (crops, jitter, dates, pixel scores) from a private
CPU generator: one state to checkpoint, the same numbers on every device. Those small tensors
then go to the device every step, and so does the batch. A plain ``.to(device)`` of a host
tensor waits for every kernel already queued before it copies (PyTorch synchronises the stream
after a blocking copy), so a SeCo step that moved some fifty of them drained the GPU's queue
fifty times and the host could never run ahead to prepare the next step. :func:`upload` copies
into page-locked memory first and then copies with ``non_blocking=True``: the copy is queued
behind the step's kernels, and PyTorch's caching host allocator keeps the page-locked source
alive until it has run. (``non_blocking`` from ordinary pageable memory may still block while
the driver stages the buffer.)

Large random fields (dense contrast's per-pixel noise) are drawn on the device itself from a
generator seeded by the private one (:func:`device_generator`): drawing megabytes on the host
and copying them up costs more than the step's own arithmetic on a GPU.

tests/pretrain/test_device_syncs.py runs a step of each method on PyTorch's ``meta`` device,
where any read of a device value fails, and counts blocking uploads.
"""

from __future__ import annotations

import torch
from torch import Tensor


def upload(x: Tensor, device: torch.device, dtype: torch.dtype | None = None) -> Tensor:
    """``x`` on ``device`` (and ``dtype``), without waiting for the device's queued work."""
    if x.device.type == "cpu" and device.type == "cuda":
        x = (x if x.is_pinned() else x.pin_memory()).to(device, non_blocking=True)
    else:
        x = x.to(device, non_blocking=device.type != "cpu")
    return x if dtype is None else x.to(dtype)


def autocast_type(device: torch.device) -> str:
    """The autocast device type for ``device``: its own where autocast has one, else the CPU's."""
    return device.type if device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"


def device_generator(host: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """A generator on ``device`` seeded from the next draw of ``host`` (``host`` on the CPU).

    The device stream is a function of the host generator's state, so a checkpointed run
    resumes with the same numbers. Seeding is host-side bookkeeping: no device work, no wait.
    """
    if device.type == "cpu":
        return host
    if device.type == "meta":  # no data there (the sync tests): any generator will do
        return None
    seed = int(torch.randint(0, 2**62, (1,), generator=host).item())  # a host tensor: no sync
    return torch.Generator(device=device).manual_seed(seed)
