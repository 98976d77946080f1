"""Single reverse steps of the samplers, each a pure function of one network output.

- :func:`p_sample` (with :func:`p_mean_variance`): one DDPM step, Ho et al. 2020 Algorithm 2 /
  eq. 11 in the posterior form of Nichol & Dhariwal 2021 eqs. 10-12.
- :func:`ddim_step` (with :func:`ddim_sigma`): Song et al. 2021 eq. 12, sigma from eq. 16.
- :func:`dpmpp_2m_step`: DPM-Solver++(2M), Lu et al. 2022 Algorithm 2.

The sampler objects of :mod:`oasis_lib.diffusion.samplers` call them;
:mod:`oasis_lib.diffusion.sampling` re-exports them (their historical home). Conventions
(clipping, t = -1 as clean data) are those of :mod:`~oasis_lib.diffusion.sampling`.
"""

from __future__ import annotations

from torch import Tensor

from .parameterization import model_output_to_x0_eps, predict_eps_from_x0
from .schedule import NoiseSchedule

DDPM_VARIANCES = ("beta", "posterior")


def _x0_eps(schedule, output, x_t, t, prediction_type, clip_x0) -> tuple[Tensor, Tensor]:
    """(x0, eps) from a network output; clip x0 (or apply a callable ``clip_x0``), then eps."""
    x0, eps = model_output_to_x0_eps(schedule, output, x_t, t, prediction_type)
    if clip_x0:
        x0 = clip_x0(x0) if callable(clip_x0) else x0.clamp(-1.0, 1.0)
        eps = predict_eps_from_x0(schedule, x_t, t, x0)
    return x0, eps


# --------------------------------------------------------------------------- single steps
def p_mean_variance(
    model_output: Tensor, x_t: Tensor, t: Tensor | int, schedule: NoiseSchedule,
    prediction_type: str = "eps", clip_x0: bool = True, *, variance: str = "posterior",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """p(x_{t-1} | x_t) of DDPM: returns ``(mean, variance, log_variance, x0)``.

    mean = posterior mean of q(x_{t-1} | x_t, x0_hat) (eq. 7 of Ho et al.) with the predicted x0
    (clipped to [-1, 1] if ``clip_x0``); for eps-prediction and no clipping this is eq. 11.
    variance: ``"beta"`` (sigma_t^2 = beta_t) or ``"posterior"`` (beta tilde_t, eq. 7), the two
    choices of Ho et al. sec. 3.2.
    """
    if variance not in DDPM_VARIANCES:
        raise ValueError(f"unknown ddpm_variance {variance!r}; choose one of {DDPM_VARIANCES}")
    x0, _ = _x0_eps(schedule, model_output, x_t, t, prediction_type, clip_x0)
    mean, var, log_var = schedule.q_posterior(x0, x_t, t)
    if variance == "beta":
        var = schedule.gather("betas", t, x_t)
        log_var = var.log()
    return mean, var, log_var, x0


def p_sample(
    model_output: Tensor, x_t: Tensor, t: int, schedule: NoiseSchedule, *,
    noise: Tensor | None, prediction_type: str = "eps", clip_x0: bool = True,
    variance: str = "posterior",
) -> tuple[Tensor, Tensor]:
    """One DDPM step (Ho et al. Algorithm 2, line 4): x_{t-1} = mean + sigma_t z, no noise at
    t = 0 (``noise`` may be None there). Returns ``(x_prev, x0_pred)``."""
    mean, var, _, x0 = p_mean_variance(model_output, x_t, t, schedule, prediction_type, clip_x0,
                                       variance=variance)
    if t == 0:
        return mean, x0
    return mean + var.sqrt() * noise, x0


def ddim_sigma(schedule: NoiseSchedule, t: int, t_prev: int, eta: float) -> float:
    """Song et al. 2021 eq. 16:
    sigma = eta sqrt((1 - ab_prev) / (1 - ab)) sqrt(1 - ab / ab_prev)."""
    ab, ab_prev = schedule.alpha_bar_at(t), schedule.alpha_bar_at(t_prev)
    return eta * ((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev)) ** 0.5


def ddim_step(
    model_output: Tensor, x_t: Tensor, t: int, t_prev: int, schedule: NoiseSchedule, *,
    eta: float = 0.0, noise: Tensor | None = None, prediction_type: str = "eps",
    clip_x0: bool = True,
) -> tuple[Tensor, Tensor]:
    """One DDIM step from t to t_prev < t (t_prev = -1: clean data), Song et al. 2021 eq. 12
    (their alpha_t is our alpha_bar_t, written ab here):

    x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - sigma^2) eps + sigma z,  sigma from eq. 16.
    ``noise`` is needed only when sigma > 0. Returns ``(x_prev, x0_pred)``.
    """
    x0, eps = _x0_eps(schedule, model_output, x_t, t, prediction_type, clip_x0)
    ab_prev = schedule.alpha_bar_at(t_prev)
    sigma = ddim_sigma(schedule, t, t_prev, eta)
    x_prev = ab_prev**0.5 * x0 + max(1.0 - ab_prev - sigma**2, 0.0) ** 0.5 * eps
    if sigma > 0:
        if noise is None:
            raise ValueError(f"ddim_step with eta={eta} needs noise (sigma = {sigma:.3g} > 0)")
        x_prev = x_prev + sigma * noise
    return x_prev, x0


def dpmpp_2m_step(
    x_t: Tensor, x0: Tensor, x0_last: Tensor | None, t: int, t_prev: int, t_last: int | None,
    schedule: NoiseSchedule,
) -> Tensor:
    """One DPM-Solver++(2M) step from t to t_prev (Lu et al. 2022, Algorithm 2).

    alpha = sqrt(ab), sigma = sqrt(1 - ab), lambda = log(alpha / sigma), h = lambda_prev - lambda_t.
    ``x0`` is the data prediction at t, ``x0_last`` the one at the previous (larger) step t_last.

    x_prev = (sigma_prev / sigma_t) x_t - alpha_prev (e^{-h} - 1) D, where D = x0 (first order,
    = DDIM) or D = (1 + 1/(2r)) x0 - 1/(2r) x0_last with r = h_last / h (second order).
    alpha_prev (1 - e^{-h}) is written alpha_prev - sigma_prev alpha_t / sigma_t, which stays
    finite at alpha_t = 0 (zero terminal SNR, lambda = -inf). First order is used when there is
    no previous prediction, when lambda_last = -inf (r = inf, the limit is first order) and at the
    final step to clean data (sigma_prev = 0, lambda = +inf): the paper's lower-order final step.
    """
    ab, ab_prev = schedule.alpha_bar_at(t), schedule.alpha_bar_at(t_prev)
    alpha, sigma = ab**0.5, (1.0 - ab) ** 0.5
    alpha_prev, sigma_prev = ab_prev**0.5, (1.0 - ab_prev) ** 0.5
    d = x0
    if x0_last is not None and t_last is not None and ab > 0 and sigma_prev > 0:
        ab_last = schedule.alpha_bar_at(t_last)
        if ab_last > 0:
            lam = schedule.f64("log_snr") / 2  # lambda = log(alpha / sigma) = log_snr / 2
            h = float(lam[t_prev] - lam[t])
            r = float(lam[t] - lam[t_last]) / h
            d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_last
    return (sigma_prev / sigma) * x_t + (alpha_prev - sigma_prev * alpha / sigma) * d
