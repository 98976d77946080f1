"""The sampling experiment of notebook 05: distances to a reference end point, and its checker."""

from __future__ import annotations

import pytest
import torch

from oasis_lib import NoiseSchedule
from oasis_lib.diffusion.pipeline import DiffusionPipeline
from oasis_lib.teaching.experiments import sampling as E


class Oracle(torch.nn.Module):
    """The exact eps of x0 ~ N(0, c^2 I): eps = sqrt(1 - ab) x_t / (ab c^2 + 1 - ab). Its
    probability-flow ODE has a closed-form solution, so solver errors are pure discretisation."""

    def __init__(self, schedule: NoiseSchedule, c: float = 0.5) -> None:
        super().__init__()
        self.ab, self.c = schedule.f64("alpha_bar").float(), c

    def forward(self, x, t):
        ab = self.ab[t].view(-1, 1, 1, 1)
        return (1 - ab).sqrt() * x / (ab * self.c**2 + 1 - ab)


class _Pipe:
    """The one method of a DiffusionPipeline the experiment uses, on the oracle."""

    def __init__(self, schedule):
        self.schedule, self.model = schedule, Oracle(schedule)

    def sample(self, n, **kw):
        from oasis_lib.diffusion.sampling import sample
        return sample(self.model, self.schedule, (n, 1, 4, 4), prediction_type="eps",
                      clip_x0=False, **kw)


@pytest.fixture
def pipe():
    return _Pipe(NoiseSchedule("cosine", 1000))


def test_ddim_first_order_and_2m_faster(pipe):
    """On the Gaussian oracle, DDIM's distance to the reference falls with the steps, about 2x
    per doubling (first order), and DPM-Solver++(2M) (second order) is closer
    (over 10x from 20 steps)."""
    x_T = torch.randn((2, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    ddim = E.steps_vs_reference(pipe, x_T, steps=(10, 20, 40), reference_steps=200)
    assert list(ddim) == [10, 20, 40]
    assert E.check_more_steps_closer(ddim, quiet=True)
    for n in (10, 20):
        assert 1.5 < ddim[n] / ddim[2 * n] < 2.6
    dpm = E.steps_vs_reference(pipe, x_T, sampler="dpm++2m", steps=(10, 20, 40),
                               reference_steps=200)
    assert E.check_more_steps_closer(dpm, quiet=True)
    assert all(dpm[n] < ddim[n] / 2 for n in (10, 20, 40))
    assert dpm[20] < ddim[20] / 10


def test_check_more_steps_closer(capsys):
    assert E.check_more_steps_closer({5: 0.2, 10: 0.1, 20: 0.05})
    assert "10 -> 20 steps: 2.0x closer" in capsys.readouterr().out
    assert not E.check_more_steps_closer({5: 0.2, 10: 0.3}, quiet=True)
    assert not E.check_more_steps_closer({5: 0.2}, quiet=True)
    assert "   5 steps: mean |x - x_ref| = 0.2000" in E.distances_table({10: 0.1, 5: 0.2})


def test_stochastic_sampler_refused(pipe):
    with pytest.raises(ValueError, match="stochastic"):
        E.steps_vs_reference(pipe, torch.zeros(1, 1, 4, 4), sampler="ddpm")


def test_pipeline_has_the_sample_signature():
    """The experiment calls DiffusionPipeline.sample with these keywords."""
    import inspect
    params = inspect.signature(DiffusionPipeline.sample).parameters
    assert {"sampler", "steps", "x_T", "spacing", "progress"} <= set(params)
