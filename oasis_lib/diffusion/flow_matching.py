"""The maths of rectified flow (flow matching on the straight path), as pure functions.

The path (Liu et al. 2022, eq. 1; Lipman et al. 2023, the optimal-transport path of sec. 4.1
with sigma_min = 0): a clean image x0 and a noise draw eps ~ N(0, I) are joined by the line

    x_t = (1 - t) x0 + t eps,   t in [0, 1]   (t = 0: data; t = 1: noise),

whose velocity dx_t / dt = eps - x0 is the network's training target. Sampling integrates the
ODE dx/dt = v(x, t) from t = 1 down to t = 0. The conventions are diffusers' (its ``sigma`` is
our t; ``FlowMatchEulerDiscreteScheduler.scale_noise``: ``sigma * noise + (1 - sigma) *
sample``) and Stable Diffusion 3's (Esser et al. 2024, sec. 3.1: their eps-to-data path with
``z_t = (1 - t) x0 + t eps``).

Training times (Esser et al. 2024, sec. 3.1): uniform, or logit-normal, t = sigmoid(m + s u)
with u ~ N(0, 1) (location m, scale s; SD3 chose m = 0, s = 1), which puts more of the
training on the middle of the path where the velocity is hardest to predict. For a reflow
round, Lee et al. 2024 ("Improving the Training of Rectified Flows") propose the
opposite, a U-shaped density p(t) = a (e^(a t) + e^(a (1 - t))) / (2 (e^a - 1)) with a = 4:
after reflow the velocity is hardest to learn near the two ends of the path, and one-step
sampling lives at t = 1.

How straight a sampled path is: :func:`straightness` (Liu et al. 2022), per step.

The timestep shift (Esser et al. 2024, sec. 5.3.2, "resolution-dependent shifting"):
t' = s t / (1 + (s - 1) t). With s > 1 a sampler spends more of its steps at high noise, where
large images (or latents) keep more of their structure than small ones.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

#: How ``sample_flow_time`` draws t: ``uniform`` on [0, 1], ``logit-normal`` (SD3 sec. 3.1), or
#: ``u-shaped`` (Lee et al. 2024, for reflow).
TIME_SAMPLINGS = ("uniform", "logit-normal", "u-shaped")
#: The sampling grids of :func:`flow_sigmas`: ``linspace`` (diffusers' FlowMatchEuler default)
#: and ``trailing`` (evenly spaced from t = 1, the last call at 1 / steps: FLUX's grid).
FLOW_SPACINGS = ("linspace", "trailing")
#: The U-shaped density's a (Lee et al. 2024 use a = 4).
U_SHAPED_A = 4.0


def flow_forward(x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """x_t = (1 - t) x0 + t eps (the straight path; ``t`` of shape (B,), broadcast)."""
    t = t.to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))
    return (1.0 - t) * x0 + t * noise


def flow_velocity(x0: Tensor, noise: Tensor) -> Tensor:
    """The training target, dx_t / dt = eps - x0 (Liu et al. 2022, eq. 1)."""
    return noise - x0


def shift_time(t, shift: float):
    """SD3's timestep shift t' = s t / (1 + (s - 1) t) (Esser et al. 2024, sec. 5.3.2).

    s = 1 leaves t unchanged; t = 0 and t = 1 stay fixed for every s > 0. Works on floats,
    numpy arrays and tensors alike.
    """
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift!r}")
    return shift * t / (1 + (shift - 1) * t)


def u_shaped_quantile(u, a: float = U_SHAPED_A):
    """t = F^-1(u) of the U-shaped density p(t) = a (e^(a t) + e^(a (1 - t))) / (2 (e^a - 1)).

    Its CDF, F(t) = (e^(a t) - e^(a (1 - t)) + e^a - 1) / (2 (e^a - 1)), is a quadratic in
    y = e^(a t): y^2 + b y - e^a = 0 with b = (e^a - 1)(1 - 2u), so
    t = log((-b + sqrt(b^2 + 4 e^a)) / 2) / a (u = 0 gives 0, u = 1/2 gives 1/2, u = 1 gives 1).
    Works on float64 tensors and numpy arrays.
    """
    lib = torch if isinstance(u, Tensor) else np
    ea = math.exp(a)
    b = (ea - 1.0) * (1.0 - 2.0 * u)
    return lib.log((-b + lib.sqrt(b * b + 4.0 * ea)) / 2.0) / a


def u_shaped_density(t, a: float = U_SHAPED_A):
    """p(t) = a (e^(a t) + e^(a (1 - t))) / (2 (e^a - 1)) (Lee et al. 2024), for plots and
    tests."""
    t = np.asarray(t, dtype=np.float64)
    return a * (np.exp(a * t) + np.exp(a * (1 - t))) / (2 * math.expm1(a))


def sample_flow_time(n: int, *, sampling: str = "uniform", loc: float = 0.0,
                     scale: float = 1.0, shift: float = 1.0,
                     generator: torch.Generator | None = None) -> Tensor:
    """n training times in (0, 1), float32 on the CPU, drawn from ``generator``.

    ``uniform``: t ~ U(0, 1). ``logit-normal``: t = sigmoid(loc + scale u), u ~ N(0, 1)
    (Esser et al. 2024, sec. 3.1, pi_ln(t; m, s)). ``u-shaped``: :func:`u_shaped_quantile` of
    a uniform (Lee et al. 2024). Then the shift, if ``shift`` != 1.
    """
    if sampling not in TIME_SAMPLINGS:
        raise ValueError(f"unknown time sampling {sampling!r}; choose one of {TIME_SAMPLINGS}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    if sampling == "uniform":
        t = torch.rand(n, generator=generator, dtype=torch.float32)
    elif sampling == "u-shaped":
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        t = u_shaped_quantile(u).to(torch.float32)
    else:
        u = torch.randn(n, generator=generator, dtype=torch.float32)
        t = torch.sigmoid(loc + scale * u)
    return shift_time(t, shift) if shift != 1.0 else t


def logit_normal_density(t, *, loc: float = 0.0, scale: float = 1.0):
    """pi_ln(t; m, s) = exp(-(logit t - m)^2 / (2 s^2)) / (s sqrt(2 pi) t (1 - t))
    (Esser et al. 2024, sec. 3.1), for plots and tests."""
    t = np.asarray(t, dtype=np.float64)
    logit = np.log(t / (1 - t))
    return np.exp(-(logit - loc) ** 2 / (2 * scale**2)) / (
        scale * math.sqrt(2 * math.pi) * t * (1 - t))


def flow_sigmas(steps: int, *, shift: float = 1.0, num_train_timesteps: int = 1000,
                spacing: str = "linspace") -> Tensor:
    """The sampling grid t_0 = 1 > ... > t_{steps-1} > 0, with the terminal 0 appended
    (float64, length steps + 1).

    ``linspace`` (the default): diffusers' ``FlowMatchEulerDiscreteScheduler.set_timesteps
    (steps)``. diffusers builds its training sigmas i / N (i = N..1) and shifts them;
    ``set_timesteps`` spaces ``steps`` points evenly between the largest (1) and the smallest
    shifted training sigma, ``shift(1 / N)``, and shifts them again. The second shift of an
    already shifted endpoint is diffusers' own choice; we follow it so that the grids agree.
    Its last call sits at t = 1 / N: for 2 steps the grid is [1, 0.001, 0], one real step.

    ``trailing``: t_i = shift(1 - i / steps), evenly spaced from t = 1, the last call at
    shift(1 / steps) (diffusers' ``FluxPipeline`` passes ``sigmas = linspace(1, 1 / steps,
    steps)``; the flow analogue of the VP "trailing" spacing of Lin et al. 2024). Every
    interval is a real step, which matters for a model made for 1 to 4 steps.
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if spacing not in FLOW_SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {FLOW_SPACINGS}")
    if spacing == "trailing":
        t = 1.0 - np.arange(int(steps), dtype=np.float64) / int(steps)
        sigmas = shift_time(t, shift) if shift != 1.0 else t
        return torch.cat([torch.from_numpy(sigmas), torch.zeros(1, dtype=torch.float64)])
    n = num_train_timesteps
    sigma_min = float(np.float32(shift_time(np.float32(1.0 / n), shift)))
    t = np.linspace(1.0 * n, sigma_min * n, int(steps))
    sigmas = shift_time(t / n, shift)
    return torch.cat([torch.from_numpy(sigmas), torch.zeros(1, dtype=torch.float64)])


