"""The experiment exercise of notebook 04: eps against v, checked by an effect of training."""

from __future__ import annotations

import pytest
import torch

from oasis_lib.teaching.experiments import training
from oasis_lib.teaching.experiments.training import CHECKED_T, TIMESTEPS, check_eps_vs_v


def _run(start: list[float], end: list[float], ts=TIMESTEPS) -> dict[str, torch.Tensor]:
    return {"t": torch.tensor(ts), "x0_mse_start": torch.tensor(start, dtype=torch.float64),
            "x0_mse": torch.tensor(end, dtype=torch.float64)}


# x0-MSE before and after training, shaped like the reference run: the eps network starts far
# worse at high t (its x0 error is its eps error / SNR_t), and keeps half of it.
V_START = [0.03, 0.2, 0.4, 0.5, 0.6, 0.6, 0.7]
V_END = [0.03, 0.15, 0.2, 0.2, 0.2, 0.15, 0.14]
EPS_START = [0.03, 0.3, 1.0, 2.0, 4.0, 10.0, 40.0]
EPS_END = [0.02, 0.15, 0.5, 1.0, 2.0, 5.0, 20.0]


def test_the_checker_passes_when_eps_keeps_the_larger_share(capsys):
    assert check_eps_vs_v({"v": _run(V_START, V_END), "eps": _run(EPS_START, EPS_END)})
    out = capsys.readouterr().out
    assert "eps_vs_v: passed" in out
    # mean share over t = 600..900: v (0.4 + 1/3 + 0.25 + 0.2) / 4, eps 0.5
    assert "left 50% of the eps run's untrained x0-MSE and 30% of the v run's" in out


def test_the_checker_fails_swapped_runs(capsys):
    assert not check_eps_vs_v({"v": _run(EPS_START, EPS_END), "eps": _run(V_START, V_END)})
    assert "eps_vs_v: FAILED" in capsys.readouterr().out


def test_the_checker_fails_runs_that_trained_nothing(capsys):
    """Untrained, the eps network's x0-MSE is already far larger than the v network's: the
    identity x0_hat - x0 = (eps - eps_hat) / sqrt(SNR_t), not training. The checker fails it."""
    assert not check_eps_vs_v({"v": _run(V_START, V_START), "eps": _run(EPS_START, EPS_START)})
    assert "did not lower the x0-MSE of the v and eps run" in capsys.readouterr().out
    # only the eps run trained: its share is below 1, the v run's is 1
    assert not check_eps_vs_v({"v": _run(V_START, V_START), "eps": _run(EPS_START, EPS_END)},
                              quiet=True)


def test_the_checker_says_what_is_missing(capsys):
    result = check_eps_vs_v({"v": _run(V_START, V_END)})
    assert not result
    assert "not run yet: no eps run" in capsys.readouterr().out
    short = _run([0.1, 0.2], [0.05, 0.1], ts=(0, 100))
    assert not check_eps_vs_v({"v": short, "eps": short}, quiet=True)  # no t in CHECKED_T
    assert not check_eps_vs_v({"v": _run(V_START, V_END), "eps": short}, quiet=True)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown prediction_type 'noise'"):
        training.train_briefly("noise")
    with pytest.raises(ValueError, match="steps must be >= 0"):
        training.train_briefly("v", steps=-1)


@pytest.mark.slow
def test_the_reference_run_shows_the_effect_and_no_training_fails(demo_root):
    """Short real runs on the small demo build: the eps run keeps the larger share of its x0
    error; swapped runs and untrained networks (steps=0) fail the checker."""
    runs = training.reference_eps_vs_v(steps=20, root=demo_root)
    assert set(runs) == {"v", "eps"}
    for target, run in runs.items():
        assert run["prediction_type"] == target
        assert run["t"].tolist() == list(TIMESTEPS)
        assert torch.isfinite(run["x0_mse"]).all()
        assert run["snr"][0] > 1 > run["snr"][-1] > 0.01  # t = 100 and t = 900, cosine
    checked = torch.tensor([t in CHECKED_T for t in TIMESTEPS])
    # untrained, eps is already far worse in x0 (the conversion), so raw errors prove nothing
    assert (runs["eps"]["x0_mse_start"][checked] > runs["v"]["x0_mse_start"][checked]).all()
    assert check_eps_vs_v(runs, quiet=True)
    assert not check_eps_vs_v({"v": runs["eps"], "eps": runs["v"]}, quiet=True)
    untrained = {k: training.train_briefly(k, steps=0, root=demo_root) for k in ("v", "eps")}
    for k, run in untrained.items():
        assert torch.equal(run["x0_mse"], run["x0_mse_start"])
        assert torch.equal(run["x0_mse_start"], runs[k]["x0_mse_start"])  # the same initial net
    assert not check_eps_vs_v(untrained, quiet=True)
    # cached: the same arguments give the same run
    assert training.train_briefly("v", steps=20, root=demo_root) is runs["v"]
