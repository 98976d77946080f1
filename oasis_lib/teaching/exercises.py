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
=====================  ============================================================  ========

Conventions as in the library: images ``[B, C, H, W]``, timesteps 0-based long ``[B]`` (``t = -1``
in ``ddim_step`` is the clean data, alpha_bar = 1), schedule tensors such as
``schedule.alpha_bar`` are CPU float32 ``[T]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..data.summary import tissue_fractions as data_tissue_fractions
from ..diffusion.editing import ddim_invert_step
from ..diffusion.objectives import min_snr_weight, v_target
from ..diffusion.sampling import ddim_step
from ..diffusion.schedule import NoiseSchedule
from ..evaluation.metrics import frechet_from_stats, nearest_neighbours
from ..evaluation.tissue import dice_per_class
from ..models.autoencoder import DiagonalGaussian
from ..models.condition_encoding import encode_mask
from ..models.embeddings import sinusoidal_embedding
from ..training.ema import EMA
from . import solutions
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


# ---------------------------------------------------------------------------- references
def _ref_q_sample(schedule, x0, t, noise):
    return schedule.q_sample(x0, t, noise)


def _ref_min_snr_v(snr, gamma, *, schedule, t):
    return min_snr_weight(schedule, t, gamma, "v")


def _ref_ema_update(ema, live, decay):
    """The library's EMA (no warm-up) on a one-parameter module holding ``ema``."""
    holder, other = nn.Module(), nn.Module()
    holder.w, other.w = nn.Parameter(ema.clone()), nn.Parameter(live.clone())
    averager = EMA(holder, decay, warmup=False)
    averager.update(other)
    return averager.model.w.detach()


def _ref_posterior(schedule, x0, x_t, t):
    mean, var, _ = schedule.q_posterior(x0, x_t, t)
    return mean, var


def _ref_ddim_step(schedule, x_t, eps, t, t_prev):
    return ddim_step(eps, x_t, t, t_prev, schedule, prediction_type="eps", clip_x0=False)[0]


def _ref_cfg(eps_uncond, eps_cond, scale):
    return torch.lerp(eps_uncond, eps_cond, scale)  # an independent formula of the same line


def _ref_nearest_rms(queries, references):
    return nearest_neighbours(queries, references, metric="rms")


def _ref_frechet_diagonal(mu1, var1, mu2, var2):
    return frechet_from_stats(mu1.numpy(), np.diag(var1.numpy()), mu2.numpy(),
                              np.diag(var2.numpy()))


# ---------------------------------------------------------------------------- cases
SHAPES = ((4, 1, 8, 8), (2, 1, 16, 16), (3, 2, 4, 4))
SCHEDULES = (("cosine", 1000), ("linear", 100))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _timesteps(T: int, b: int, g: torch.Generator) -> Tensor:
    """b timesteps: 0, T-1 and random ones in between."""
    t = torch.randint(0, T, (b,), generator=g)
    t[0], t[-1] = 0, T - 1
    return t


def _image_cases() -> Iterator[tuple[str, NoiseSchedule, Tensor, Tensor, Tensor]]:
    """(description, schedule, a, b, t): two N(0, I) tensors, over the schedules and shapes."""
    for i, ((kind, T), shape) in enumerate((s, sh) for s in SCHEDULES for sh in SHAPES):
        g = _gen(i)
        schedule = NoiseSchedule(kind, T, warn=False)
        a, b = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        t = _timesteps(T, shape[0], g)
        yield f"{kind} schedule T={T}, shape {shape}, t={t.tolist()}", schedule, a, b, t


def _cases_tissue_fractions():
    for i, shape in enumerate(((2, 8, 8), (1, 16, 16), (5, 4, 6))):
        classes = 4 if i != 2 else 3  # the last case has no white matter (class 3) at all
        masks = torch.randint(0, classes, shape, generator=_gen(i))
        yield f"masks of shape {shape}, classes {list(range(classes))}", (masks,)


def _cases_q_sample():
    for desc, schedule, x0, noise, t in _image_cases():
        yield desc, (schedule, x0, t, noise)


def _cases_embedding():
    g = _gen(0)
    for dim in (32, 16, 8):
        t = torch.cat([torch.tensor([0, 1, 999]), torch.randint(0, 1000, (3,), generator=g)])
        yield f"t={t.tolist()}, dim={dim}", (t, dim)


def _cases_v_target():
    for desc, schedule, x0, eps, t in _image_cases():
        yield desc, (schedule, x0, eps, t)


def _cases_min_snr_v():
    for i, (kind, T) in enumerate(SCHEDULES):
        schedule = NoiseSchedule(kind, T, warn=False)
        t = _timesteps(T, 8, _gen(i))
        for gamma in (5.0, 1.0):
            yield (f"{kind} schedule T={T}, t={t.tolist()}, gamma={gamma}",
                   (schedule.snr[t], gamma), {"schedule": schedule, "t": t})


