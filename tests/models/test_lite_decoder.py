"""The light decoder (models.lite_decoder): shapes and factor, the sub-pixel upsampling's ICNR
start, the latent scale, the conv FLOP count against a hand count, and its config's errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from oasis_lib.models.lite_decoder import (
    LITE_DECODER_PRESETS,
    LiteDecoder,
    LiteDecoderConfig,
    conv_gflops,
    icnr_,
)


@pytest.mark.parametrize(("channels", "blocks", "f"),
                         [((8, 8), (1, 1), 4), ((8, 4, 4), (1, 0, 1), 8), ((6,), (2,), 2)])
def test_a_latent_becomes_an_image_f_times_larger(channels, blocks, f):
    dec = LiteDecoder(latent_channels=3, channels=channels, blocks=blocks)
    assert dec.downsampling_factor == f
    assert dec.decode(torch.randn(2, 3, 5, 7)).shape == (2, 1, 5 * f, 7 * f)


def test_icnr_starts_as_nearest_upsampling():
    """After ICNR the four sub-pixel channels are copies: every 2x2 block of the shuffled
    output is one value, the conv's output at that coarse pixel (nearest upsampling)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 4 * 3, 3, padding=1)
    icnr_(conv)
    x = torch.randn(2, 5, 6, 6)
    out = F.pixel_shuffle(conv(x), 2)
    coarse = out[:, :, ::2, ::2]
    torch.testing.assert_close(out, F.interpolate(coarse, scale_factor=2.0, mode="nearest"))


def test_the_latent_scale_multiplies_the_input():
    torch.manual_seed(0)
    a = LiteDecoder("tiny", latent_scale=0.25)
    b = LiteDecoder("tiny")
    b.load_state_dict({**a.state_dict(), "latent_scale": torch.tensor(1.0)})
    z = torch.randn(1, 2, 4, 4)
    torch.testing.assert_close(a.decode(z), b.decode(0.25 * z))


def test_conv_gflops_counts_the_cpu_decoder_by_hand():
    """2 * C_in * 9 * numel(out) per 3x3 conv, for a 4 x 64 x 64 latent (one slice)."""
    dec = LiteDecoder("cpu")
    px0, px1 = 64 * 64, 128 * 128
    by_hand = 2 * 9 * (4 * 48 * px0            # conv_in
                       + 4 * 48 * 48 * px0      # 2 Blocks of 2 convs at 64 x 64
                       + 48 * 4 * 24 * px0      # sub-pixel conv to 24 channels at 128 x 128
                       + 4 * 24 * 24 * px1      # 2 Blocks at 128 x 128
                       + 24 * 4 * px1)          # sub-pixel conv to the 256 x 256 image
    assert conv_gflops(dec, torch.zeros(1, 4, 64, 64)) == pytest.approx(by_hand / 1e9)


def test_bad_configs_and_inputs_are_refused():
    with pytest.raises(ValueError, match="choose one of"):
        LiteDecoderConfig.preset("huge")
    with pytest.raises(ValueError, match="same number"):
        LiteDecoderConfig(channels=(8, 8), blocks=(1,))
    with pytest.raises(ValueError, match="blocks entry"):
        LiteDecoderConfig(channels=(8,), blocks=(-1,))
    with pytest.raises(ValueError, match="choose one of"):
        LiteDecoderConfig().replace(width=3)
    with pytest.raises(ValueError, match=r"expected latents \[B, 2"):
        LiteDecoder("tiny").decode(torch.zeros(1, 4, 8, 8))
    assert set(LITE_DECODER_PRESETS) == {"tiny", "cpu", "gpu"}
