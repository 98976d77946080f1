"""Fast multistep solvers in data (x0) prediction, and Karras et al. 2022 time steps.

Notation (Lu et al. 2022, DPM-Solver++): alpha_t = sqrt(alpha_bar_t), sigma_t =
sqrt(1 - alpha_bar_t), lambda_t = log(alpha_t / sigma_t) (half the log-SNR), and for a step from
s = t_i to t = t_{i+1} < s, h = lambda_t - lambda_s > 0. ``m_k`` is the data prediction x0 at the
k-th most recent timestep (m_0 at s). The exact solution of the probability-flow ODE in data
prediction (Lu et al. 2022, the variation-of-constants formula DPM-Solver++ starts from; "(*)"
below) is

    x_t = (sigma_t / sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^lambda x0(lambda) d lambda,

and each solver replaces x0(lambda) by a polynomial through the last predictions (Taylor in
lambda). Samplers (``MULTISTEP_SAMPLERS``):

- ``"dpm++2m-sde"``: SDE-DPM-Solver++(2M) (the SDE variant of Lu et al. 2022, as the authors'
  and diffusers' ``sde-dpmsolver++`` in the "midpoint" form, and k-diffusion's
  ``sample_dpmpp_2m_sde`` with eta = 1),
  a stochastic solver of the reverse SDE: see :func:`dpmpp_2m_sde_step`.
- ``"dpm++3m"``: DPM-Solver++(3M), the third-order multistep solver (Lu et al. 2022, the
  multistep DPM-Solver++ taken to third order): see :func:`dpmpp_3m_step`.
- ``"unipc"``: UniPC (Zhao et al. 2023, "UniPC: a unified predictor-corrector framework") with
  B(h) = e^h - 1 ("bh2"), the order-3 predictor UniP and the corrector UniC: see
  :func:`unipc_update`.

Order per step ``i`` of ``n``: ``min(order, i + 1, n - i)``, i.e. lower orders while the history
fills up (multistep warm-up) and on the last two steps (diffusers' ``lower_order_final``); the last
step goes to clean data (sigma = 0, lambda = +inf) and is first order: the last x0 prediction.
2M-SDE keeps second order on the second-to-last step (as ``dpm++2m``): ``min(2, i + 1)`` and
first order on the last. A history entry with alpha = 0 (zero terminal SNR, lambda = -inf) is
not used for the higher orders.

Random draws (``dpm++2m-sde``): one ``randn`` per step except the last (which goes to sigma = 0),
drawn by the sampler's ``step`` (:mod:`oasis_lib.diffusion.samplers.multistep`) right after that
step's network call.

Karras spacing (:func:`karras_timesteps`): EDM eq. 5 sigmas from EDM's sigma_max = 80 down to the
schedule's smallest sigma, each mapped to the discrete timestep nearest in log sigma, where
sigma = sqrt((1 - alpha_bar) / alpha_bar) (EDM's sigma of the VP process, their Table 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .schedule import NoiseSchedule


@dataclass(frozen=True)
class SolverSpec:
    """What a multistep solver declares; :class:`MultistepSolver` and the sampler classes of
    :mod:`oasis_lib.diffusion.samplers.multistep` read it (no name is compared).

    order: the highest order. lower_order_final: cap the order at n - i (the last two steps of
    n, diffusers' ``lower_order_final``); otherwise only the last step is first order.
    stochastic: a noise draw on every step but the last. corrector: UniC after each step.
    """

    order: int
    lower_order_final: bool = True
    stochastic: bool = False
    corrector: bool = False


SOLVER_SPECS = {
    "dpm++2m-sde": SolverSpec(order=2, lower_order_final=False, stochastic=True),
    "dpm++3m": SolverSpec(order=3),
    "unipc": SolverSpec(order=3, corrector=True),
}
MULTISTEP_SAMPLERS = tuple(SOLVER_SPECS)
#: Highest order each solver uses.
SOLVER_ORDERS = {name: spec.order for name, spec in SOLVER_SPECS.items()}

#: EDM's defaults (Karras et al. 2022, sec. 5 / Table 1): sigma_max = 80, rho = 7.
KARRAS_SIGMA_MAX = 80.0
KARRAS_RHO = 7.0


# --------------------------------------------------------------------------- time steps
def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = KARRAS_RHO
                  ) -> list[float]:
    """Karras et al. 2022 eq. 5: sigma_i = (sigma_max^(1/rho) + i / (N - 1)
    (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho for i = 0..N-1 (N = ``steps``; N = 1 gives
    [sigma_max]). Decreasing from sigma_max to sigma_min."""
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min!r}, {sigma_max!r}")
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho!r}")
    a, b = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    if steps == 1:
        return [sigma_max]
    return [(a + i / (steps - 1) * (b - a)) ** rho for i in range(steps)]


def karras_timesteps(schedule: NoiseSchedule, steps: int, *, sigma_max: float | None = None,
                     sigma_min: float | None = None, rho: float = KARRAS_RHO) -> list[int]:
    """Descending 0-based timesteps from EDM eq. 5 sigmas (:func:`karras_sigmas`).

    Args:
        schedule (NoiseSchedule): its sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t).
        steps (int): number of timesteps, in [1, T].
        sigma_max (float or None): default min(80, the schedule's largest finite sigma): EDM's
            sigma_max = 80 (Karras et al. 2022, Table 1, "Ours"), kept inside the schedule.
            ``sigma_max=schedule_sigma_max(schedule)`` gives diffusers' ``use_karras_sigmas``,
            which ramps from the schedule's own largest sigma. On the cosine schedule that sigma
            is an outlier (its last beta is clipped to 0.999: sigma jumps from 642 at t = 998 to
            20291 at t = 999 for T = 1000), and 6 of 10 such steps land at t >= 994.
        sigma_min (float or None): default the schedule's smallest, sigma at t = 0 (as diffusers).
        rho (float, default 7): EDM's rho.

    Mapping: each sigma_i goes to the timestep whose log sigma is nearest (diffusers'
    ``_sigma_to_t``, which interpolates in log sigma, then rounds); then, going down,
    t_i = min(t_i, t_{i-1} - 1) (floored at steps - 1 - i) keeps them strictly decreasing where
    several sigmas fall on one timestep. The first timestep is the one nearest sigma_max: as in
    EDM, sampling starts from x_T ~ N(0, I) there (at sigma = 80 the signal is 1/80 of the noise).
    """
    T = schedule.T
    if int(steps) != steps or not 1 <= steps <= T:
        raise ValueError(f"steps must be an integer in [1, T={T}], got {steps!r}")
    log_sigma = _log_sigmas(schedule)
    top = schedule_sigma_max(schedule)
    s_max = min(KARRAS_SIGMA_MAX, top) if sigma_max is None else float(sigma_max)
    s_min = float(log_sigma[0].exp()) if sigma_min is None else float(sigma_min)
    sig = torch.tensor(karras_sigmas(steps, s_min, s_max, rho), dtype=torch.float64)
    nearest = (sig.log()[:, None] - log_sigma[None, :]).abs().argmin(dim=1).tolist()
    ts: list[int] = []
    for i, t in enumerate(nearest):
        if ts:
            t = min(t, ts[-1] - 1)
        ts.append(max(t, steps - 1 - i))
    return ts


def _log_sigmas(schedule: NoiseSchedule) -> Tensor:
    """log sigma_t, sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t); float64, +inf where ab = 0."""
    ab = schedule.f64("alpha_bar")
    return 0.5 * (torch.log1p(-ab) - torch.log(ab))


def schedule_sigma_max(schedule: NoiseSchedule) -> float:
    """The schedule's largest finite sigma_t (at t = T-1, or T-2 with zero terminal SNR)."""
    log_sigma = _log_sigmas(schedule)
    return float(log_sigma[torch.isfinite(log_sigma)].max().exp())


# --------------------------------------------------------------------------- helpers
def _als(schedule: NoiseSchedule, t: int) -> tuple[float, float, float]:
    """(alpha_t, sigma_t, lambda_t) in float64; t = -1 is clean data (lambda = +inf)."""
    ab = schedule.alpha_bar_at(t)
    alpha, sigma = math.sqrt(ab), math.sqrt(max(1.0 - ab, 0.0))
    if sigma == 0.0:
        return alpha, sigma, math.inf
    if alpha == 0.0:
        return alpha, sigma, -math.inf
    return alpha, sigma, math.log(alpha / sigma)


def _first_order(x: Tensor, m0: Tensor, s: tuple, t: tuple) -> tuple[Tensor, float]:
    """DPM-Solver++(1) (= DDIM, Lu et al. 2022 eq. 10 with the data prediction):
    x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) m_0. alpha_t (1 - e^{-h}) is written
    alpha_t - sigma_t alpha_s / sigma_s, finite at alpha_s = 0 and at sigma_t = 0."""
    (a_s, s_s, _), (a_t, s_t, _) = s, t
    return (s_t / s_s) * x + (a_t - s_t * a_s / s_s) * m0, a_t


# --------------------------------------------------------------------------- DPM-Solver++
D2_COEFFICIENTS = ("taylor", "lu2022")


def dpmpp_3m_step(x: Tensor, x0s: list[Tensor], ts: list[int], t_prev: int,
                  schedule: NoiseSchedule, *, d2_coefficient: str = "taylor") -> Tensor:
    """One DPM-Solver++ multistep step of order ``len(x0s)`` (1, 2 or 3) from ts[0] to t_prev.

    ``x0s[k]`` is the data prediction m_k at ``ts[k]`` (``ts`` descending into the past:
    ts[0] is the current timestep). With r_0 = h_0 / h, r_1 = h_1 / h (h_0 = lambda_s - lambda_1,
    h_1 = lambda_1 - lambda_2) and phi_1 = e^{-h} - 1, phi_2 = phi_1 / h + 1,
    phi_3 = phi_2 / h - 1/2 (the third-order multistep update of Lu et al. 2022, in data
    prediction; a Taylor expansion of x0(lambda) in (*) to second order):

        D1_0 = (m_0 - m_1) / r_0,  D1_1 = (m_1 - m_2) / r_1,
        D1 = D1_0 + r_0 / (r_0 + r_1) (D1_0 - D1_1),  D2 = (D1_0 - D1_1) / (r_0 + r_1),
        x_t = (sigma_t / sigma_s) x - alpha_t phi_1 m_0 + alpha_t phi_2 D1 - c alpha_t phi_3 D2.

    D1 ~ h x0' and D2 ~ h^2 x0'' / 2 (x0 as a function of lambda; Newton divided differences),
    and the quadratic term of (*) integrates to alpha_t x0'' (h^2/2 - h + 1 - e^{-h}) =
    -2 alpha_t phi_3 D2, hence c = 2 (``d2_coefficient="taylor"``, the default, third order).
    The authors' code and diffusers use c = 1 (``"lu2022"``), which makes the step second order
    only (tests/diffusion/test_multistep.py measures both). Order 2 is DPM-Solver++(2M) (Lu et
    al. 2022, Algorithm 2): x_t = (sigma_t / sigma_s) x - alpha_t phi_1 (m_0 + D1_0 / 2);
    order 1 is DDIM.
    """
    if d2_coefficient not in D2_COEFFICIENTS:
        raise ValueError(f"unknown d2_coefficient {d2_coefficient!r}; "
                         f"choose one of {D2_COEFFICIENTS}")
    s, tt = _als(schedule, ts[0]), _als(schedule, t_prev)
    x_new, a_t = _first_order(x, x0s[0], s, tt)
    if len(x0s) == 1:
        return x_new
    h = tt[2] - s[2]
    lam = [_als(schedule, t)[2] for t in ts[: len(x0s)]]
    r0 = (lam[0] - lam[1]) / h
    d1_0 = (x0s[0] - x0s[1]) / r0
    phi_1 = math.expm1(-h)
    if len(x0s) == 2:
        return x_new - a_t * phi_1 * 0.5 * d1_0
    r1 = (lam[1] - lam[2]) / h
    d1_1 = (x0s[1] - x0s[2]) / r1
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    phi_2 = phi_1 / h + 1.0
    phi_3 = phi_2 / h - 0.5
    c = 2.0 if d2_coefficient == "taylor" else 1.0
    return x_new + a_t * phi_2 * d1 - c * a_t * phi_3 * d2


def dpmpp_2m_sde_step(x: Tensor, x0s: list[Tensor], ts: list[int], t_prev: int,
                      schedule: NoiseSchedule, *, noise: Tensor | None) -> Tensor:
    """One SDE-DPM-Solver++ step of order ``len(x0s)`` (1 or 2) from ts[0] to t_prev.

    The reverse SDE's exact solution with x0 frozen over the step (SDE-DPM-Solver++1, the SDE
    counterpart of (*): its linear part is integrated exactly, the noise term is the exact
    Gaussian increment), with E = e^{-h}:

        x_t = (sigma_t / sigma_s) E x + alpha_t (1 - E^2) D + sigma_t sqrt(1 - E^2) z,

    with D = m_0 (first order) or D = m_0 + (m_0 - m_1) / (2 r_0), r_0 = h_0 / h (second order,
    the "midpoint" form of the ``sde-dpmsolver++`` code). z ~ N(0, I) (``noise``) is needed
    unless t_prev = -1 (sigma_t = 0: the step returns D). E is computed as
    alpha_s sigma_t / (sigma_s alpha_t), which is 0 at alpha_s = 0.
    """
    (a_s, s_s, l_s), (a_t, s_t, l_t) = _als(schedule, ts[0]), _als(schedule, t_prev)
    d = x0s[0]
    if len(x0s) == 2:
        l_1 = _als(schedule, ts[1])[2]
        r0 = (l_s - l_1) / (l_t - l_s)
        d = d + (x0s[0] - x0s[1]) / (2.0 * r0)
    if s_t == 0.0:
        return a_t * d
    e = a_s * s_t / (s_s * a_t)
    out = (s_t / s_s) * e * x + a_t * (1.0 - e * e) * d
    if noise is None:
        raise ValueError("dpm++2m-sde needs noise for every step except the last")
    return out + s_t * math.sqrt(max(1.0 - e * e, 0.0)) * noise


# --------------------------------------------------------------------------- UniPC
def _unipc_b(h: float, order: int) -> list[float]:
    """UniPC's right-hand side g_k / B(h) for k = 1..order (Zhao et al. 2023, the linear system
    R_p a_p = g_p / B(h) of UniC/UniP, data prediction): with hh = -h and the recursion
    psi_1 = (e^{hh} - 1) / hh - 1, psi_{k+1} = psi_k / hh - 1 / (k + 1)!,
    b_k = k! psi_k / B(h), B(h) = e^{hh} - 1 (bh2)."""
    hh = -h
    b_h = math.expm1(hh)
    psi = math.expm1(hh) / hh - 1.0
    out, fact = [], 1.0
    for k in range(1, order + 1):
        out.append(psi * fact / b_h)
        fact *= k + 1
        psi = psi / hh - 1.0 / fact
    return out


def unipc_update(x: Tensor, x0s: list[Tensor], ts: list[int], t_prev: int,
                 schedule: NoiseSchedule, *, x0_new: Tensor | None = None) -> Tensor:
    """UniP (predictor) or, given ``x0_new``, UniC (corrector) of order ``len(x0s)``.

    From x at ts[0] to t_prev, with m_k = x0s[k] at ts[k], r_k = (lambda_k - lambda_s) / h and
    D_k = (m_k - m_0) / r_k (Zhao et al. 2023, UniP / UniC with B(h) = e^{-h} - 1):

        x_t = (sigma_t / sigma_s) x - alpha_t phi_1 m_0 - alpha_t B(h) sum_k a_k D_k,

    phi_1 = e^{-h} - 1. Predictor: D_1..D_{p-1}, and a solves R a = b on the first p-1 rows
    (R_{jk} = r_k^{j-1}, b from :func:`_unipc_b`; a = [1/2] when p = 2). Corrector (UniC): also
    D_p = m_new - m_0 with r_p = 1, where m_new = ``x0_new`` is the prediction at t_prev,
    evaluated at the *uncorrected* x_t; a solves the full p x p system (a = [1/2] at p = 1).
    The corrected x_t replaces the predicted one; m_new is reused, so UniC costs no network call.
    """
    s, tt = _als(schedule, ts[0]), _als(schedule, t_prev)
    x_new, a_t = _first_order(x, x0s[0], s, tt)
    p = len(x0s)
    if x0_new is None and p == 1:
        return x_new
    h = tt[2] - s[2]
    lam = [_als(schedule, t)[2] for t in ts[:p]]
    rks = [(lam[k] - lam[0]) / h for k in range(1, p)]
    ds = [(x0s[k] - x0s[0]) / rks[k - 1] for k in range(1, p)]
    if x0_new is not None:
        rks.append(1.0)
        ds.append(x0_new - x0s[0])
    b = _unipc_b(h, len(rks))
    if x0_new is None and p == 2:
        a = [0.5]
    elif x0_new is not None and p == 1:
        a = [0.5]
    else:
        R = torch.tensor([[r**j for r in rks] for j in range(len(rks))], dtype=torch.float64)
        a = torch.linalg.solve(R, torch.tensor(b, dtype=torch.float64)).tolist()
    b_h = math.expm1(-h)
    res = sum(ak * dk for ak, dk in zip(a, ds, strict=True))
    return x_new - a_t * b_h * res


# --------------------------------------------------------------------------- the solver
class MultistepSolver:
    """State of one multistep run over descending timesteps ``ts`` (then to clean data).

    ``step(i, x, x0, noise)`` is called once per timestep ts[i] with the x fed to the network and
    its (clipped) data prediction, and returns x at ts[i+1] (at i = n-1: the clean sample).
    ``stochastic`` says whether steps i < n-1 need ``noise`` (N(0, I) of x's shape).

    Args:
        sampler (str): one of ``MULTISTEP_SAMPLERS``.
        schedule (NoiseSchedule): the model's schedule.
        ts (list[int]): strictly decreasing timesteps in [0, T-1].
        order (int or None): the highest order (default ``SOLVER_ORDERS[sampler]``; 1..3, and
            1..2 for dpm++2m-sde).
    """

    def __init__(self, sampler: str, schedule: NoiseSchedule, ts: list[int], *,
                 order: int | None = None) -> None:
        if sampler not in MULTISTEP_SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {MULTISTEP_SAMPLERS}")
        order = SOLVER_ORDERS[sampler] if order is None else order
        if not 1 <= order <= SOLVER_ORDERS[sampler]:
            raise ValueError(f"order for {sampler!r} must be in 1..{SOLVER_ORDERS[sampler]}, "
                             f"got {order!r}")
        if any(a <= b for a, b in zip(ts, ts[1:], strict=False)) or not ts or ts[-1] < 0:
            raise ValueError(f"timesteps must be strictly decreasing and >= 0, got {ts}")
        self.sampler, self.schedule, self.ts, self.order = sampler, schedule, list(ts), order
        self.spec = SOLVER_SPECS[sampler]
        self.stochastic = self.spec.stochastic
        self._x0s: list[Tensor] = []  # most recent first
        self._last: tuple[Tensor, int] | None = None  # UniPC: (x before the step, its order)

    def _order(self, i: int) -> int:
        n = len(self.ts)
        if i == n - 1:
            return 1
        cap = min(self.order, n - i) if self.spec.lower_order_final else self.order
        usable = 1  # history entries with finite lambda (alpha > 0)
        while usable < min(cap, i + 1) and self.schedule.alpha_bar_at(self.ts[i - usable]) > 0:
            usable += 1
        return usable if self.schedule.alpha_bar_at(self.ts[i]) > 0 else 1

    def step(self, i: int, x: Tensor, x0: Tensor, noise: Tensor | None = None) -> Tensor:
        ts, t = self.ts, self.ts[i]
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        if self.spec.corrector and self._last is not None:  # UniC at ts[i]
            x_last, p = self._last
            x = unipc_update(x_last, self._x0s[:p], ts[i - 1::-1][:p], t, self.schedule,
                             x0_new=x0)
        self._x0s.insert(0, x0)
        del self._x0s[3:]
        p = self._order(i)
        hist = ts[i::-1][:p]
        if self.sampler == "dpm++3m":
            x_new = dpmpp_3m_step(x, self._x0s[:p], hist, t_prev, self.schedule)
        elif self.sampler == "dpm++2m-sde":
            x_new = dpmpp_2m_sde_step(x, self._x0s[:p], hist, t_prev, self.schedule,
                                      noise=noise if t_prev >= 0 else None)
        else:
            x_new = unipc_update(x, self._x0s[:p], hist, t_prev, self.schedule)
            self._last = (x, p)
        return x_new