def _cases_ema():
    for i, (shape, decay) in enumerate((((3, 4), 0.9), ((16,), 0.999), ((2, 2, 3), 0.5))):
        g = _gen(i)
        ema, live = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        yield f"tensors of shape {shape}, decay={decay}", (ema, live, decay)


def _cases_posterior():
    for desc, schedule, x0, x_t, t in _image_cases():
        yield desc, (schedule, x0, x_t, t)


def _cases_ddim():
    steps = ((900, 800), (500, 250), (99, 0), (10, -1), (0, -1))
    for i, (t, t_prev) in enumerate(steps):
        g = _gen(i)
        schedule = NoiseSchedule("cosine", 1000)
        x_t, eps = torch.randn(SHAPES[i % 3], generator=g), torch.randn(SHAPES[i % 3], generator=g)
        yield f"cosine T=1000, shape {SHAPES[i % 3]}, t={t} -> t_prev={t_prev}", \
            (schedule, x_t, eps, t, t_prev)


def _cases_ddim_invert():
    steps = ((-1, 19), (19, 39), (250, 500), (800, 900), (949, 999))
    for i, (t, t_next) in enumerate(steps):
        g = _gen(i)
        schedule = NoiseSchedule("cosine", 1000)
        x, eps = torch.randn(SHAPES[i % 3], generator=g), torch.randn(SHAPES[i % 3], generator=g)
        yield f"cosine T=1000, shape {SHAPES[i % 3]}, t={t} -> t_next={t_next}", \
            (schedule, x, eps, t, t_next)


def _ref_ddim_invert_step(schedule, x, eps, t, t_next):
    return ddim_invert_step(eps, x, t, t_next, schedule)


def _cases_cfg():
    for i, scale in enumerate((0.0, 1.0, 3.0, 7.5)):
        g = _gen(i)
        shape = SHAPES[i % 3]
        yield f"shape {shape}, scale={scale}", (torch.randn(shape, generator=g),
                                                torch.randn(shape, generator=g), scale)


def _cases_dice():
    for i, (shape, k) in enumerate((((2, 8, 8), 4), ((1, 16, 16), 4), ((3, 5, 5), 5))):
        g = _gen(i)
        target = torch.randint(0, 4, shape, generator=g)  # with k = 5, class 4 is in neither
        pred = torch.where(torch.rand(shape, generator=g) < 0.7, target,
                           torch.randint(0, 4, shape, generator=g))
        yield f"masks of shape {shape}, num_classes={k}", (pred, target, k)


def _cases_frechet():
    for i, d in enumerate((1, 4, 16)):
        g = _gen(i)
        mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(
            d, generator=g, dtype=torch.float64)
        var1 = torch.rand(d, generator=g, dtype=torch.float64) + 0.1
        var2 = torch.rand(d, generator=g, dtype=torch.float64) + 0.1
        yield f"dimension {d}", (mu1, var1, mu2, var2)


def _cases_latent_kl():
    for i, shape in enumerate(((2, 4, 8, 8), (3, 2, 4, 4), (1, 8, 2, 2))):
        g = _gen(i)
        yield f"latents of shape {shape}", (torch.randn(shape, generator=g),
                                            torch.randn(shape, generator=g) * 2)


def _ref_latent_kl(mean, logvar):
    return DiagonalGaussian(mean, logvar).kl()


def _cases_mask_onehot():
    for i, shape in enumerate(((2, 8, 8), (3, 5, 7), (1, 16, 16))):
        g = _gen(i)
        present = torch.rand(shape[0], generator=g) < 0.6
        present[0] = True  # at least one real mask; the last case has only real masks
        present = present if i < 2 else torch.ones(shape[0], dtype=torch.bool)
        yield (f"masks of shape {shape}, present={present.tolist()}",
               (torch.randint(0, 4, shape, generator=g), present))


def _ref_mask_onehot(mask, present):
    return encode_mask(mask, encoding="onehot", present=present)


def _cases_nearest():
    sizes = ((3, 10, (1, 8, 8)), (5, 40, (1, 16, 16)), (1, 7, (2, 4, 4)))
    for i, (q, r, shape) in enumerate(sizes):
        g = _gen(i)
        refs = torch.rand((r, *shape), generator=g) * 2 - 1
        # queries: noisy copies of random references, so the nearest one is well defined
        pick = torch.randint(0, r, (q,), generator=g)
        queries = refs[pick] + 0.05 * torch.randn((q, *shape), generator=g)
        yield f"{q} queries against {r} references of shape {shape}", (queries, refs)


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
    Exercise("frechet_diagonal", "fn(mu1, var1, mu2, var2) -> float: the Fréchet distance",
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