def euler_flow_step(velocity: Tensor, x: Tensor, t: float, t_next: float) -> Tensor:
    """One Euler step of dx/dt = v from t to t_next: x + (t_next - t) v."""
    return x + (t_next - t) * velocity


def heun_flow_step(velocity: Tensor, velocity_next: Tensor, x: Tensor, t: float,
                   t_next: float) -> Tensor:
    """Heun's step (the trapezoid of Karras et al. 2022, Algorithm 1, lines 7-8): with v at
    (x, t) and v' at the Euler point (x + (t_next - t) v, t_next),
    x + (t_next - t) (v + v') / 2."""
    return x + (t_next - t) * 0.5 * (velocity + velocity_next)


def point_mixture_velocity(x: Tensor, t: float, points: Tensor,
                           weights: Tensor | None = None, *, std: float = 0.0) -> Tensor:
    """The exact velocity field of the straight path when the data are the points mu_k (or
    round Gaussian blobs N(mu_k, std^2 I) around them).

    With x0 from component k (probability pi_k) and x_t = (1 - t) x0 + t eps, the marginal
    velocity is v(x, t) = E[eps - x0 | x_t = x] (the marginal field that the conditional loss
    trains: Lipman et al. 2023, sec. 3.1; Liu et al. 2022, sec. 2), and since
    eps - x0 = (x_t - x0) / t,

        v(x, t) = (x - E[x0 | x_t = x]) / t,   E[x0 | x_t = x] = sum_k w_k(x, t) m_k(x, t),
        w_k(x, t) = pi_k N(x; (1 - t) mu_k, s^2 I) / sum_j pi_j N(x; (1 - t) mu_j, s^2 I),

    with s^2 = (1 - t)^2 std^2 + t^2 and each blob's own posterior mean
    m_k = mu_k + (1 - t) std^2 / s^2 (x - (1 - t) mu_k) (m_k = mu_k for points, std = 0).
    At t = 1 every w_k is pi_k, so one Euler step from t = 1 to 0 lands on the data's mean.

    Args:
        x (Tensor [N, D]): points at time t; t (float): in (0, 1].
        points (Tensor [K, D]): the data (the blobs' centres); weights (Tensor [K] or None):
            pi_k (None: equal); std (float): the blobs' standard deviation (0: points).
    Returns:
        Tensor [N, D], in x's dtype.
    """
    if not 0.0 < float(t) <= 1.0:
        raise ValueError(f"t must be in (0, 1], got {t!r}")
    if x.dim() != 2 or points.dim() != 2 or x.shape[1] != points.shape[1]:
        raise ValueError(f"x [N, D] and points [K, D] must share D, got {tuple(x.shape)} and "
                         f"{tuple(points.shape)}")
    if not std >= 0:
        raise ValueError(f"std must be >= 0, got {std!r}")
    k = points.shape[0]
    pi = torch.full((k,), 1.0 / k, dtype=x.dtype) if weights is None else weights.to(x.dtype)
    t, mu = float(t), points.to(x.dtype)
    var = (1.0 - t) ** 2 * std**2 + t * t  # of x_t given the component
    offset = x[:, None, :] - (1.0 - t) * mu[None]  # [N, K, D]
    w = torch.softmax(torch.log(pi)[None] - (offset**2).sum(-1) / (2.0 * var), dim=1)  # [N, K]
    means = mu[None] + (1.0 - t) * std**2 / var * offset  # [N, K, D]
    return (x - (w[..., None] * means).sum(1)) / t


