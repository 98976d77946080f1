"""The SNR-crossing experiment of notebook 02: the measurement agrees with the formula, and the
checker passes the reference change of setting and refuses the wrong ones."""

from __future__ import annotations

import pytest
import torch

from oasis_lib import NoiseSchedule
from oasis_lib.teaching.experiments import forward


@pytest.fixture(scope="module")
def slice_like() -> torch.Tensor:
    """A [1, 64, 64] image with a -1 background and a brighter disc: pixel variance about 0.4."""
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2) < 22**2
    g = torch.Generator().manual_seed(1)
    return torch.where(disc, 0.2 + 0.3 * torch.rand(64, 64, generator=g), -1.0)[None]


@pytest.mark.parametrize(("kind", "T"), [("cosine", 1000), ("quadratic", 500), ("linear", 1000)])
def test_predicted_crossing_is_where_alpha_bar_passes_one_over_one_plus_variance(kind, T):
    s = NoiseSchedule(kind, T, warn=False)
    for variance in (0.25, 1.0, 4.0):
        t = forward.predicted_crossing(s, variance)
        ab = s.alpha_bar.double()
        assert ab[t] < 1 / (1 + variance) <= ab[t - 1]


@pytest.mark.parametrize(("kind", "T"), [("cosine", 1000), ("quadratic", 500)])
def test_measured_crossing_matches_the_formula(slice_like, kind, T):
    s = NoiseSchedule(kind, T, warn=False)
    for x in (slice_like, forward.unit_variance(slice_like)):
        measured = forward.snr_crossing(x, s)
        predicted = forward.predicted_crossing(s, float(x.double().var()))
        assert abs(measured - predicted) <= 0.02 * T


def test_measured_snr_is_the_closed_form_snr_of_the_slice():
    s = NoiseSchedule("cosine", 1000)
    g = torch.Generator().manual_seed(0)
    x0 = 0.5 * torch.randn(1, 64, 64, generator=g)
    snr = forward.measured_snr(x0, s, torch.randn(x0.shape, generator=g))
    ab, var = s.alpha_bar.double(), float(x0.double().var())
    for t in (0, 100, 300, 500, 700):
        assert float(snr[t]) == pytest.approx(float(ab[t] * var / (1 - ab[t])), rel=0.15)
    assert (snr.diff() < 0).float().mean() > 0.95  # it falls with t


def test_checker_passes_the_reference_and_refuses_wrong_changes(slice_like, capsys):
    s = NoiseSchedule("cosine", 1000)
    assert forward.check_snr_crossing(forward.unit_variance, slice_like, s)
    assert "snr_crossing: passed" in capsys.readouterr().out
    assert not forward.check_snr_crossing(lambda x: x, slice_like, s)  # nothing changed
    assert "not 1" in capsys.readouterr().out
    assert not forward.check_snr_crossing(lambda x: x / 4, slice_like, s, quiet=True)

    def todo(x):
        raise NotImplementedError

    assert not forward.check_snr_crossing(todo, slice_like, s)
    assert "not implemented yet" in capsys.readouterr().out
