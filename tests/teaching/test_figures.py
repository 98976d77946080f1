"""The measurements behind the teaching figures, checked against closed forms."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest
import torch

from oasis_lib import NoiseSchedule
from oasis_lib.diffusion.objectives import training_target
from oasis_lib.teaching import figures

matplotlib.use("Agg")
REPO = Path(__file__).resolve().parents[2]


def _oracle(schedule, x0, prediction_type):
    """A 'network' that knows x0: from x_t it recovers eps exactly, so its output is the target."""
    def model(x_t, t):
        a = schedule.sqrt_alpha_bar[t].view(-1, 1, 1, 1).double()
        s = schedule.sqrt_one_minus_alpha_bar[t].view(-1, 1, 1, 1).double()
        eps = ((x_t.double() - a * x0.double()) / s).float()
        return training_target(schedule, x0, eps, t, prediction_type)
    return model


@pytest.mark.parametrize("prediction_type", ["eps", "x0", "v"])
def test_an_oracle_has_zero_error_at_every_t(prediction_type):
    schedule = NoiseSchedule("cosine", 1000)
    x0 = torch.rand((3, 1, 8, 8), generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = figures.per_timestep_errors(_oracle(schedule, x0, prediction_type), schedule, x0,
                                      [0, 500, 998], prediction_type=prediction_type)
    assert out["t"].tolist() == [0, 500, 998]
    assert out["target_mse"].max() < 1e-8
    assert out["x0_mse"].max() < 1e-6


def test_a_zero_network_errs_by_the_target_variance():
    """Output 0 for an eps-target: the MSE is E[eps^2] = 1 (the fixed noise's mean square)."""
    schedule = NoiseSchedule("linear", 100, warn=False)
    x0 = torch.zeros((4, 1, 16, 16))
    out = figures.per_timestep_errors(lambda x, t: torch.zeros_like(x), schedule, x0, [10, 50],
                                      prediction_type="eps", seed=3)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(out["target_mse"], noise.double().pow(2).mean().expand(2))


def test_bad_arguments_are_refused():
    schedule = NoiseSchedule("cosine", 10)
    x0 = torch.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="choose one of"):
        figures.per_timestep_errors(lambda x, t: x, schedule, x0, [1], prediction_type="score")
    with pytest.raises(ValueError, match=r"in \[0, 9\]"):
        figures.per_timestep_errors(lambda x, t: x, schedule, x0, [10], prediction_type="eps")


def test_ema_trajectories_follow_the_ema_recursion():
    tr = figures.ema_trajectories(decays=(0.9, 0.99), steps=50, warmup=True)
    live = tr["live"]
    for d in (0.9, 0.99):
        ema, prev = tr[f"ema {d:g}"], 0.0  # the weight starts at 0
        for k in range(50):
            prev = d * prev + (1 - d) * float(live[k])
            assert abs(float(ema[k]) - prev) < 1e-6
    prev = 0.0
    for n in range(50):  # warm-up: decay min(d, (1 + n) / (10 + n))
        d = min(0.99, (1 + n) / (10 + n))
        prev = d * prev + (1 - d) * float(live[n])
        assert abs(float(tr["ema 0.99, warm-up"][n]) - prev) < 1e-6


def test_the_sampler_benchmark_is_read_and_drawn():
    rows = figures.read_sampler_benchmark(REPO / "benchmarks" / "results" / "samplers.json")
    assert {(r["sampler"], r["nfe"], r["spacing"]) for r in rows} >= {
        ("ddpm", 1000, "trailing"), ("ddim", 10, "trailing"), ("unipc", 20, "trailing"),
        ("dpm++2m", 20, "karras")}
    assert len({r["n"] for r in rows}) == 1  # one sample count for every row, DDPM included
    assert rows[0]["n"] >= 128
    assert all("frechet_segmenter" in r and "frechet_segmenter_floor" in r for r in rows)
    fig = figures.plot_steps_vs_quality(rows)
    assert [ax.get_title() for ax in fig.axes] == ["Fréchet distance", "KID ×10³"]
    lines = fig.axes[0].get_lines()
    ddim = [ln for ln in lines if ln.get_label().startswith("DDIM")][0]
    assert list(ddim.get_xdata()) == sorted(r["nfe"] for r in rows if r["sampler"] == "ddim")
    karras = [ln for ln in lines if ln.get_label().startswith("UniPC Karras")][0]
    assert karras.get_linestyle() == "--"
    ddpm = [ln for ln in lines if ln.get_label().startswith("DDPM 1000")][0]
    value = next(r["frechet_segmenter"] for r in rows if r["sampler"] == "ddpm")
    assert list(ddpm.get_ydata()) == [value, value]  # a horizontal line at DDPM's value
    kid = next(r["kid_segmenter"] for r in rows if r["sampler"] == "ddpm")
    kid_ddpm = [ln for ln in fig.axes[1].get_lines() if ln.get_label().startswith("DDPM 1000")][0]
    assert list(kid_ddpm.get_ydata()) == [1e3 * kid, 1e3 * kid]  # KID drawn x 10^3


