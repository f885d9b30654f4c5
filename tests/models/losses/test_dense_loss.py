"""Dense pixel contrast: sampled pairs are exact correspondences, the loss rewards matching."""

import math

import pytest
import torch
from earthloop.models.losses.dense import (
    dense_info_nce,
    gather_pixels,
    pixel_owner,
    sample_pixel_pairs,
)
from earthloop.models.transforms import (
    Compose,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRot90,
    View,
    identity_coords,
)

H = W = 16


def views(
    seed: int, valid: torch.Tensor | None = None, factors: tuple[int, ...] = (1, 2)
) -> tuple[View, View, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    coords = identity_coords(H, W).float()
    image = torch.cat([coords, (coords[0] * W + coords[1]).unsqueeze(0)])  # bands: row, col, id
    pipe = Compose([RandomResizedCrop(H, factors), RandomHorizontalFlip(), RandomRot90()])
    return pipe(View.from_image(image, valid), g), pipe(View.from_image(image, valid), g), image


@pytest.mark.parametrize("seed", range(5))
def test_sampled_pairs_show_the_same_ground_pixel(seed: int) -> None:
    a, b, _ = views(seed)
    idx_a, idx_b, ground = sample_pixel_pairs(
        a.coords, b.coords, (H, W), 32, generator=torch.Generator().manual_seed(seed)
    )
    assert 0 < idx_a.numel() <= 32
    ids_a = a.image[2].reshape(-1)[idx_a]
    ids_b = b.image[2].reshape(-1)[idx_b]
    assert torch.equal(ids_a, ids_b) and torch.equal(ids_a.long(), ground)
    assert ground.unique().numel() == ground.numel()  # one sample per ground pixel


def test_invalid_pixels_are_never_sampled() -> None:
    valid = torch.ones(H, W, dtype=torch.bool)
    valid[:, : W // 2] = False  # left half clouded on both dates
    a, b, _ = views(1, valid, factors=(1,))  # no zoom: both views cover the whole tile
    _, _, ground = sample_pixel_pairs(
        a.coords, b.coords, (H, W), 200, valid_a=a.valid, valid_b=b.valid
    )
    assert ground.numel() > 0 and bool(((ground % W) >= W // 2).all())
    nothing = torch.zeros(H, W, dtype=torch.bool)
    idx_a, _, _ = sample_pixel_pairs(a.coords, b.coords, (H, W), 8, valid_a=nothing)
    assert idx_a.numel() == 0


def test_gather_pixels() -> None:
    emb = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 2, 2)
    out = gather_pixels(emb, [torch.tensor([0, 3]), torch.tensor([1])])
    assert out.tolist() == [[0.0, 4.0, 8.0], [3.0, 7.0, 11.0], [13.0, 17.0, 21.0]]


def test_dense_loss_hand_value_and_preference() -> None:
    # two images, one pair each; view-A pixel embeddings e0 / e1 match view B exactly
    emb = torch.zeros(2, 2, 1, 2)
    emb[0, 0, 0, 0] = 1.0
    emb[1, 1, 0, 1] = 1.0
    pairs = [
        (torch.tensor([0]), torch.tensor([0]), torch.tensor([0])),
        (torch.tensor([1]), torch.tensor([1]), torch.tensor([1])),
    ]
    loss, z_a, z_b = dense_info_nce(emb, emb.clone(), pairs, temperature=1.0)
    assert z_a.shape == z_b.shape == (2, 2)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    swapped = emb.flip(0)  # B's pixels now belong to the other location
    worse, _, _ = dense_info_nce(emb, swapped, pairs, temperature=1.0)
    assert worse.item() > loss.item()


def test_dense_loss_without_pairs_is_zero_with_grad() -> None:
    emb = torch.randn(1, 4, 2, 2, requires_grad=True)
    empty = torch.empty(0, dtype=torch.long)
    loss, _, _ = dense_info_nce(emb, emb, [(empty, empty, empty)])
    loss.backward()
    assert loss.item() == 0.0


def _fields() -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """Two images of two sampled pixels each; both pixels of an image lie in one field, so they
    share the embedding (e0 for image 0, e1 for image 1, e0 orthogonal to e1)."""
    emb = torch.zeros(2, 2, 1, 2)
    emb[0, 0] = 1.0
    emb[1, 1] = 1.0
    pair = (torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([0, 1]))
    return emb, [pair, pair]


def test_no_negative_comes_from_the_anchors_own_image() -> None:
    emb, pairs = _fields()
    assert pixel_owner(pairs).tolist() == [0, 0, 1, 1]
    t = 0.5
    loss, _, _ = dense_info_nce(emb, emb.clone(), pairs, temperature=t)
    # each anchor: positive logit 1/t; the same-field pixel of its own image (also 1/t) is not a
    # negative; the two pixels of the other image give logits 0
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # with negatives from the own image too, the same-field pixel counts against the anchor
    old, _, _ = dense_info_nce(emb, emb.clone(), pairs, temperature=t, negatives="all")
    assert old.item() == pytest.approx(
        -math.log(math.exp(1 / t) / (2 * math.exp(1 / t) + 2)), abs=1e-6
    )


def test_one_image_has_nothing_to_contrast_against() -> None:
    emb, pairs = _fields()
    e = emb[:1].clone().requires_grad_(True)
    loss, _, _ = dense_info_nce(e, e, pairs[:1])
    loss.backward()
    assert loss.item() == 0.0
