"""Collapse monitors and k-NN probe."""

import math

import torch
from earthloop.models.metrics import (
    alignment,
    embedding_std,
    is_collapsed,
    knn_accuracy,
    knn_predict,
    uniformity,
)


def test_constant_embeddings_are_collapsed() -> None:
    z = torch.ones(64, 32) * 3
    std = embedding_std(z)
    assert float(std) < 1e-6
    assert is_collapsed(std, 32)


def test_random_embeddings_are_not_collapsed() -> None:
    torch.manual_seed(0)
    z = torch.randn(512, 64)
    std = float(embedding_std(z))
    assert abs(std - 1 / math.sqrt(64)) < 0.01
    assert not is_collapsed(std, 64)


def test_alignment_and_uniformity() -> None:
    torch.manual_seed(0)
    x = torch.randn(128, 16)
    assert float(alignment(x, x * 2)) < 1e-6  # same direction
    assert abs(float(alignment(x, -x)) - 4.0) < 1e-4  # antipodal: ||2u||^2 = 4
    clustered = torch.randn(1, 16) + 0.01 * torch.randn(128, 16)
    assert float(uniformity(x)) < float(uniformity(clustered))
    assert abs(float(uniformity(clustered))) < 0.01  # all at one point: log E exp(0) = 0


def test_knn_separable_clusters_perfect() -> None:
    torch.manual_seed(0)
    centres = torch.eye(4) * 10
    labels = torch.arange(4).repeat_interleave(25)
    emb = centres[labels] + torch.randn(100, 4)
    test_labels = torch.arange(4).repeat_interleave(10)
    test_emb = centres[test_labels] + torch.randn(40, 4)
    assert knn_accuracy(emb, labels, test_emb, test_labels, k=5) == 1.0


def test_knn_random_labels_near_chance() -> None:
    torch.manual_seed(0)
    emb, labels = torch.randn(400, 16), torch.randint(0, 2, (400,))
    test_emb, test_labels = torch.randn(400, 16), torch.randint(0, 2, (400,))
    assert abs(knn_accuracy(emb, labels, test_emb, test_labels, k=10) - 0.5) < 0.1


def test_knn_leave_one_out_excludes_self() -> None:
    emb = torch.eye(3)
    labels = torch.tensor([0, 1, 2])
    # with itself included every point predicts its own label; without, it cannot
    assert torch.equal(knn_predict(emb, labels, emb, k=1), labels)
    assert not torch.equal(knn_predict(emb, labels, emb, k=1, exclude_self=True), labels)
