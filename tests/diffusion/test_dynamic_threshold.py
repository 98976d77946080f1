"""Dynamic thresholding (Saharia et al. 2022 sec. 2.3): the closed form, and as the samplers'
x0 rule in place of the static clip."""

from __future__ import annotations

import pytest
import torch

from oasis_lib import NoiseSchedule, sample
from oasis_lib.diffusion.guidance import DynamicThreshold, dynamic_threshold


def test_closed_form_on_a_known_sample():
    # 200 values: |x| = 0.01, 0.02, ..., 2.00 with alternating signs; the 0.9 quantile of |x|
    # (torch's linear interpolation over 200 sorted values) is 0.01 * (1 + 0.9 * 199) = 1.801
    mags = torch.arange(1, 201, dtype=torch.float64) / 100
    x = (mags * torch.tensor([1.0, -1.0]).repeat(100).double()).reshape(1, 1, 10, 20)
    s = 0.01 * (1 + 0.9 * 199)
    out = dynamic_threshold(x, 0.9)
    want = x.clamp(-s, s) / s
    assert torch.allclose(out, want, atol=1e-12)
    assert out.abs().max() == pytest.approx(1.0)
    assert float(out.flatten()[0]) == pytest.approx(0.01 / s)  # small values shrink by 1 / s


def test_per_sample_threshold_and_the_floor_at_one():
    g = torch.Generator().manual_seed(0)
    inside = torch.rand((1, 1, 8, 8), generator=g) * 1.6 - 0.8   # all |x| < 1: s = 1
    outside = torch.randn((1, 1, 8, 8), generator=g, dtype=torch.float32) * 3
    out = dynamic_threshold(torch.cat([inside, outside]), 0.995)
    assert torch.equal(out[0], inside[0])                        # s = max(s, 1) = 1: unchanged
    s = torch.quantile(outside.abs().flatten(), 0.995)
    assert s > 1
    assert torch.allclose(out[1], outside[0].clamp(-s, s) / s)   # its own s, not the batch's
    # p = 1 divides by the largest |x|: the extremes land exactly on +-1
    assert dynamic_threshold(outside, 1.0).abs().max() == pytest.approx(1.0)


def test_as_the_samplers_clip_rule():
    """``clip_x0=DynamicThreshold(p)`` replaces the static clip: with a network whose x0
    stays inside [-1, 1] both give the same chain; with one that overshoots they differ and
    the dynamic one keeps the sign pattern of x0 with less saturation."""
    schedule = NoiseSchedule("cosine", 50, warn=False)

    def small(x, t):  # x0-prediction 0.5 tanh(x_t): always inside [-1, 1]
        return 0.5 * torch.tanh(x)

    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    shape = (2, 1, 8, 8)
    a = sample(small, schedule, shape, steps=10, generator=g(), progress=False,
               prediction_type="x0")
    b = sample(small, schedule, shape, steps=10, generator=g(), progress=False,
               prediction_type="x0", clip_x0=DynamicThreshold(0.995))
    assert torch.equal(a, b)  # s = max(quantile, 1) = 1: the dynamic rule is the static clip

    def big(x, t):  # x0-prediction 3 x: far outside [-1, 1]
        return 3.0 * x

    static = sample(big, schedule, shape, steps=10, generator=g(), progress=False,
                    prediction_type="x0")
    dyn = sample(big, schedule, shape, steps=10, generator=g(), progress=False,
                 prediction_type="x0", clip_x0=DynamicThreshold(0.995))
    assert static.abs().max() <= 1
    assert dyn.abs().max() <= 1
    saturated = lambda x: float((x.abs() > 0.999).float().mean())  # noqa: E731
    assert saturated(dyn) < saturated(static)


def test_bad_percentile():
    with pytest.raises(ValueError, match="percentile"):
        DynamicThreshold(0.0)
    with pytest.raises(ValueError, match="percentile"):
        dynamic_threshold(torch.zeros(1, 1, 2, 2), 1.5)
    assert repr(DynamicThreshold(0.99)) == "DynamicThreshold(percentile=0.99)"


def test_the_pipeline_hands_the_rule_to_the_sampler():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_conditional_pipeline import conditional_pipeline, mask_condition

    pipe = conditional_pipeline()
    calls = []

    def rule(x0):
        calls.append(x0.shape[0])
        return DynamicThreshold(0.9)(x0)

    pipe.sample(2, steps=3, condition=mask_condition(), guidance_scale=2.0, clip_x0=rule,
                progress=False)
    assert calls == [2, 2, 2]  # once per step, on the guided x0 of the whole batch
