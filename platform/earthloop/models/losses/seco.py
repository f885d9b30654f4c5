"""SeCo's multi-subspace InfoNCE (Mañas et al. 2021, "Seasonal Contrast", ICCV).

SeCo encodes a query and three keys of the same location and contrasts them in three embedding
subspaces (one projection head each). Key view ``i`` is the positive of subspace ``i``; this is the
paper's and the reference code's numbering (``k0``, ``k1``, ``k2``):

* subspace 0 — positive ``k0`` (other date *and* other augmentation): invariant to season and
  augmentation; negatives are queue 0 only.
* subspace 1 — positive ``k1`` (other date, the query's augmentation replayed: season-only
  change): invariant to season but sensitive to augmentation, so the augmentation-changed keys
  ``k0`` and ``k2`` are extra negatives.
* subspace 2 — positive ``k2`` (same date, other augmentation: augmentation-only change):
  invariant to augmentation but sensitive to season, so the other-date keys ``k0`` and ``k1`` are
  extra negatives.

As in the reference code, the extra negatives of subspace ``i > 0`` are the keys ``j != i`` of the
*whole batch* (projected by head ``i``), not only those of the query's own location; other
locations' keys are valid negatives anyway. Loss = sum of the three InfoNCE terms.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from earthloop.models.losses.infonce import info_nce_logits

__all__ = [
    "KEY_AUGMENTATION",
    "KEY_SEASON",
    "KEY_SEASON_AND_AUGMENTATION",
    "NUM_SUBSPACES",
    "seco_loss",
]

NUM_SUBSPACES = 3
KEY_SEASON_AND_AUGMENTATION = 0
"""Index of the key that differs from the query in date and augmentation (positive of subspace 0)."""
KEY_SEASON = 1
"""Index of the key that differs only in date (positive of subspace 1)."""
KEY_AUGMENTATION = 2
"""Index of the key that differs only in augmentation (positive of subspace 2)."""


def seco_loss(
    queries: Sequence[Tensor],
    keys: Sequence[Sequence[Tensor]],
    queues: Sequence[Tensor | None] | None = None,
    *,
    temperature: float = 0.07,
) -> dict[str, Tensor]:
    """The three SeCo InfoNCE terms.

    Args:
        queries: ``queries[i]`` = the query projected by query head ``i``, ``(B, D)``.
        keys: ``keys[i][j]`` = key view ``j`` projected by key head ``i``, ``(B, D)``.
        queues: ``queues[i]`` = negatives of subspace ``i``, ``(K, D)`` (or None).
        temperature: softmax temperature (SeCo: 0.07).

    Returns ``{"loss", "loss_subspace{i}", "acc_subspace{i}"}``; ``acc`` is the fraction of
    queries whose positive has the largest logit (a cheap progress signal, as logged by SeCo).
    All inputs are L2-normalised here.
    """
    n = len(queries)
    if n != NUM_SUBSPACES or len(keys) != n or any(len(k) != n for k in keys):
        raise ValueError(
            f"SeCo needs {NUM_SUBSPACES} query projections and a {NUM_SUBSPACES}x{NUM_SUBSPACES} key grid"
        )
    if queues is not None and len(queues) != n:
        raise ValueError(f"expected {n} queues, got {len(queues)}")
    out: dict[str, Tensor] = {}
    terms: list[Tensor] = []
    for i in range(n):
        negs: list[Tensor] = []
        if queues is not None and queues[i] is not None:
            negs.append(queues[i])  # type: ignore[arg-type]
        if i > 0:
            negs.extend(keys[i][j] for j in range(n) if j != i)
        negatives = torch.cat(negs, dim=0) if negs else None
        logits = info_nce_logits(queries[i], keys[i][i], negatives, temperature=temperature)
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        term = torch.nn.functional.cross_entropy(logits.float(), target)
        terms.append(term)
        out[f"loss_subspace{i}"] = term
        out[f"acc_subspace{i}"] = (logits.argmax(dim=1) == 0).float().mean().detach()
    out["loss"] = torch.stack(terms).sum()
    return out
