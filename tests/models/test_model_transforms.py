"""Augmentations: integer-exact geometry with tracked ground coordinates, replay, seeding."""

import pytest
import torch
from earthloop.models.transforms import (
    BandDropout,
    BrightnessContrast,
    Compose,
    GaussianNoise,
    RandomApply,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRot90,
    RandomVerticalFlip,
    Transform,
    View,
    correspondence,
    identity_coords,
)

H = W = 16


def coordinate_image() -> torch.Tensor:
    """A 3-band image whose bands hold each pixel's row, column and a unique id."""
    c = identity_coords(H, W).float()
    return torch.cat([c, (c[0] * W + c[1]).unsqueeze(0)])


def geometric(size: int = H) -> Compose:
    return Compose(
        [
            RandomResizedCrop(size, (1, 2, 4)),
            RandomHorizontalFlip(),
            RandomVerticalFlip(),
            RandomRot90(),
        ]
    )


@pytest.mark.parametrize(
    "transform",
    [
        RandomHorizontalFlip(1.0),
        RandomVerticalFlip(1.0),
        RandomRot90(),
        RandomCrop(9),
        RandomResizedCrop(H, (2,)),
        geometric(),
    ],
)
def test_coords_track_every_pixel_exactly(transform: Transform) -> None:
    g = torch.Generator().manual_seed(3)
    for _ in range(8):
        view = transform(View.from_image(coordinate_image()), g)
        # band 0/1 carry the original row/col: the tracked coords must equal them everywhere
        assert torch.equal(view.image[:2].long(), view.coords)


def test_correspondence_through_two_independent_views() -> None:
    g = torch.Generator().manual_seed(0)
    image = coordinate_image()
    hits = 0
    for _ in range(10):
        a = geometric()(View.from_image(image), g)
        b = geometric()(View.from_image(image), g)
        match = correspondence(a.coords, b.coords, (H, W))
        assert match.shape == (H, W)
        ok = match >= 0
        flat_b = b.image.reshape(3, -1)
        # every matched pixel of A shows exactly the same ground pixel in B
        assert torch.equal(a.image[:, ok], flat_b[:, match[ok]])
        # and every unmatched one is really absent from B
        present = set(flat_b[2].long().tolist())
        assert all(int(v) not in present for v in a.image[2][~ok].tolist())
        hits += int(ok.sum())
    assert hits > 0


def test_valid_mask_moves_with_geometry() -> None:
    valid = torch.zeros(H, W, dtype=torch.bool)
    valid[:4, :] = True
    view = geometric()(View.from_image(coordinate_image(), valid), torch.Generator().manual_seed(1))
    assert view.valid is not None
    assert torch.equal(view.valid, view.coords[0] < 4)


def test_resized_crop_output_size_and_upscale_blocks() -> None:
    view = RandomResizedCrop(H, (4,))(
        View.from_image(coordinate_image()), torch.Generator().manual_seed(0)
    )
    assert view.size == (H, W)
    # x4 nearest up-scaling: 4x4 blocks share one ground pixel
    assert torch.equal(view.coords[:, 0:4, 0:4], view.coords[:, :1, :1].expand(2, 4, 4))
    with pytest.raises(ValueError, match="divide"):
        RandomResizedCrop(16, (3,))


def test_leading_time_dims_are_transformed_together() -> None:
    series = torch.stack([coordinate_image(), coordinate_image() + 100])
    view = geometric()(View.from_image(series), torch.Generator().manual_seed(5))
    assert view.image.shape == (2, 3, H, W)
    assert torch.equal(view.image[1] - 100, view.image[0])


def test_replay_applies_identical_augmentation_to_another_image() -> None:
    pipeline = Compose(
        [
            geometric(),
            RandomApply(BrightnessContrast(0.5, 0.5), p=1.0),
            GaussianNoise(0.1),
            BandDropout(0.3),
        ]
    )
    g = torch.Generator().manual_seed(7)
    a, params = pipeline.sample_and_apply(View.from_image(torch.randn(4, H, W)), g)
    other = torch.randn(4, H, W)
    b1 = pipeline.apply(View.from_image(other), params)
    b2 = pipeline.apply(View.from_image(other), params)
    assert torch.equal(a.coords, b1.coords)
    assert torch.equal(b1.image, b2.image)


def test_seeded_generators_reproduce() -> None:
    img = torch.randn(4, H, W)
    pipeline = Compose([geometric(), BrightnessContrast(), GaussianNoise()])
    v1 = pipeline(View.from_image(img), torch.Generator().manual_seed(11))
    v2 = pipeline(View.from_image(img), torch.Generator().manual_seed(11))
    assert torch.equal(v1.image, v2.image) and torch.equal(v1.coords, v2.coords)


def test_photometric_transforms_leave_coords_alone() -> None:
    img = torch.randn(5, H, W)
    base = View.from_image(img)
    g = torch.Generator().manual_seed(2)
    for t in (BrightnessContrast(0.3, 0.3), GaussianNoise(0.2), BandDropout(0.5)):
        out = t(base, g)
        assert torch.equal(out.coords, base.coords) and out.image.shape == img.shape


def test_brightness_contrast_formula() -> None:
    img = torch.randn(2, 4, 4)
    params = {"contrast": torch.tensor([2.0, 0.5]), "brightness": torch.tensor([0.1, -0.2])}
    out = BrightnessContrast().apply(View.from_image(img), params).image
    mean = img.mean(dim=(-2, -1), keepdim=True)
    expected = (
        (img - mean) * torch.tensor([2.0, 0.5]).view(2, 1, 1)
        + mean
        + torch.tensor([0.1, -0.2]).view(2, 1, 1)
    )
    torch.testing.assert_close(out, expected)


def test_band_dropout_never_drops_every_band() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.ones(3, 4, 4)
    for _ in range(20):
        out = BandDropout(p=1.0)(View.from_image(img), g).image
        assert int((out.flatten(1).abs().sum(1) > 0).sum()) == 1
