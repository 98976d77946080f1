"""The experiment exercise of notebook 04: eps against v, checked by the direction of the effect."""

from __future__ import annotations

import pytest
import torch

from oasis_lib.teaching.experiments import training
from oasis_lib.teaching.experiments.training import HIGH_T, TIMESTEPS, check_eps_vs_v


def _run(x0_mse: list[float], ts=TIMESTEPS) -> dict[str, torch.Tensor]:
    return {"t": torch.tensor(ts), "x0_mse": torch.tensor(x0_mse, dtype=torch.float64)}


def test_the_checker_passes_only_when_eps_is_worse_at_high_t(capsys):
    low_then_flat = [0.0, 0.01, 0.1, 0.15, 0.15, 0.15, 0.15, 0.15, 0.15]
    growing = [0.0, 0.01, 0.1, 0.3, 0.7, 1.3, 1.5, 1.6, 1.6]
    assert check_eps_vs_v({"v": _run(low_then_flat), "eps": _run(growing)})
    out = capsys.readouterr().out
    assert "eps_vs_v: passed" in out
    assert "(mean 1.500 against 0.150)" in out
    assert not check_eps_vs_v({"v": _run(growing), "eps": _run(low_then_flat)})
    assert "eps_vs_v: FAILED" in capsys.readouterr().out


def test_the_checker_says_what_is_missing(capsys):
    result = check_eps_vs_v({"v": _run([0.1] * len(TIMESTEPS))})
    assert not result
    assert "not run yet: no eps run" in capsys.readouterr().out
    short = _run([0.1, 0.2], ts=(0, 100))
    assert not check_eps_vs_v({"v": short, "eps": short}, quiet=True)  # no t in HIGH_T
    assert not check_eps_vs_v({"v": _run([0.1] * len(TIMESTEPS)), "eps": short}, quiet=True)


def test_unknown_prediction_type_is_refused():
    with pytest.raises(ValueError, match="unknown prediction_type 'noise'"):
        training.train_briefly("noise")


@pytest.mark.slow
def test_the_reference_run_shows_the_effect(demo_root):
    """A short real run of both targets on the small demo build: eps loses x0 at high t."""
    runs = training.reference_eps_vs_v(steps=20, root=demo_root)
    assert set(runs) == {"v", "eps"}
    for target, run in runs.items():
        assert run["prediction_type"] == target
        assert run["t"].tolist() == list(TIMESTEPS)
        assert torch.isfinite(run["x0_mse"]).all()
        assert (run["x0_mse"] <= 4.0).all()
    assert check_eps_vs_v(runs, quiet=True)
    high = torch.tensor([t in HIGH_T for t in TIMESTEPS])
    assert runs["eps"]["x0_mse"][high].min() > runs["v"]["x0_mse"][high].max()
    # cached: the same arguments give the same run
    assert training.train_briefly("v", steps=20, root=demo_root) is runs["v"]
