"""AutoencoderKL: config validation, posterior maths, shapes per preset, scale factor."""

from __future__ import annotations

import re

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from oasis_lib.models.autoencoder import (
    AUTOENCODER_PRESETS,
    AutoencoderConfig,
    AutoencoderKL,
    DiagonalGaussian,
    estimate_scale_factor,
)


def _posterior(seed: int = 0, shape=(3, 2, 4, 5)) -> DiagonalGaussian:
    g = torch.Generator().manual_seed(seed)
    return DiagonalGaussian(torch.randn(shape, generator=g), torch.randn(shape, generator=g))


def test_kl_matches_torch_distributions():
    post = _posterior()
    expected = kl_divergence(Normal(post.mean, post.std), Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(post.kl(), expected, rtol=1e-5, atol=1e-5)
    assert post.kl().shape == (3,)


def test_kl_zero_for_standard_normal_and_logvar_clamped():
    zero = DiagonalGaussian(torch.zeros(2, 1, 3, 3), torch.zeros(2, 1, 3, 3))
    torch.testing.assert_close(zero.kl(), torch.zeros(2))
    huge = DiagonalGaussian(torch.zeros(1, 1, 1, 2), torch.tensor([[[[-100.0, 100.0]]]]))
    assert huge.logvar.flatten().tolist() == [-30.0, 20.0]
    assert torch.isfinite(huge.kl()).all()


def test_sample_reproducible_with_generator_and_mode_is_mean():
    post = _posterior()
    a = post.sample(torch.Generator().manual_seed(7))
    b = post.sample(torch.Generator().manual_seed(7))
    c = post.sample(torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    eps = torch.randn(post.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, post.mean + post.std * eps)
    assert post.mode() is post.mean


@pytest.mark.parametrize("name", list(AUTOENCODER_PRESETS))
def test_preset_shapes_and_factor(name):
    cfg = AutoencoderConfig.preset(name)
    ae = AutoencoderKL(cfg).eval()
    f = cfg.downsampling_factor
    assert f == 2 ** (len(cfg.channel_mult) - 1)
    size = 4 * f  # small inputs keep the 20M-parameter gpu preset fast
    x = torch.rand(2, 1, size, size) * 2 - 1
    with torch.no_grad():
        recon, post = ae(x, sample_posterior=False)
    assert post.shape == (2, cfg.latent_channels, size // f, size // f)
    assert cfg.latent_shape(size) == tuple(post.shape[1:])
    assert recon.shape == x.shape
    names = [n for n, _ in ae.describe((1, 1, size, size))]
    assert names[0] == "encoder.conv_in"
    assert names[-1] == "decoder.conv_out"


def test_cpu_preset_is_small_and_f4_f8_reachable():
    n = sum(p.numel() for p in AutoencoderKL("cpu").parameters())
    assert n < 1_000_000
    assert AutoencoderConfig(channel_mult=(1, 2, 4)).downsampling_factor == 4
    assert AutoencoderConfig(channel_mult=(1, 2, 4, 4)).downsampling_factor == 8


@pytest.mark.parametrize(("field", "value", "hint"), [
    ("latent_channels", 0, "latent_channels must be an int >= 1"),
    ("channel_mult", (), "at least one level"),
    ("norm_groups", 5, "choose one of [1, 2, 4, 8, 16]"),
    ("attention", "yes", "True or False"),
    ("base_channels", 2.5, "base_channels"),
])
def test_bad_config_values_raise(field, value, hint):
    with pytest.raises(ValueError, match=re.escape(hint)):
        AutoencoderConfig(**{field: value})


def test_unknown_preset_and_option_and_bad_input_size():
    with pytest.raises(ValueError, match="choose one of \\('tiny', 'cpu', 'gpu'\\)"):
        AutoencoderConfig.preset("huge")
    with pytest.raises(ValueError, match="unknown AutoencoderConfig option 'width'"):
        AutoencoderKL("tiny", width=3)
    with pytest.raises(ValueError, match="divisible by f=4"):
        AutoencoderKL("tiny").encode(torch.zeros(1, 1, 30, 30))


def test_scale_factor_buffer_round_trip():
    ae = AutoencoderKL("tiny")
    assert float(ae.scale_factor) == 1.0
    ae.scale_factor.fill_(0.25)
    other = AutoencoderKL("tiny")
    other.load_state_dict(ae.state_dict())
    assert "scale_factor" in ae.state_dict()
    assert float(other.scale_factor) == 0.25


@pytest.mark.parametrize("use", ["mean", "sample"])
def test_scale_factor_makes_latents_unit_std(use):
    torch.manual_seed(0)
    ae = AutoencoderKL("tiny")
    x = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    s = estimate_scale_factor(ae, x, use=use, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        post = ae.encode(x)
        z = post.sample(torch.Generator().manual_seed(2)) if use == "sample" else post.mode()
    assert float((z * s).double().std()) == pytest.approx(1.0, rel=1e-6)
    # an iterable of (image, mask) batches gives the same factor as the whole tensor at once
    batches = [(x[:4], None), (x[4:], None)]
    if use == "mean":
        assert estimate_scale_factor(ae, batches) == pytest.approx(s, rel=1e-9)
    with pytest.raises(ValueError, match="choose one of \\('mean', 'sample'\\)"):
        estimate_scale_factor(ae, x, use="mode")


def test_gradients_reach_the_encoder_through_the_sample():
    ae = AutoencoderKL("tiny")
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    recon, post = ae(x, generator=torch.Generator().manual_seed(0))
    ((recon - x).abs().mean() + post.kl().mean()).backward()
    assert ae.encoder.conv_in.weight.grad.abs().sum() > 0
