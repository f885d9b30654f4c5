"""Heads: MLP / pixel projections and the window unfolding CSCL relies on."""

import pytest
import torch
from earthloop.models.heads import (
    ClassifierHead,
    ContextSimilarityHead,
    PixelProjectionHead,
    ProjectionHead,
    SegmentationHead,
    unfold_window,
)


def test_projection_head_is_linear_relu_linear() -> None:
    head = ProjectionHead(512, 128)
    layers = list(head.net)
    assert [type(m).__name__ for m in layers] == ["Linear", "ReLU", "Linear"]
    assert layers[0].weight.shape == (512, 512) and layers[2].weight.shape == (128, 512)
    assert ProjectionHead(32, 8, hidden_dim=16)(torch.randn(3, 32)).shape == (3, 8)


def test_pixel_projection_normalises_channels() -> None:
    head = PixelProjectionHead(8, 4, hidden_channels=16)
    z = head(torch.randn(2, 8, 5, 6))
    assert z.shape == (2, 4, 5, 6)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2, 5, 6))
    assert not torch.allclose(
        PixelProjectionHead(8, 4, normalize=False)(torch.randn(1, 8, 2, 2)).norm(dim=1),
        torch.ones(1, 2, 2),
    )


def test_classifier_heads_shapes() -> None:
    assert ClassifierHead(16, 3, dropout=0.1)(torch.randn(4, 16)).shape == (4, 3)
    assert SegmentationHead(16, 3)(torch.randn(2, 16, 8, 8)).shape == (2, 3, 8, 8)


@pytest.mark.parametrize(("k", "dil"), [(3, 1), (3, 2), (5, 1)])
def test_unfold_window_matches_manual_indexing(k: int, dil: int) -> None:
    x = torch.arange(2 * 5 * 6, dtype=torch.float32).view(1, 2, 5, 6)
    win = unfold_window(x, k, dil, fill=-1.0)
    assert win.shape == (1, 2, k * k, 5, 6)
    r = k // 2
    for j in range(k * k):
        dy, dx = (j // k - r) * dil, (j % k - r) * dil
        for y in range(5):
            for xx in range(6):
                yy, xc = y + dy, xx + dx
                expected = (
                    x[0, :, yy, xc] if 0 <= yy < 5 and 0 <= xc < 6 else torch.full((2,), -1.0)
                )
                assert torch.equal(win[0, :, j, y, xx], expected)


def test_unfold_window_rejects_even_kernels() -> None:
    with pytest.raises(ValueError, match="odd"):
        unfold_window(torch.zeros(1, 1, 4, 4), 4)


def test_context_similarity_head_shapes_and_range() -> None:
    head = ContextSimilarityHead(8, dim=6, kernel_size=3, dilation=2)
    sim, inside = head(torch.randn(2, 8, 5, 5))
    assert sim.shape == (2, 9, 5, 5) and inside.shape == (1, 9, 5, 5)
    assert sim.abs().max() <= 1.0 + 1e-5
    # centre slot always inside; with dilation 2 the corner pixel sees only 4 of 9 slots
    assert inside[0, 4].all() and int(inside[0, :, 0, 0].sum()) == 4
    assert head.rel_pos.shape == (9, 6)


def _similarity_by_unfold(head: ContextSimilarityHead, features: torch.Tensor) -> torch.Tensor:
    """The definition, computed the direct way: gather every window key, add its position
    vector, normalise, dot with the normalised query (what the head computed before it was made
    slot-by-slot for speed)."""
    q = torch.nn.functional.normalize(head.query(features), dim=1)
    k = unfold_window(head.key(features), head.kernel_size, head.dilation)
    k = k + head.rel_pos.t().reshape(1, head.dim, -1, 1, 1)
    k = torch.nn.functional.normalize(k, dim=1)
    return torch.einsum("bdhw,bdkhw->bkhw", q, k)


@pytest.mark.parametrize(("kernel", "dilation"), [(3, 1), (5, 1), (3, 2)])
def test_context_similarity_equals_the_gathered_window_definition(
    kernel: int, dilation: int
) -> None:
    torch.manual_seed(0)
    head = ContextSimilarityHead(8, dim=6, kernel_size=kernel, dilation=dilation).double()
    x = torch.randn(2, 8, 7, 9, dtype=torch.float64, requires_grad=True)
    sim, _ = head(x)
    ref = _similarity_by_unfold(head, x)
    torch.testing.assert_close(sim, ref)
    # and the same gradients, for the features and every parameter
    w = torch.randn_like(sim)
    got = torch.autograd.grad((sim * w).sum(), [x, *head.parameters()])
    want = torch.autograd.grad((ref * w).sum(), [x, *head.parameters()])
    for g, r in zip(got, want, strict=True):
        torch.testing.assert_close(g, r)
    assert torch.autograd.gradcheck(
        lambda f: head(f)[0], (x[:1, :, :4, :5].detach().requires_grad_(),)
    )


def test_context_similarity_stays_a_cosine_where_a_key_cancels_its_position_vector() -> None:
    """The slot-by-slot expansion ``|k + p|^2 = |k|^2 + 2 k.p + |p|^2`` cancels where ``k ~ -p``;
    the quotient came out at up to 7e10 before the floor and clamp, and CSCL's loss rewards
    large negative similarities without limit, so training could exploit it."""
    torch.manual_seed(0)
    worst = 0.0
    for trial in range(120):
        head = ContextSimilarityHead(8, dim=8, kernel_size=3)
        with torch.no_grad():
            head.key.weight.copy_(torch.eye(8).view(8, 8, 1, 1))
            head.query.weight.copy_(torch.eye(8).view(8, 8, 1, 1))
            head.rel_pos.mul_(10.0 ** (trial % 4))
        x = torch.randn(1, 8, 5, 5)
        eps = (0.0, 1e-6, 1e-4)[trial // 40]
        with torch.no_grad():  # the key pixel (2, 3) that pixel (2, 2) sees in slot 5 is -p_5
            x[0, :, 2, 3] = -head.rel_pos[5] * (1 + eps * torch.randn(8))
        sim, _ = head(x)
        assert torch.isfinite(sim).all()
        worst = max(worst, float(sim.abs().max()))
    assert worst <= 1.0


def test_context_similarity_norms_stay_float32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    head = ContextSimilarityHead(8, dim=6, kernel_size=3)
    x = torch.randn(2, 8, 6, 6)
    ref, _ = head(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sim, _ = head(x)
    assert sim.dtype == torch.float32 and sim.abs().max() <= 1.0
    # only the two 1x1 projections ran in bf16: ~3 digits, not a different similarity
    assert (sim - ref).abs().max() < 0.05
