"""Exercises with checkers: the reader writes a function, a checker compares it with the library.

Each exercise has a name (``EXERCISES``), a checker ``check_<name>(fn)`` that calls the reader's
``fn`` and the library's own implementation on the same random inputs (fixed seeds, several
shapes and timesteps, the edge cases t = 0 and t = T-1 among them) and prints either a pass line
or what differs (the case, the largest absolute error and where it is), and a reference solution
that :func:`solution` shows (its source, rendered like :func:`~oasis_lib.teaching.show_source`).
The solutions are tested against the checkers, so a solution the reader reveals is known to pass.

=====================  ============================================================  ========
exercise               the reader writes                                             notebook
=====================  ============================================================  ========
``tissue_fractions``   fraction of pixels of each class 0..3 in a batch of masks     01
``q_sample``           x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps (Ho et al. eq. 4)    02
``sinusoidal_embedding``  [sin(t w_i), cos(t w_i)], w_i = 10000^(-i/h)               03
``v_target``           v = sqrt(ab_t) eps - sqrt(1 - ab_t) x0 (Salimans & Ho sec. 4) 04
``min_snr_v``          min(SNR, gamma) / (SNR + 1) (Hang et al. 2023)                04
``ema_update``         theta_ema <- d theta_ema + (1 - d) theta                      04
``posterior``          mean and variance of q(x_{t-1} | x_t, x0) (Ho et al. eqs. 6-7) 05
``ddim_step``          Song et al. 2021 eq. 12 with eta = 0                          05
``cfg``                eps_uncond + s (eps_cond - eps_uncond) (Ho & Salimans 2022)   05
``dice``               2 |A and B| / (|A| + |B|) per class                           06
``frechet_diagonal``   Fréchet distance of two Gaussians with diagonal covariances   06
``nearest_rms``        each image's RMS distance to its nearest reference image       07
``latent_kl``          KL(N(mu, diag(e^logvar)) || N(0, I)) per item (VAE, LDM)       08
``mask_onehot``        the mask as CSF/grey/white one-hot channels + a presence flag  09
``ddim_invert_step``   one DDIM step run forward, t -> t_next (Song et al. eq. 12)     10
``point_velocity``     the exact flow velocity (x - E[x0 | x_t = x]) / t of point data 11
=====================  ============================================================  ========

Conventions as in the library: images ``[B, C, H, W]``, timesteps 0-based long ``[B]`` (``t = -1``
in ``ddim_step`` is the clean data, alpha_bar = 1), schedule tensors such as
``schedule.alpha_bar`` are CPU float32 ``[T]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..data.summary import tissue_fractions as data_tissue_fractions
from ..diffusion.objectives import v_target
from ..evaluation.tissue import dice_per_class
from ..models.embeddings import sinusoidal_embedding
from . import solutions
from .cases import (  # the cases and reference answers of each checker
    _cases_cfg,
    _cases_ddim,
    _cases_ddim_invert,
    _cases_dice,
    _cases_ema,
    _cases_embedding,
    _cases_frechet,
    _cases_latent_kl,
    _cases_mask_onehot,
    _cases_min_snr_v,
    _cases_nearest,
    _cases_point_velocity,
    _cases_posterior,
    _cases_q_sample,
    _cases_tissue_fractions,
    _cases_v_target,
    _ref_cfg,
    _ref_ddim_invert_step,
    _ref_ddim_step,
    _ref_ema_update,
    _ref_frechet_diagonal,
    _ref_latent_kl,
    _ref_mask_onehot,
    _ref_min_snr_v,
    _ref_nearest_rms,
    _ref_point_velocity,
    _ref_posterior,
    _ref_q_sample,
)
from .compare import _compare
from .solutions import (  # noqa: F401 - re-exported: exercises.solution_<name>
    solution_cfg,
    solution_ddim_invert_step,
    solution_ddim_step,
    solution_dice,
    solution_ema_update,
    solution_frechet_diagonal,
    solution_latent_kl,
    solution_mask_onehot,
    solution_min_snr_v,
    solution_nearest_rms,
    solution_point_velocity,
    solution_posterior,
    solution_q_sample,
    solution_sinusoidal_embedding,
    solution_tissue_fractions,
    solution_v_target,
)
from .source import show_source

# and check_<name>, solution_<name>
__all__ = ["EXERCISES", "CheckResult", "check", "reveal", "solution"]


@dataclass(frozen=True)
class CheckResult:
    """What a checker found: ``passed``, the largest absolute error over all cases (inf if the
    function raised or returned the wrong shape), and the printed ``message``."""

    name: str
    passed: bool
    max_abs_error: float
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"CheckResult({self.name!r}, passed={self.passed})"


@dataclass(frozen=True)
class Exercise:
    """One exercise: the cases (``(description, args)`` pairs), the library's answer, the
    solution, and the tolerance of the comparison (``|a - b| <= atol + rtol |b|``)."""

    name: str
    task: str
    cases: Callable[[], Iterator[tuple[str, tuple]]]
    reference: Callable
    solution: Callable
    atol: float = 1e-5
    rtol: float = 1e-5


EXERCISES: dict[str, Exercise] = {e.name: e for e in (
    Exercise("tissue_fractions", "fn(masks) -> float [4]: share of classes 0..3 among all pixels",
             _cases_tissue_fractions, data_tissue_fractions, solution_tissue_fractions),
    Exercise("q_sample", "fn(schedule, x0, t, noise) -> x_t (Ho et al. eq. 4)",
             _cases_q_sample, _ref_q_sample, solution_q_sample),
    Exercise("sinusoidal_embedding", "fn(t, dim) -> [B, dim]: sines, then cosines",
             _cases_embedding, sinusoidal_embedding, solution_sinusoidal_embedding, atol=1e-4),
    Exercise("v_target", "fn(schedule, x0, eps, t) -> v (Salimans & Ho 2022)",
             _cases_v_target, v_target, solution_v_target),
    Exercise("min_snr_v", "fn(snr, gamma) -> weight [B] of the v-loss (Hang et al. 2023)",
             _cases_min_snr_v, _ref_min_snr_v, solution_min_snr_v, rtol=1e-4),
    Exercise("ema_update", "fn(ema, live, decay) -> the new EMA tensor",
             _cases_ema, _ref_ema_update, solution_ema_update),
    # float32 1 - alpha_bar at t = 0 (alpha_bar within 4e-5 of 1) keeps ~3 digits: rtol 5e-3
    Exercise("posterior", "fn(schedule, x0, x_t, t) -> (mean, variance [B, 1, 1, 1]) of "
             "q(x_{t-1} | x_t, x0)", _cases_posterior, _ref_posterior, solution_posterior,
             atol=1e-5, rtol=5e-3),
    Exercise("ddim_step", "fn(schedule, x_t, eps, t, t_prev) -> x_{t_prev} (DDIM, eta = 0)",
             _cases_ddim, _ref_ddim_step, solution_ddim_step, atol=1e-4, rtol=1e-4),
    Exercise("cfg", "fn(eps_uncond, eps_cond, scale) -> the guided prediction",
             _cases_cfg, _ref_cfg, solution_cfg),
    Exercise("dice", "fn(pred, target, num_classes) -> float [num_classes] Dice per class",
             _cases_dice, dice_per_class, solution_dice),
    Exercise("frechet_diagonal",
             "fn(mu1, var1, mu2, var2) -> float: d², the squared Fréchet distance",
             _cases_frechet, _ref_frechet_diagonal, solution_frechet_diagonal, rtol=1e-6),
    Exercise("nearest_rms", "fn(queries, references) -> (RMS distance [Q], index [Q]) of the "
             "nearest reference", _cases_nearest, _ref_nearest_rms, solution_nearest_rms,
             atol=1e-6),
    Exercise("latent_kl", "fn(mean, logvar) -> float [B]: KL(q(z | x) || N(0, I)) per item",
             _cases_latent_kl, _ref_latent_kl, solution_latent_kl, rtol=1e-5),
    Exercise("mask_onehot", "fn(mask, present) -> float [B, 4, H, W]: CSF, grey, white one-hot "
             "and the presence flag, all 0 where present is False", _cases_mask_onehot,
             _ref_mask_onehot, solution_mask_onehot, atol=0.0, rtol=0.0),
    Exercise("ddim_invert_step", "fn(schedule, x, eps, t, t_next) -> x_{t_next} (DDIM run "
             "forward, eta = 0; t = -1 is the clean image)", _cases_ddim_invert,
             _ref_ddim_invert_step, solution_ddim_invert_step, atol=1e-4, rtol=1e-4),
    Exercise("point_velocity", "fn(x, t, points) -> [N, D]: the exact velocity v(x, t) of the "
             "straight path when the data are the equally likely points", _cases_point_velocity,
             _ref_point_velocity, solution_point_velocity, atol=1e-6, rtol=1e-6),
)}


# ---------------------------------------------------------------------------- checking
def check(name: str, fn: Callable, *, quiet: bool = False) -> CheckResult:
    """Run exercise ``name``'s cases through ``fn`` and the library; print and return the result.

    Raises:
        ValueError: if ``name`` is not one of ``EXERCISES``.
    """
    if name not in EXERCISES:
        raise ValueError(f"unknown exercise {name!r}; choose one of {tuple(EXERCISES)}")
    ex = EXERCISES[name]
    worst = 0.0
    n = 0
    for case in ex.cases():
        desc, args = case[0], case[1]
        ref_kwargs = case[2] if len(case) > 2 else {}
        want = ex.reference(*args, **ref_kwargs)
        try:
            got = fn(*args)
        except NotImplementedError:
            return _report(ex, False, math.inf, f"{name}: not implemented yet (the function "
                           f"raised NotImplementedError); task: {ex.task}", quiet)
        except Exception as err:  # noqa: BLE001 - the reader's code may raise anything
            return _report(ex, False, math.inf, f"{name}: FAILED on {desc}: raised "
                           f"{type(err).__name__}: {err}", quiet)
        err, problem = _compare(got, want, ex.atol, ex.rtol)
        worst = max(worst, err)
        n += 1
        if problem is not None:
            return _report(ex, False, worst, f"{name}: FAILED on {desc}: {problem}", quiet)
    # the tolerance, not the error itself, is printed: round-off differs between CPUs
    return _report(ex, True, worst, f"{name}: passed, the same as oasis_lib on {n} random cases "
                   f"(to within {ex.atol:g} + {ex.rtol:g} x |value|)", quiet)


def _report(ex: Exercise, passed: bool, worst: float, message: str, quiet: bool) -> CheckResult:
    if not quiet:
        print(message)
    return CheckResult(ex.name, passed, worst, message)


def solution(name: str) -> None:
    """Show the reference solution of exercise ``name`` (its source code)."""
    if name not in EXERCISES:
        raise ValueError(f"unknown exercise {name!r}; choose one of {tuple(EXERCISES)}")
    show_source(getattr(solutions, f"solution_{name}"))


def reveal(exercise) -> None:
    """A button that shows a reference solution only when the reader clicks it: of exercise
    ``exercise`` (a name in :data:`EXERCISES`), or the source of a function (an experiment's
    reference run). Running every cell of a notebook thus prints no solution."""
    if isinstance(exercise, str) and exercise not in EXERCISES:
        raise ValueError(f"unknown exercise {exercise!r}; choose one of {tuple(EXERCISES)}")
    if not isinstance(exercise, str) and not callable(exercise):
        raise TypeError(f"reveal takes an exercise name or a function, got {exercise!r}")
    import ipywidgets as widgets
    from IPython.display import display

    button, out = widgets.Button(description="Reveal the solution", icon="eye"), widgets.Output()

    def show(_):
        button.disabled = True
        with out:
            solution(exercise) if isinstance(exercise, str) else show_source(exercise)

    button.on_click(show)
    display(widgets.VBox([button, out]))


def _checker(name: str) -> Callable[[Callable], CheckResult]:
    def checker(fn: Callable, *, quiet: bool = False) -> CheckResult:
        return check(name, fn, quiet=quiet)

    checker.__name__ = checker.__qualname__ = f"check_{name}"
    checker.__doc__ = f"Check ``fn`` for exercise {name!r}: {EXERCISES[name].task}."
    return checker


check_tissue_fractions = _checker("tissue_fractions")
check_q_sample = _checker("q_sample")
check_sinusoidal_embedding = _checker("sinusoidal_embedding")
check_v_target = _checker("v_target")
check_min_snr_v = _checker("min_snr_v")
check_ema_update = _checker("ema_update")
check_posterior = _checker("posterior")
check_ddim_step = _checker("ddim_step")
check_cfg = _checker("cfg")
check_dice = _checker("dice")
check_frechet_diagonal = _checker("frechet_diagonal")
check_nearest_rms = _checker("nearest_rms")
check_latent_kl = _checker("latent_kl")
check_mask_onehot = _checker("mask_onehot")
check_ddim_invert_step = _checker("ddim_invert_step")
check_point_velocity = _checker("point_velocity")
