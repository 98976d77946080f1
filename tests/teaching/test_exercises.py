"""Every checker passes its own solution and reports a deliberately wrong function."""

from __future__ import annotations

import math

import pytest
import torch

from oasis_lib.teaching import exercises as ex
from oasis_lib.teaching.exercises import EXERCISES, CheckResult, check, solution


def _col(a, t, x):
    return a[t].reshape(-1, *([1] * (x.ndim - 1)))


# One plausible mistake per exercise (the ones students make).
WRONG = {
    # no minlength: a batch without white matter gives 3 numbers instead of 4
    "tissue_fractions": lambda m: torch.bincount(m.reshape(-1)).float() / m.numel(),
    # alpha_bar instead of its square root on x0
    "q_sample": lambda s, x0, t, n: _col(s.alpha_bar, t, x0) * x0
    + _col(1 - s.alpha_bar, t, x0).sqrt() * n,
    # DDPM's reference code divides by h - 1 (freq_shift=1): a different embedding
    "sinusoidal_embedding": lambda t, d: torch.cat([
        (t.float()[:, None] * 10000.0 ** (-torch.arange(d // 2) / (d // 2 - 1))).sin(),
        (t.float()[:, None] * 10000.0 ** (-torch.arange(d // 2) / (d // 2 - 1))).cos()], 1),
    # the coefficients swapped
    "v_target": lambda s, x0, e, t: _col(1 - s.alpha_bar, t, x0).sqrt() * e
    - _col(s.alpha_bar, t, x0).sqrt() * x0,
    # the eps-prediction weight used for a v-target
    "min_snr_v": lambda snr, g: (g / snr).clamp(max=1.0),
    # decay on the wrong side
    "ema_update": lambda e, w, d: (1 - d) * e + d * w,
    # the right mean, but the variance beta_t (DDPM's other choice) instead of beta tilde
    "posterior": lambda s, x0, xt, t: (ex.solution_posterior(s, x0, xt, t)[0],
                                       _col(s.betas, t, x0)),
    # t_prev = -1 read as alpha_bar[-1], the *last* step, instead of clean data
    "ddim_step": lambda s, xt, e, t, tp: s.alpha_bar[tp].sqrt()
    * ((xt - (1 - s.alpha_bar[t]).sqrt() * e) / s.alpha_bar[t].sqrt())
    + (1 - s.alpha_bar[tp]).sqrt() * e,
    # guidance around the conditional prediction
    "cfg": lambda u, c, s: c + s * (c - u),
    # IoU instead of Dice
    "dice": lambda p, t, k: torch.tensor([
        1.0 if ((p == c) | (t == c)).sum() == 0
        else float(((p == c) & (t == c)).sum()) / float(((p == c) | (t == c)).sum())
        for c in range(k)]),
    # variances where the formula has standard deviations
    "frechet_diagonal": lambda m1, v1, m2, v2: float(((m1 - m2) ** 2).sum()
                                                      + ((v1 - v2) ** 2).sum()),
    # the mean absolute difference instead of the root-mean-square one
    "nearest_rms": lambda q, r: (q.flatten(1)[:, None] - r.flatten(1)[None]).abs().mean(-1)
    .min(1),
    # the standard deviation where the formula has the variance (a sigma^2 = exp(logvar) slip)
    "latent_kl": lambda m, lv: 0.5 * (m.pow(2) + (0.5 * lv).exp() - 1 - lv).flatten(1).sum(1),
    # a one-hot of all four classes, background included, instead of three and the flag: the
    # null mask then reads as a mask with no pixel at all, and no channel says "no condition"
    "mask_onehot": lambda m, p: torch.nn.functional.one_hot(m, 4).permute(0, 3, 1, 2).float()
    * p.float()[:, None, None, None],
    # t = -1 read as alpha_bar[-1], the last step (nearly pure noise), instead of the clean image
    "ddim_invert_step": lambda s, x, e, t, tn: s.alpha_bar[tn].sqrt()
    * ((x - (1 - s.alpha_bar[t]).sqrt() * e) / s.alpha_bar[t].sqrt())
    + (1 - s.alpha_bar[tn]).sqrt() * e,
    # the weights of the noise-free data points, (x - mu_k) instead of (x - (1 - t) mu_k)
    "point_velocity": lambda x, t, p: (x - torch.softmax(
        -((x[:, None] - p[None]) ** 2).sum(-1) / (2 * t**2), dim=1) @ p) / t,
}


def test_every_exercise_has_a_wrong_function_and_a_checker():
    assert set(WRONG) == set(EXERCISES)
    for name in EXERCISES:
        assert callable(getattr(ex, f"check_{name}"))
        assert callable(getattr(ex, f"solution_{name}"))


@pytest.mark.parametrize("name", list(EXERCISES))
def test_solution_passes(name, capsys):
    result = getattr(ex, f"check_{name}")(getattr(ex, f"solution_{name}"))
    out = capsys.readouterr().out
    assert isinstance(result, CheckResult)
    assert result.passed, result.message
    assert out.startswith(f"{name}: passed, the same as oasis_lib on ")
    assert result.max_abs_error < 1e-2


@pytest.mark.parametrize("name", list(EXERCISES))
def test_wrong_function_is_reported(name, capsys):
    result = check(name, WRONG[name])
    out = capsys.readouterr().out
    assert not result
    assert out.startswith(f"{name}: FAILED on ")
    assert "max abs error" in out or "shape" in out


def test_report_names_the_case_and_the_position(capsys):
    result = ex.check_q_sample(WRONG["q_sample"])
    # the first case: cosine T=1000, shape (4, 1, 8, 8) with t = 0 first and t = 999 last
    assert "cosine schedule T=1000, shape (4, 1, 8, 8), t=[0, " in result.message
    assert "first mismatch at index (" in result.message
    assert 0 < result.max_abs_error < math.inf


def test_posterior_variance_mistake_is_located_in_the_second_output():
    result = check("posterior", WRONG["posterior"], quiet=True)
    assert "output 1:" in result.message


def test_wrong_shape_exception_and_stub_are_reported(capsys):
    result = check("tissue_fractions", WRONG["tissue_fractions"], quiet=True)
    assert "shape (3,), expected (4,)" in result.message

    def raises(*args):
        raise KeyError("oops")

    result = check("cfg", raises, quiet=True)
    assert not result.passed
    assert "raised KeyError" in result.message
    assert result.max_abs_error == math.inf

    def stub(*args):
        raise NotImplementedError

    assert "not implemented yet" in ex.check_cfg(stub).message
    assert capsys.readouterr().out.startswith("cfg: not implemented yet")


def test_nan_is_reported():
    result = check("cfg", lambda u, c, s: u * float("nan"), quiet=True)
    assert "non-finite" in result.message


def test_unknown_exercise_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown exercise 'ddpm'; choose one of \("):
        check("ddpm", ex.solution_cfg)
    with pytest.raises(ValueError, match="choose one of"):
        solution("nope")


def test_solution_shows_its_source(capsys):
    solution("ddim_step")
    out = capsys.readouterr().out
    assert out.startswith("# oasis_lib/")
    assert "def solution_ddim_step(" in out
    assert "Song et al. 2021 eq. 12" in out


def test_cases_are_fixed():
    """Same seeds, same inputs: a checker's verdict does not depend on the global RNG."""
    torch.manual_seed(123)
    a = [c[1] for c in EXERCISES["q_sample"].cases()]
    torch.manual_seed(7)
    b = [c[1] for c in EXERCISES["q_sample"].cases()]
    for x, y in zip(a, b, strict=True):
        assert all(torch.equal(u, v) for u, v in zip(x[1:], y[1:], strict=True))


def test_cases_cover_the_edges():
    ts = [c[1][2] for c in EXERCISES["q_sample"].cases()]
    assert all(int(t[0]) == 0 for t in ts)
    assert {int(t[-1]) for t in ts} == {999, 99}  # t = T-1 of both schedules
    steps = [(c[1][3], c[1][4]) for c in EXERCISES["ddim_step"].cases()]
    assert (0, -1) in steps


def test_teaching_modules_import_pyplot_only_when_drawing():
    """No module-level matplotlib import in oasis_lib.teaching (figures import it inside the
    functions that draw)."""
    import ast
    from pathlib import Path

    import oasis_lib.teaching

    for path in Path(oasis_lib.teaching.__file__).parent.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith("matplotlib") for n in names), path.name


def test_reveal_shows_the_solution_only_after_a_click(capsys):
    from unittest import mock

    from oasis_lib.teaching import exercises as exmod

    shown = []
    with mock.patch("IPython.display.display", side_effect=shown.append):
        exmod.reveal("ddim_step")
    (box,) = shown
    button, out = box.children
    assert button.description == "Reveal the solution"
    assert capsys.readouterr().out == ""  # nothing printed before the click
    with mock.patch.object(exmod, "solution") as solution_mock:
        button.click()
    solution_mock.assert_called_once_with("ddim_step")
    assert button.disabled
    with pytest.raises(ValueError, match="choose one of"):
        exmod.reveal("nope")
