"""U-Net: full-resolution output, encoder is a plain backbone state-wise."""

import pytest
import torch
from earthloop.models.backbones import build_backbone
from earthloop.models.unet import SegmentationModel, UNet, default_decoder_channels


@pytest.mark.parametrize("size", [64, 128])
def test_output_at_input_resolution(size: int) -> None:
    unet = UNet(build_backbone("resnet_tiny", 4))
    out = unet(torch.randn(2, 4, size, size))
    assert out.shape == (2, unet.out_channels, size, size)


def test_non_multiple_of_32_still_full_resolution() -> None:
    unet = UNet(build_backbone("resnet_tiny", 3), decoder_channels=(32, 16, 16, 8, 8))
    assert unet(torch.randn(2, 3, 48, 40)).shape == (2, 8, 48, 40)


def test_default_decoder_widths() -> None:
    assert default_decoder_channels(build_backbone("resnet18", 3)) == (256, 128, 64, 32, 16)
    assert default_decoder_channels(build_backbone("resnet50", 3)) == (256, 128, 64, 32, 16)
    assert default_decoder_channels(build_backbone("resnet_tiny", 3)) == (64, 32, 16, 8, 8)


def test_encoder_state_dict_is_the_backbones() -> None:
    pretrained = build_backbone("resnet_tiny", 4)
    unet = UNet(build_backbone("resnet_tiny", 4))
    assert set(unet.encoder.state_dict()) == set(pretrained.state_dict())
    unet.encoder.load_state_dict(pretrained.state_dict(), strict=True)
    x = torch.randn(2, 4, 64, 64)
    pretrained.eval()
    unet.eval()
    with torch.no_grad():
        assert torch.equal(unet.encoder(x), pretrained(x))
    # ... and the U-Net's encoder params are namespaced so a full-model checkpoint splits cleanly.
    assert all(k.startswith(("encoder.", "decoder.")) for k in unet.state_dict())


def test_segmentation_model_logits() -> None:
    seg = SegmentationModel(UNet(build_backbone("resnet_tiny", 2)), num_classes=5)
    assert seg(torch.randn(2, 2, 64, 64)).shape == (2, 5, 64, 64)
