"""Representation-quality and collapse monitors for self-supervised pretraining (pure torch).

The contrastive loss alone is a poor progress signal: it can fall while the embedding collapses
(every input mapped near one point) or saturates. These cheap statistics catch that:

* :func:`embedding_std` — per-dimension standard deviation of L2-normalised embeddings, averaged
  over dimensions. A collapsed embedding gives 0; embeddings spread uniformly over the sphere give
  about ``1/sqrt(d)`` (the criterion SimSiam, Chen & He 2021, used to diagnose collapse).
  :func:`is_collapsed` compares against that reference.
* :func:`alignment` / :func:`uniformity` — Wang & Isola 2020: positives should be close
  (low alignment) and the embedding should spread over the sphere (low uniformity).
* :func:`knn_accuracy` — weighted k-NN classification of a labelled probe set (Wu et al. 2018's
  protocol, cosine similarity, votes weighted by ``exp(s / T)``), the usual no-training probe.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "alignment",
    "embedding_std",
    "is_collapsed",
    "knn_accuracy",
    "knn_predict",
    "uniformity",
]


def embedding_std(embeddings: Tensor) -> Tensor:
    """Mean over dimensions of the std over samples of the L2-normalised ``(N, D)`` embeddings."""
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"need (N>=2, D) embeddings, got {tuple(embeddings.shape)}")
    z = F.normalize(embeddings.detach().float(), dim=1)
    return z.std(dim=0).mean()


def is_collapsed(std: float | Tensor, dim: int, threshold: float = 0.1) -> bool:
    """True when ``std`` (from :func:`embedding_std`) is below ``threshold`` x ``1/sqrt(dim)``.

    ``threshold`` is relative to the value of well-spread embeddings, so it means the same for any
    embedding width.
    """
    return float(std) < threshold / math.sqrt(dim)


def alignment(x: Tensor, y: Tensor, alpha: float = 2.0) -> Tensor:
    """``E ||f(x) - f(y)||^alpha`` over positive pairs (rows of ``x`` and ``y``), normalised inputs."""
    x, y = F.normalize(x.float(), dim=1), F.normalize(y.float(), dim=1)
    return (x - y).norm(dim=1).pow(alpha).mean()


def uniformity(x: Tensor, t: float = 2.0) -> Tensor:
    """``log E exp(-t ||f(x_i) - f(x_j)||^2)`` over distinct pairs; lower is more uniform."""
    if x.shape[0] < 2:
        raise ValueError("uniformity needs at least two embeddings")
    z = F.normalize(x.float(), dim=1)
    sq = torch.pdist(z, p=2).pow(2)
    return torch.logsumexp(-t * sq, dim=0) - math.log(sq.numel())


@torch.no_grad()
def knn_predict(
    train_embeddings: Tensor,
    train_labels: Tensor,
    query_embeddings: Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
    exclude_self: bool = False,
) -> Tensor:
    """Weighted k-NN class predictions ``(M,)`` for ``query_embeddings`` ``(M, D)``.

    Each of the ``k`` most cosine-similar training samples votes for its label with weight
    ``exp(sim / temperature)``. ``exclude_self`` drops the identical index when queries *are* the
    training set (leave-one-out).
    """
    if train_embeddings.shape[0] != train_labels.shape[0]:
        raise ValueError("train_embeddings and train_labels differ in length")
    n_cls = int(train_labels.max()) + 1 if num_classes is None else num_classes
    train = F.normalize(train_embeddings.float(), dim=1)
    labels = train_labels.long().to(train.device)
    k_eff = min(k, train.shape[0] - (1 if exclude_self else 0))
    if k_eff < 1:
        raise ValueError("not enough training samples for k-NN")
    preds: list[Tensor] = []
    for start in range(0, query_embeddings.shape[0], chunk_size):
        q = F.normalize(
            query_embeddings[start : start + chunk_size].float().to(train.device), dim=1
        )
        sim = q @ train.t()
        if exclude_self:
            rows = torch.arange(q.shape[0], device=sim.device)
            sim[rows, rows + start] = float("-inf")
        top_sim, top_idx = sim.topk(k_eff, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(q.shape[0], n_cls, device=sim.device)
        votes.scatter_add_(1, labels[top_idx], weights)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


@torch.no_grad()
def knn_accuracy(
    train_embeddings: Tensor,
    train_labels: Tensor,
    test_embeddings: Tensor,
    test_labels: Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
) -> float:
    """Fraction of ``test_embeddings`` whose weighted k-NN prediction equals ``test_labels``."""
    n_cls = num_classes
    if n_cls is None:
        n_cls = int(max(int(train_labels.max()), int(test_labels.max()))) + 1
    pred = knn_predict(
        train_embeddings,
        train_labels,
        test_embeddings,
        k=k,
        temperature=temperature,
        num_classes=n_cls,
    )
    return float((pred.cpu() == test_labels.long().cpu()).float().mean())