def integrate_flow(velocity, x1: Tensor, steps: int, *, shift: float = 1.0) -> Tensor:
    """Euler on dx/dt = velocity(x, t) from t = 1 to 0 on :func:`flow_sigmas`' grid; returns
    every state, [steps + 1, *x1.shape] (the first is x1, the last the sample at t = 0)."""
    grid = flow_sigmas(steps, shift=shift).tolist()
    xs = [x1]
    for t, t_next in zip(grid[:-1], grid[1:], strict=True):
        xs.append(euler_flow_step(velocity(xs[-1], t), xs[-1], t, t_next))
    return torch.stack(xs)


def straightness(xs: Tensor, ts) -> Tensor:
    """How far an ODE path bends, per interval: Liu et al. 2022's straightness,
    S(Z) = int_0^1 E || (Z_1 - Z_0) - v(Z_t, t) ||^2 dt (0 exactly for straight paths),
    discretised on a sampler's grid and divided by E || Z_1 - Z_0 ||^2 to be scale-free.

    ``xs`` [K + 1, B, ...] are the states at the times ``ts`` (K + 1 floats from 1 down to 0,
    e.g. a ``SampleResult``'s ``xs`` and ``timesteps / 1000``). Interval i's velocity is the
    chord of the step, v_i = (x_{i+1} - x_i) / (t_{i+1} - t_i); the path's own chord is
    c = (x_K - x_0) / (t_K - t_0). Returns [K]: E || v_i - c ||^2 / E || c ||^2 (means over
    the batch and the elements). Their sum weighted by the interval lengths t_i - t_{i+1} is
    the discretised S / E || c ||^2. A one-step path is straight by construction (0).
    """
    ts = torch.as_tensor(ts, dtype=torch.float64)
    if xs.dim() < 2 or ts.dim() != 1 or len(ts) != len(xs) or len(xs) < 2:
        raise ValueError(f"xs [K + 1, B, ...] and ts [K + 1] must match (K >= 1), got "
                         f"{tuple(xs.shape)} and {tuple(ts.shape)}")
    x = xs.double()
    dt = (ts[1:] - ts[:-1]).reshape(-1, *([1] * (x.dim() - 1)))
    v = (x[1:] - x[:-1]) / dt
    chord = (x[-1] - x[0]) / float(ts[-1] - ts[0])
    return (v - chord).pow(2).flatten(1).mean(1) / chord.pow(2).mean()
