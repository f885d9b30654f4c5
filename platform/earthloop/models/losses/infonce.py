"""InfoNCE (van den Oord et al. 2018), the contrastive loss shared by SeCo and dense pretraining.

For a query ``q``, its positive key ``k+`` and negatives ``k-``, all L2-normalised::

    loss = -log( exp(q.k+ / t) / (exp(q.k+ / t) + sum exp(q.k- / t)) )

i.e. cross-entropy over the logits ``[q.k+, q.k-...] / t`` with target 0, which is how MoCo and
SeCo compute it. Temperature 0.07 is MoCo's and SeCo's default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["info_nce", "info_nce_in_batch", "info_nce_logits"]


def info_nce_logits(
    query: Tensor,
    positive: Tensor,
    negatives: Tensor | None = None,
    *,
    temperature: float = 0.07,
    normalize: bool = True,
) -> Tensor:
    """Logits ``(N, 1 + M)``; column 0 is the positive.

    ``negatives`` is either shared ``(M, D)`` (a queue, other samples' keys) or per-query
    ``(N, M, D)``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if query.shape != positive.shape or query.ndim != 2:
        raise ValueError(
            f"query and positive must both be (N, D), got {tuple(query.shape)}, {tuple(positive.shape)}"
        )
    if normalize:
        query, positive = F.normalize(query, dim=-1), F.normalize(positive, dim=-1)
    l_pos = (query * positive).sum(dim=-1, keepdim=True)
    if negatives is None:
        logits = l_pos
    else:
        if normalize:
            negatives = F.normalize(negatives, dim=-1)
        if negatives.ndim == 2:
            l_neg = query @ negatives.t()
        elif negatives.ndim == 3:
            l_neg = torch.einsum("nd,nmd->nm", query, negatives)
        else:
            raise ValueError(f"negatives must be (M, D) or (N, M, D), got {tuple(negatives.shape)}")
        logits = torch.cat([l_pos, l_neg], dim=1)
    return logits / temperature


def info_nce(
    query: Tensor,
    positive: Tensor,
    negatives: Tensor | None = None,
    *,
    temperature: float = 0.07,
    normalize: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """InfoNCE of each query against its positive and the negatives (see :func:`info_nce_logits`).

    ``reduction``: ``"mean"`` (scalar), ``"sum"`` or ``"none"`` (per query, ``(N,)``).
    """
    logits = info_nce_logits(
        query, positive, negatives, temperature=temperature, normalize=normalize
    )
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), target, reduction=reduction)


def info_nce_in_batch(
    query: Tensor,
    keys: Tensor,
    *,
    temperature: float = 0.07,
    normalize: bool = True,
    exclude: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """InfoNCE where the positive of ``query[i]`` is ``keys[i]`` and every other key is a negative.

    ``exclude``: optional ``(N, N)`` bool of (query, key) pairs to drop from the negatives, e.g.
    keys that are copies of the positive (same ground pixel sampled twice). The diagonal is never
    excluded.
    """
    if query.shape != keys.shape or query.ndim != 2:
        raise ValueError(
            f"query and keys must both be (N, D), got {tuple(query.shape)}, {tuple(keys.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if normalize:
        query, keys = F.normalize(query, dim=-1), F.normalize(keys, dim=-1)
    logits = (query @ keys.t()).float() / temperature
    if exclude is not None:
        n = logits.shape[0]
        mask = exclude.to(device=logits.device, dtype=torch.bool) & ~torch.eye(
            n, dtype=torch.bool, device=logits.device
        )
        logits = logits.masked_fill(mask, float("-inf"))
    target = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, target, reduction=reduction)
