"""Classifier-free guidance: limits s=0/1, the affine combination, prediction types, rescale."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from oasis_lib import NoiseSchedule, UNet, sample
from oasis_lib.diffusion.guidance import (
    ClassifierFreeGuidance,
    cat_conditions,
    rescale_guidance,
)
from oasis_lib.diffusion.objectives import PREDICTION_TYPES, model_output_to_x0_eps
from oasis_lib.models.condition_encoding import encode_mask, mask_channels
from oasis_lib.models.conditioning import Condition

T = 50
SHAPE = (3, 1, 8, 8)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


class CondNet(nn.Module):
    """A small non-linear conditional 'network' (eps output) on x_t and 4 mask channels."""

    def __init__(self, dtype=torch.float64):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(5, 4, 3, padding=1).to(dtype)
        self.norm = nn.GroupNorm(2, 4).to(dtype)
        self.out = nn.Conv2d(4, 1, 1).to(dtype)
        self.calls: list[int] = []

    def forward(self, x, t, cond):
        self.calls.append(x.shape[0])
        h = torch.tanh(self.norm(self.conv(torch.cat([x, cond.to(x.dtype)], dim=1))))
        return self.out(h) * (1 + t.to(x.dtype)[:, None, None, None] / T)


def _inputs(dtype=torch.float64):
    g = _gen(1)
    x = torch.randn(SHAPE, generator=g, dtype=dtype)
    t = torch.tensor([0, 20, 49])
    m = torch.randint(0, 4, (3, 8, 8), generator=g)
    cond = encode_mask(m).to(dtype)
    uncond = encode_mask(m, present=torch.zeros(3, dtype=torch.bool)).to(dtype)
    return x, t, cond, uncond


def test_scale_one_is_conditional_and_zero_unconditional_with_one_pass():
    net = CondNet()
    x, t, cond, uncond = _inputs()
    for scale, c in ((1.0, cond), (0.0, uncond)):
        net.calls.clear()
        out = ClassifierFreeGuidance(net, cond, uncond, scale=scale)(x, t)
        assert torch.equal(out, net(x, t, c))
        assert net.calls == [3, 3]  # the wrapper's single pass, then ours


@pytest.mark.parametrize("scale", [0.5, 2.0, 5.0])
def test_guided_output_is_the_affine_combination_in_one_batched_call(scale):
    net = CondNet()
    x, t, cond, uncond = _inputs()
    c, u = net(x, t, cond), net(x, t, uncond)
    net.calls.clear()
    cfg = ClassifierFreeGuidance(net, cond, uncond, scale=scale)
    out = cfg(x, t)
    assert net.calls == [6]
    assert cfg.nfe_batches == 1
    torch.testing.assert_close(out, u + scale * (c - u), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, (1 + (scale - 1)) * c - (scale - 1) * u)  # s = 1 + w
    net.calls.clear()
    two = ClassifierFreeGuidance(net, cond, uncond, scale=scale, batched=False)(x, t)
    assert net.calls == [3, 3]
    torch.testing.assert_close(two, out, rtol=1e-12, atol=1e-12)


def test_guidance_is_equivalent_across_prediction_types():
    """Guide eps, x0 or v outputs of the same network: the same x0 (and eps) comes out."""
    s = NoiseSchedule("cosine", T)
    net = CondNet()
    x, t, cond, uncond = _inputs()

    def as_type(pt):
        def model(x_t, t_, c):
            eps = net(x_t, t_, c)
            x0, _ = model_output_to_x0_eps(s, eps, x_t, t_, "eps")
            if pt == "eps":
                return eps
            if pt == "x0":
                return x0
            return s.gather("sqrt_alpha_bar", t_, x_t) * eps \
                - s.gather("sqrt_one_minus_alpha_bar", t_, x_t) * x0
        return model

    results = {}
    for pt in PREDICTION_TYPES:
        out = ClassifierFreeGuidance(as_type(pt), cond, uncond, scale=3.0)(x, t)
        results[pt] = model_output_to_x0_eps(s, out, x, t, pt)
    for pt in ("x0", "v"):
        for k in range(2):  # x0 and eps
            torch.testing.assert_close(results[pt][k], results["eps"][k], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("space", ["x0", "output"])
def test_rescale_zero_is_plain_cfg_and_one_matches_the_conditional_std(space):
    s = NoiseSchedule("cosine", T)
    net = CondNet()
    x, t, cond, uncond = _inputs()
    c, u = net(x, t, cond), net(x, t, uncond)
    plain = u + 4.0 * (c - u)
    kw = {"scale": 4.0, "rescale_space": space, "schedule": s, "prediction_type": "eps"}
    out0 = ClassifierFreeGuidance(net, cond, uncond, rescale=0.0, **kw)(x, t)
    torch.testing.assert_close(out0, plain, rtol=1e-12, atol=1e-12)
    out1 = ClassifierFreeGuidance(net, cond, uncond, rescale=1.0, **kw)(x, t)
    half = ClassifierFreeGuidance(net, cond, uncond, rescale=0.5, **kw)(x, t)
    if space == "x0":
        to_x0 = lambda o: model_output_to_x0_eps(s, o, x, t, "eps")[0]  # noqa: E731
        ref, got, got0, got_half = to_x0(c), to_x0(out1), to_x0(out0), to_x0(half)
    else:
        ref, got, got0, got_half = c, out1, out0, half
    dims = (1, 2, 3)
    torch.testing.assert_close(got.std(dim=dims), ref.std(dim=dims), rtol=1e-9, atol=1e-12)
    assert not torch.allclose(got0.std(dim=dims), ref.std(dim=dims))  # plain CFG does not
    torch.testing.assert_close(got_half, 0.5 * got + 0.5 * got0, rtol=1e-9, atol=1e-9)


def test_rescale_guidance_function_limits():
    g = _gen(2)
    guided, cond = torch.randn(4, 1, 5, 5, generator=g) * 3, torch.randn(4, 1, 5, 5, generator=g)
    assert torch.equal(rescale_guidance(guided, cond, 0.0), guided)
    torch.testing.assert_close(rescale_guidance(guided, cond, 1.0).std(dim=(1, 2, 3)),
                               cond.std(dim=(1, 2, 3)))
    with pytest.raises(ValueError, match=r"phi must be in \[0, 1\]"):
        rescale_guidance(guided, cond, 2.0)


def test_condition_objects_are_batched_with_their_null_twin():
    seen = []

    def model(x, t, c):
        seen.append(c)
        return x * c.present("mask").to(x.dtype)[:, None, None, None]

    m = torch.randint(0, 4, (2, 4, 4), generator=_gen(3))
    cond = Condition(mask=m, slice_index=torch.tensor([3, 7]))
    x, t = torch.randn(2, 1, 4, 4, generator=_gen(4)), torch.tensor([5, 5])
    out = ClassifierFreeGuidance(model, cond, scale=2.0)(x, t)  # uncond = cond.null_like()
    batch = seen[0]
    assert batch.batch_size == 4
    assert batch.present("mask").tolist() == [True, True, False, False]
    assert batch.present("slice").tolist() == [True, True, False, False]
    torch.testing.assert_close(out, 2.0 * x)  # u = 0, c = x


def test_cfg_drives_the_samplers_and_restores_train_mode():
    s = NoiseSchedule("cosine", T)
    net = CondNet(dtype=torch.float32)
    net.train()
    _, _, cond, uncond = _inputs(torch.float32)
    cfg = ClassifierFreeGuidance(net, cond, uncond, scale=1.0)
    guided = sample(cfg, s, SHAPE, sampler="ddim", steps=5, generator=_gen(0), progress=False)
    plain = sample(lambda x, t: net(x, t, cond), s, SHAPE, sampler="ddim", steps=5,
                   generator=_gen(0), progress=False)
    assert torch.equal(guided, plain)
    assert net.training  # sample() put the wrapped network in eval mode and restored it
    strong = sample(ClassifierFreeGuidance(net, cond, uncond, scale=3.0), s, SHAPE,
                    sampler="dpm++2m", steps=5, generator=_gen(0), progress=False)
    assert strong.shape == SHAPE
    assert torch.isfinite(strong).all()


def test_bad_options_and_inputs():
    net = CondNet()
    x, t, cond, uncond = _inputs()
    with pytest.raises(ValueError, match=r"unknown rescale_space 'eps'; choose one of"):
        ClassifierFreeGuidance(net, cond, uncond, rescale_space="eps")
    with pytest.raises(ValueError, match="needs the schedule"):
        ClassifierFreeGuidance(net, cond, uncond, rescale=0.7)
    with pytest.raises(ValueError, match="pass uncond"):
        ClassifierFreeGuidance(net, cond)
    with pytest.raises(ValueError, match="batch size 3 but uncond has 2"):
        ClassifierFreeGuidance(net, cond, uncond[:2])
    with pytest.raises(ValueError, match="unknown prediction_type"):
        ClassifierFreeGuidance(net, cond, uncond, prediction_type="score")
    with pytest.raises(ValueError, match="condition has batch size 3 but x_t has 2"):
        ClassifierFreeGuidance(net, cond, uncond, scale=2.0)(x[:2], t[:2])
    with pytest.raises(TypeError, match="cannot batch conditions"):
        cat_conditions(cond, [1, 2])


def test_batched_guidance_through_a_real_unet_matches_two_passes():
    """GroupNorm and attention act per sample, so one 2B batch equals two B batches."""
    torch.manual_seed(0)
    net = UNet("tiny", image_size=16, cond_channels=mask_channels("onehot")).eval()
    nn.init.normal_(net.conv_out.weight, std=0.1)  # the untrained conv_out is exactly zero
    _, t, _, _ = _inputs(torch.float32)
    x = torch.randn(3, 1, 16, 16, generator=_gen(8))
    m = torch.randint(0, 4, (3, 16, 16), generator=_gen(9))
    cond = encode_mask(m)
    uncond = encode_mask(m, present=torch.zeros(3, dtype=torch.bool))
    with torch.no_grad():
        one = ClassifierFreeGuidance(net, cond, uncond, scale=2.0)(x, t)
        two = ClassifierFreeGuidance(net, cond, uncond, scale=2.0, batched=False)(x, t)
    torch.testing.assert_close(one, two, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(net(x, t, cond), net(x, t, uncond))  # the mask matters
