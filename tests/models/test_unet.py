"""Tests for oasis_lib.models.unet and .embeddings (fast: tiny shapes, gpu preset built once)."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from oasis_lib.models.embeddings import SinusoidalPosEmb, sinusoidal_embedding
from oasis_lib.models.unet import UNET_PRESETS, UNet, UNetConfig, count_parameters

# Golden parameter counts (recompute and paste if an architecture change is intended).
PRESET_PARAMS = {"tiny": 299_937, "cpu": 4_056_193, "gpu": 30_301_633}


def perturbed(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Add noise to every weight, so the zero-initialised layers no longer hide the inputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model.eval()


@pytest.fixture(scope="module")
def tiny() -> UNet:
    torch.manual_seed(0)
    return perturbed(UNet("tiny"))


# --- embeddings -------------------------------------------------------------------------------
def test_embedding_shape_and_t0():
    emb = sinusoidal_embedding(torch.tensor([0, 5, 999]), 16)
    assert emb.shape == (3, 16)
    assert emb.dtype == torch.float32
    assert torch.equal(emb[0, :8], torch.zeros(8))  # sin(0) = 0
    assert torch.equal(emb[0, 8:], torch.ones(8))  # cos(0) = 1


def test_embedding_known_values():
    d, t = 8, 3.0
    emb = sinusoidal_embedding(torch.tensor([t]), d)[0]
    for i in range(d // 2):  # omega_i = 10000^(-2i/d), Vaswani et al.
        omega = 10000 ** (-2 * i / d)
        assert emb[i].item() == pytest.approx(math.sin(t * omega), abs=1e-6)
        assert emb[d // 2 + i].item() == pytest.approx(math.cos(t * omega), abs=1e-6)
    shifted = sinusoidal_embedding(torch.tensor([t]), d, freq_shift=1)[0]  # DDPM code, the seed
    assert shifted[d // 2 - 1].item() == pytest.approx(math.sin(t / 10000), abs=1e-6)


def test_embedding_distinct_rows_float_t_and_odd_dim():
    emb = sinusoidal_embedding(torch.arange(1000), 32)
    assert torch.cdist(emb, emb).add(torch.eye(1000)).min() > 1e-3  # every row differs
    assert torch.allclose(sinusoidal_embedding(torch.tensor([7.0]), 32), emb[7:8], atol=1e-6)
    odd = sinusoidal_embedding(torch.tensor([1, 2]), 7)
    assert odd.shape == (2, 7)
    assert torch.equal(odd[:, -1], torch.zeros(2))
    assert sinusoidal_embedding(4, 6).shape == (1, 6)  # Python scalar
    assert SinusoidalPosEmb(10)(torch.tensor([1, 2, 3])).shape == (3, 10)
    with pytest.raises(ValueError, match="dim"):
        sinusoidal_embedding(torch.tensor([1]), 0)


# --- configuration ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny", "cpu"])
def test_preset_parameter_counts(name):
    assert count_parameters(UNet(name)) == PRESET_PARAMS[name]


def test_gpu_preset_parameter_count_and_forward():
    model = UNet("gpu")  # the only time the big preset is built
    assert count_parameters(model) == PRESET_PARAMS["gpu"]
    assert model.config.image_size == 128
    out = model.eval()(torch.randn(1, 1, 128, 128), torch.tensor([10]))
    assert out.shape == (1, 1, 128, 128)


def test_defaults_are_cpu_preset():
    assert UNetConfig() == UNET_PRESETS["cpu"]
    assert UNet().config == UNET_PRESETS["cpu"]
    cfg = UNetConfig.preset("tiny", dropout=0.1)
    assert cfg.dropout == 0.1
    assert UNET_PRESETS["tiny"].dropout == 0.0  # presets are not modified
    with pytest.raises(dataclasses.FrozenInstanceError):
        UNET_PRESETS["tiny"].dropout = 0.5
    assert UNet(cfg, num_heads=2).config.num_heads == 2
    # round trip through a plain dict (as a checkpoint would store it; JSON turns tuples to lists)
    as_json = {k: list(v) if isinstance(v, tuple) else v
               for k, v in dataclasses.asdict(cfg).items()}
    assert UNetConfig(**as_json) == cfg


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attention_resolutions": (12,)}, "attention_resolutions.*never reached"),
        ({"norm_groups": 5}, r"norm_groups=5 must divide.*choose one of \[1, 2, 4, 8, 16, 32\]"),
        ({"image_size": 60}, r"image_size=60 must be divisible by 8.*\[56, 64\]"),
        ({"num_heads": 3}, "num_heads=3 must divide"),
        ({"base_channels": 0}, "base_channels must be an int >= 1"),
        ({"channel_mult": ()}, "channel_mult"),
        ({"dropout": 1.0}, "dropout"),
        ({"cond_channels": -1}, "cond_channels"),
        ({"no_such_option": 1}, "unknown UNetConfig option 'no_such_option'"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNetConfig.preset("cpu", **kwargs)


def test_preset_image_size_keeps_attention_levels():
    cfg = UNetConfig.preset("tiny", image_size=64)
    assert cfg.attention_resolutions == (16,)  # tiny's lowest level, as 8 is at 32x32
    assert cfg.level_attention == UNET_PRESETS["tiny"].level_attention
    assert UNetConfig.preset("gpu", image_size=64).attention_resolutions == (8, 4)
    with pytest.raises(ValueError, match="never reached"):  # explicit resolutions are checked
        UNetConfig.preset("tiny", image_size=64, attention_resolutions=(8,))
    with pytest.raises(ValueError, match="never reached"):
        UNET_PRESETS["tiny"].replace(image_size=64)


def test_unknown_preset():
    with pytest.raises(ValueError, match=r"unknown preset 'huge'.*'tiny', 'cpu', 'gpu'"):
        UNetConfig.preset("huge")
    with pytest.raises(ValueError, match="unknown preset"):
        UNet("huge")


# --- forward ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "size"), [("tiny", 32), ("tiny", 64), ("cpu", 64)])
def test_shape_round_trip_and_zero_output_at_init(name, size):
    model = UNet(name).eval()
    x = torch.randn(2, 1, size, size)
    out = model(x, torch.tensor([0, 999]))
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(x))  # zero-initialised conv_out


def test_output_depends_on_t_and_x(tiny):
    x = torch.randn(1, 1, 32, 32).expand(3, -1, -1, -1)
    with torch.no_grad():
        out = tiny(x, torch.tensor([0, 500, 500]))
        other = tiny(torch.randn(1, 1, 32, 32), torch.tensor([500]))
    assert not torch.allclose(out[0], out[1], atol=1e-4)  # time embedding is used
    assert torch.allclose(out[1], out[2], atol=1e-5)  # and nothing else differs
    assert not torch.allclose(out[1], other[0], atol=1e-4)


def test_scalar_and_float_t(tiny):
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        ref = tiny(x, torch.tensor([7, 7]))
        assert torch.allclose(tiny(x, 7), ref, atol=1e-6)
        assert torch.allclose(tiny(x, torch.tensor(7)), ref, atol=1e-6)
        assert torch.allclose(tiny(x, torch.tensor([7.0, 7.0])), ref, atol=1e-6)
    with pytest.raises(ValueError, match=r"t must have shape \[B\]=\[2\]"):
        tiny(x, torch.tensor([1, 2, 3]))


def test_channels_last_matches(tiny):
    x = torch.randn(2, 1, 32, 32)
    t = torch.tensor([3, 300])
    with torch.no_grad():
        ref = tiny(x, t)
        model_cl = copy.deepcopy(tiny).to(memory_format=torch.channels_last)
        out = model_cl(x.to(memory_format=torch.channels_last), t)
    assert torch.allclose(out, ref, atol=1e-5)


def test_wrong_input_channels_and_size(tiny):
    with pytest.raises(ValueError, match=r"in_channels=1.*got \(2, 3, 32, 32\)"):
        tiny(torch.randn(2, 3, 32, 32), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="divisible by 4"):
        tiny(torch.randn(1, 1, 30, 30), torch.tensor([1]))


def test_cond_channels():
    torch.manual_seed(0)
    model = perturbed(UNet("tiny", cond_channels=2))
    x, cond, t = torch.randn(2, 1, 32, 32), torch.randn(2, 2, 32, 32), torch.tensor([5, 6])
    with torch.no_grad():
        out = model(x, t, cond)
        assert out.shape == x.shape
        assert not torch.allclose(out, model(x, t, torch.zeros_like(cond)), atol=1e-4)
    with pytest.raises(ValueError, match="cond_channels=2: pass cond"):
        model(x, t)
    with pytest.raises(ValueError, match=r"cond_channels=2"):
        model(x, t, cond[:, :1])
    with pytest.raises(ValueError, match="cond_channels=0"):
        UNet("tiny")(x, t, cond)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = UNet("tiny")  # fresh init: zero layers must still receive gradient
    model(torch.randn(2, 1, 32, 32), torch.tensor([1, 2])).sub(1).pow(2).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert model.conv_out.weight.grad.abs().sum() > 0


def test_describe():
    model = UNet("tiny")
    rows = model.describe()
    names = [name for name, _ in rows]
    assert rows[0] == ("time_mlp", (1, 64))
    assert rows[1] == ("conv_in", (1, 16, 32, 32))
    assert rows[-1] == ("conv_out", (1, 1, 32, 32))
    assert ("mid_attn", (1, 32, 8, 8)) in rows
    assert "down.2.attns.0" in names
    assert "up.0.blocks.1" in names
    assert [s for n, s in model.describe((2, 1, 64, 64)) if n == "mid_attn"] == [(2, 32, 16, 16)]
    assert model.training  # describe restores the mode


def test_attention_product_is_fp32_under_cpu_autocast():
    # unet.attend: under CPU bf16 autocast the softmax(q k^T / sqrt(d)) v product runs on
    # fp32 copies of q, k, v (faster backward on CPUs, and exact to fp32); outside autocast
    # it is the plain call.
    from oasis_lib.models.unet import attend

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 16, 8, generator=g).bfloat16() for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attend(q, k, v)
    assert out.dtype == torch.float32
    expected = torch.softmax(q.float() @ k.float().transpose(-1, -2) / math.sqrt(8), -1)
    torch.testing.assert_close(out, expected @ v.float(), rtol=1e-5, atol=1e-5)
    plain = attend(q.float(), k.float(), v.float())
    torch.testing.assert_close(plain, out, rtol=1e-6, atol=1e-6)
    assert attend(q, k, v).dtype == torch.bfloat16  # no autocast: left as given
