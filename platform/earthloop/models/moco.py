"""MoCo machinery: momentum key encoder, negative queue, all-gather and shuffle-BN.

These follow MoCo (He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation
Learning") and MoCo v2, which SeCo builds on:

* the key encoder is an exponential moving average of the query encoder, so the keys in the queue
  drift slowly and stay comparable with the current queries;
* the queue decouples the number of negatives from the batch size (SeCo: 16384 per subspace);
* keys are all-gathered across data-parallel ranks before they enter the queue, so every rank's
  queue holds the same, globally collected negatives;
* shuffle-BN: batch-norm statistics are per device, so if query and its positive key are encoded in
  the same sub-batch the model can "cheat" by recognising its sub-batch's statistics. MoCo encodes
  the keys in a batch order shuffled *across ranks* and then restores the order.

Everything works without ``torch.distributed`` (single process): gathering is then a no-op and the
shuffle is a within-batch permutation, which changes nothing (batch norm computes the same
statistics over the same samples): shuffle-BN only has an effect across ranks. Under DDP every collective is a plain ``all_gather`` or
``broadcast``, so the gloo backend on CPU works as well as NCCL. Per-rank batch sizes may differ
(e.g. a last incomplete batch): tensors are padded to the largest size for the exchange.
"""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from earthloop.models.on_device import upload

__all__ = [
    "MemoryBankQueue",
    "batch_shuffle",
    "batch_unshuffle",
    "concat_all_gather",
    "copy_frozen",
    "distributed_rank_world",
    "momentum_update",
]


def distributed_rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


M = TypeVar("M", bound=nn.Module)


def copy_frozen(module: M) -> M:
    """A deep copy with gradients off: the initial momentum (key) encoder equals the query one."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, momentum: float) -> None:
    """``target = momentum * target + (1 - momentum) * online`` over parameters.

    Only parameters are averaged, as in MoCo: the key encoder's batch-norm running statistics are
    its own, accumulated while it encodes keys in training mode.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    online_params = list(online.parameters())
    target_params = list(target.parameters())
    if len(online_params) != len(target_params):
        raise ValueError("online and target modules have different parameter lists")
    for p_o, p_t in zip(online_params, target_params, strict=True):
        p_t.mul_(momentum).add_(p_o.detach(), alpha=1.0 - momentum)


class MemoryBankQueue(nn.Module):
    """Fixed-size FIFO of negative keys, ``(size, dim)``, checkpointed as buffers.

    Initialised with random unit vectors, as MoCo does: before the queue has been filled once the
    "negatives" are noise, which is harmless and avoids special-casing a partly empty queue.
    ``enqueue`` overwrites the oldest entries starting at ``ptr`` and wraps around, so any batch
    size works (MoCo asserts ``size % batch == 0``; we do not need to).
    """

    queue: Tensor
    ptr: Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and dim must be >= 1, got {size}, {dim}")
        self.size, self.dim = size, dim
        self.register_buffer("queue", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Append ``keys`` (N, dim), dropping the oldest; only the last ``size`` are kept if N > size."""
        if keys.ndim != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"expected keys of shape (N, {self.dim}), got {tuple(keys.shape)}")
        keys = keys.detach().to(self.queue.device, self.queue.dtype)
        n = keys.shape[0]
        if n == 0:
            return
        if n >= self.size:
            self.queue.copy_(keys[-self.size :])
            self.ptr.zero_()
            return
        # slots computed on the queue's device: reading ptr back to the host (int(self.ptr)) was
        # a device sync per enqueue, three per SeCo step, each stalling a launch-bound GPU step
        slots = (self.ptr + torch.arange(n, device=self.ptr.device)) % self.size
        self.queue.index_copy_(0, slots, keys)
        self.ptr.copy_((self.ptr + n) % self.size)

    def negatives(self) -> Tensor:
        """A detached copy of the queue, safe to use while the next ``enqueue`` happens."""
        return self.queue.clone().detach()

    def forward(self) -> Tensor:
        return self.negatives()


def _gather_sizes(n: int, device: torch.device, world: int) -> list[int]:
    size = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


@torch.no_grad()
def concat_all_gather(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` (dim 0) from all ranks, in rank order; no gradient flows.

    Without an initialised process group it returns ``tensor.detach()`` (same values, also without
    gradient, so code behaves the same in both settings). Ranks may hold different dim-0 sizes.
    """
    _, world = distributed_rank_world()
    if world == 1:
        return tensor.detach()
    sizes = _gather_sizes(tensor.shape[0], tensor.device, world)
    max_n = max(sizes)
    padded = tensor.detach()
    if tensor.shape[0] < max_n:
        pad = tensor.new_zeros((max_n - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([padded, pad], dim=0)
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded.contiguous())
    return torch.cat([g[:n] for g, n in zip(gathered, sizes, strict=True)], dim=0)


@torch.no_grad()
def batch_shuffle(x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Shuffle-BN step 1: give this rank a random slice of the *global* batch.

    Returns the shuffled local batch (same size as ``x``) and the global ``idx_unshuffle`` needed by
    :func:`batch_unshuffle`. Rank 0 draws the permutation (with ``generator`` if given) and
    broadcasts it, so all ranks agree. Single-process: a within-batch permutation.
    """
    rank, world = distributed_rank_world()
    if world == 1:
        perm = upload(torch.randperm(x.shape[0], generator=generator), x.device)
        return x[perm], torch.argsort(perm)
    sizes = _gather_sizes(x.shape[0], x.device, world)
    x_all = concat_all_gather(x)
    total = x_all.shape[0]
    if rank == 0:
        perm = upload(torch.randperm(total, generator=generator), x.device)
    else:
        perm = torch.empty(total, dtype=torch.long, device=x.device)
    dist.broadcast(perm, src=0)
    start = sum(sizes[:rank])
    return x_all[perm[start : start + sizes[rank]]], torch.argsort(perm)


@torch.no_grad()
def batch_unshuffle(x: Tensor, idx_unshuffle: Tensor) -> Tensor:
    """Shuffle-BN step 2: return the encoded keys of this rank's *original* samples, in order."""
    rank, world = distributed_rank_world()
    if world == 1:
        return x[idx_unshuffle.to(x.device)]
    sizes = _gather_sizes(x.shape[0], x.device, world)
    x_all = concat_all_gather(x)
    start = sum(sizes[:rank])
    return x_all[idx_unshuffle.to(x.device)[start : start + sizes[rank]]]
