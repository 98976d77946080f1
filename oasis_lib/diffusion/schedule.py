"""Noise schedules and the forward (noising) process of a DDPM.

Papers: Ho et al. 2020 (DDPM), Nichol & Dhariwal 2021 (improved DDPM), Chen 2023 / Jabri et al.
2023 (sigmoid schedule), Lin et al. 2024 (zero terminal SNR).

Indexing. Timesteps are 0-based: index ``t`` in ``0..T-1`` is step ``t+1`` of Ho et al., so
``alpha_bar[t]`` here is the paper's alpha_bar_{t+1}. ``q_sample(x0, t)`` returns the latent
*after* noising step ``t`` (``t=0`` is the first step; the data x_0 is "before step 0"), and
``alpha_bar_prev[t]`` is alpha_bar of the latent *before* step ``t`` (``alpha_bar_prev[0] = 1``).
Samplers use ``t = -1`` to mean the clean data (alpha_bar = 1), see :meth:`alpha_bar_at`.

Precision. Everything is computed in float64; the attributes are CPU float32 copies and the
float64 originals are read with :meth:`NoiseSchedule.f64` (``schedule.f64("alpha_bar")``), so
:meth:`NoiseSchedule.gather` (used by the objectives and the samplers) casts float64 values
straight to the working dtype and the samplers' float64 maths reads float64 tables.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

SCHEDULE_KINDS = ("linear", "quadratic", "cosine", "sigmoid")

#: Largest beta allowed by the cosine and sigmoid schedules (Nichol & Dhariwal 2021, sec. 3.2).
MAX_BETA = 0.999
#: Warn when x_T keeps more than this fraction of the signal, sqrt(alpha_bar_T).
TERMINAL_SIGNAL_WARN = 0.05

_BUFFERS = (
    "betas", "alphas", "alpha_bar", "alpha_bar_prev", "sqrt_alpha_bar",
    "sqrt_one_minus_alpha_bar", "snr", "log_snr", "posterior_variance",
    "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)


def _betas_from_alpha_bar_fn(fn, T: int) -> Tensor:
    """Discretise a continuous alpha_bar(s), s in [0, 1], into betas (Nichol & Dhariwal 2021).

    ``beta[t] = 1 - f((t+1)/T) / f(t/T)``, clipped to ``MAX_BETA`` (their sec. 3.2, the text after
    eq. 17); ``alpha_bar[t]`` then equals ``f((t+1)/T) / f(0)`` wherever no clipping happened.
    """
    s = torch.arange(T + 1, dtype=torch.float64) / T
    f = fn(s)
    return (1.0 - f[1:] / f[:-1]).clamp(0.0, MAX_BETA)


def cosine_alpha_bar(s: Tensor, offset: float = 0.008) -> Tensor:
    """Nichol & Dhariwal 2021 eq. 17: f(s) = cos(((s + offset) / (1 + offset)) * pi/2) ** 2."""
    return torch.cos((s + offset) / (1.0 + offset) * math.pi / 2) ** 2


def sigmoid_alpha_bar(s: Tensor, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> Tensor:
    """Sigmoid schedule on alpha_bar (Chen 2023, "On the importance of noise scheduling", Alg. 1;
    Jabri et al. 2023):
    f(s) = (v_end - sigmoid((s (end - start) + start) / tau)) / (v_end - v_start)
    with v_start = sigmoid(start / tau), v_end = sigmoid(end / tau). f(0) = 1, f(1) = 0."""
    v_start = 1.0 / (1.0 + math.exp(-start / tau))
    v_end = 1.0 / (1.0 + math.exp(-end / tau))
    v = torch.sigmoid((s * (end - start) + start) / tau)
    return (v_end - v) / (v_end - v_start)


def make_betas(kind: str, T: int) -> Tensor:
    """Float64 betas [T] for a schedule ``kind`` (see :class:`NoiseSchedule`)."""
    if kind == "linear":  # Ho et al. 2020 sec. 4: 1e-4 .. 0.02 (not rescaled by 1000/T)
        return torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    if kind == "quadratic":  # the schedule of the student's DDPM this series starts from
        return torch.linspace(1e-4**0.5, 0.02**0.5, T, dtype=torch.float64) ** 2
    if kind == "cosine":
        return _betas_from_alpha_bar_fn(cosine_alpha_bar, T)
    if kind == "sigmoid":
        return _betas_from_alpha_bar_fn(sigmoid_alpha_bar, T)
    raise ValueError(f"unknown schedule {kind!r}; choose one of {SCHEDULE_KINDS}")


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Lin et al. 2024 Algorithm 1: shift and scale sqrt(alpha_bar) so the last value is exactly 0
    and the first is unchanged, then convert back to betas (the last beta becomes 1)."""
    sqrt_ab = torch.cumprod(1.0 - betas, 0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    ab = sqrt_ab**2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1.0 - alphas


def extract(a: Tensor, t: Tensor | int, x: Tensor | tuple[int, ...] | torch.Size) -> Tensor:
    """Gather ``a[t]`` and reshape it to ``[B, 1, 1, ...]`` so it broadcasts against ``x``.

    ``x`` may be a tensor (the result moves to its device and dtype) or just a shape (the result
    keeps ``a``'s dtype and goes to ``t``'s device). An int ``t`` (the same step for the whole
    batch, as in the samplers) gives a single value shaped ``[1, 1, ...]``.
    """
    shape = tuple(x.shape) if isinstance(x, Tensor) else tuple(x)
    if isinstance(t, Tensor):
        out, device = a[t.long().cpu()], t.device
    else:  # one step for the whole batch: a single value, shaped [1, 1, ...]
        out, device = a[int(t)].reshape(1), torch.device("cpu")
    if isinstance(x, Tensor):
        out = out.to(device=x.device, dtype=x.dtype)
    else:
        out = out.to(device)
    return out.reshape(out.shape[0], *([1] * (len(shape) - 1)))


class NoiseSchedule:
    """Beta schedule plus every derived quantity of the forward process (Ho et al. 2020 sec. 2).

    Args:
        kind (str, default ``"cosine"``): one of ``SCHEDULE_KINDS``.
            ``linear``: betas = linspace(1e-4, 0.02, T) (Ho et al.; the same values for any T).
            ``quadratic``: betas = linspace(sqrt(1e-4), sqrt(0.02), T) ** 2 (the starting DDPM).
            ``cosine``: Nichol & Dhariwal eq. 17 (s = 0.008); betas clipped at 0.999 (sec. 3.2).
            ``sigmoid``: alpha_bar(s) of :func:`sigmoid_alpha_bar` (start=-3, end=3, tau=1),
            discretised like the cosine one, betas clipped at 0.999.
        timesteps (int, default 1000): T, the number of noising steps (>= 2).
        zero_terminal_snr (bool, default False): rescale per Lin et al. 2024 Alg. 1 so that
            alpha_bar_T = 0 and x_T is pure noise. Train with ``prediction_type="v"`` then:
            at the last step x_t = eps, so an eps-prediction says nothing about x0 (the
            x0-from-eps conversion divides by sqrt(alpha_bar) = 0; objectives clamp it).
        warn (bool, default True): warn (UserWarning) when sqrt(alpha_bar_T) > 0.05, i.e. x_T
            keeps a visible part of the signal although sampling starts from pure noise.

    Attributes (CPU float32 tensors of length T): ``betas``, ``alphas``, ``alpha_bar``,
    ``alpha_bar_prev``, ``sqrt_alpha_bar``, ``sqrt_one_minus_alpha_bar``, ``snr`` (alpha_bar /
    (1 - alpha_bar)), ``log_snr`` (-inf where snr = 0), ``posterior_variance`` (beta tilde, eq. 7),
    ``posterior_log_variance_clipped`` (log beta tilde with entry 0, which is 0, replaced by entry
    1, as in Ho et al.'s code), ``posterior_mean_coef1`` / ``posterior_mean_coef2`` (eq. 7).
    """

    def __init__(
        self,
        kind: str = "cosine",
        timesteps: int = 1000,
        *,
        zero_terminal_snr: bool = False,
        warn: bool = True,
    ) -> None:
        if kind not in SCHEDULE_KINDS:
            raise ValueError(f"unknown schedule {kind!r}; choose one of {SCHEDULE_KINDS}")
        if int(timesteps) != timesteps or timesteps < 2:
            raise ValueError(f"timesteps must be an integer >= 2, got {timesteps!r}")
        self.kind = kind
        self._T = int(timesteps)
        self.zero_terminal_snr = bool(zero_terminal_snr)

        betas = make_betas(kind, self._T)
        if self.zero_terminal_snr:
            betas = rescale_zero_terminal_snr(betas)
        alphas = 1.0 - betas
        ab = torch.cumprod(alphas, 0)
        ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        pv = betas * (1.0 - ab_prev) / (1.0 - ab)  # eq. 7, beta tilde
        f64 = {
            "betas": betas,
            "alphas": alphas,
            "alpha_bar": ab,
            "alpha_bar_prev": ab_prev,
            "sqrt_alpha_bar": ab.sqrt(),
            "sqrt_one_minus_alpha_bar": (1.0 - ab).sqrt(),
            "snr": ab / (1.0 - ab),
            "log_snr": torch.log(ab) - torch.log1p(-ab),
            "posterior_variance": pv,
            "posterior_log_variance_clipped": torch.log(torch.cat([pv[1:2], pv[1:]])),
            "posterior_mean_coef1": betas * ab_prev.sqrt() / (1.0 - ab),  # eq. 7, x0 coef
            "posterior_mean_coef2": (1.0 - ab_prev) * alphas.sqrt() / (1.0 - ab),  # x_t coef
        }
        self.set_tables(f64)

        if warn and self.terminal_signal > TERMINAL_SIGNAL_WARN:
            warnings.warn(
                f"{kind} schedule with T={self._T}: alpha_bar_T = {self.alpha_bar_T:.4f}, so x_T "
                f"still keeps {self.terminal_signal:.1%} of the signal (sqrt(alpha_bar_T)) while "
                "sampling starts from pure noise N(0, I). Use a larger T, the cosine schedule, or "
                "zero_terminal_snr=True (with v-prediction).",
                UserWarning,
                stacklevel=2,
            )

    # ----------------------------------------------------------------- basic properties
    @property
    def T(self) -> int:
        """Number of noising steps."""
        return self._T

    @property
    def timesteps(self) -> int:
        """Alias of :attr:`T`."""
        return self._T

    @property
    def alpha_bar_T(self) -> float:
        """alpha_bar at the last step (index T-1), as a float64 Python float."""
        return float(self._f64["alpha_bar"][-1])

    @property
    def terminal_signal(self) -> float:
        """sqrt(alpha_bar_T): the fraction of x_0 left in x_T."""
        return math.sqrt(self.alpha_bar_T)

    def f64(self, name: str) -> Tensor:
        """The float64 table ``name`` (one of the attributes listed in the class docstring,
        length T): the value the float32 attribute was rounded from. Read it, do not modify it."""
        if name not in self._f64:
            raise ValueError(f"unknown schedule table {name!r}; choose one of {_BUFFERS}")
        return self._f64[name]

    def set_tables(self, tables: dict[str, Tensor]) -> None:
        """Store the float64 ``tables`` (every name of ``_BUFFERS``, float64 [T]) and their CPU
        float32 copies as attributes: how ``__init__`` and a respaced schedule
        (:class:`~oasis_lib.diffusion.respacing.RespacedSchedule`) set their tables."""
        if set(tables) != set(_BUFFERS):
            raise ValueError(f"schedule tables must be exactly {_BUFFERS}, got {tuple(tables)}")
        self._f64 = {name: tables[name].to(torch.float64) for name in _BUFFERS}
        for name in _BUFFERS:
            setattr(self, name, self._f64[name].to(torch.float32))

    def alpha_bar_at(self, t: int) -> float:
        """alpha_bar at integer step ``t`` in float64; ``t < 0`` means clean data (returns 1)."""
        return 1.0 if t < 0 else float(self._f64["alpha_bar"][t])

    def gather(self, name: str, t: Tensor | int, x: Tensor) -> Tensor:
        """Like :func:`extract` on the float64 original of buffer ``name``, cast to x's dtype."""
        return extract(self._f64[name], t, x)

    # ----------------------------------------------------------------- forward process
    def q_sample(
        self, x0: Tensor, t: Tensor, noise: Tensor | None = None, *, generator=None
    ) -> Tensor:
        """Sample q(x_t | x_0) in closed form (Ho et al. eq. 4):
        x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.

        ``noise`` defaults to a CPU float32 draw with ``generator``, moved to x0's device.
        """
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
            noise = noise.to(device=x0.device, dtype=x0.dtype)
        return (self.gather("sqrt_alpha_bar", t, x0) * x0
                + self.gather("sqrt_one_minus_alpha_bar", t, x0) * noise)

    def q_step(self, x_prev: Tensor, t: Tensor | int, noise: Tensor) -> Tensor:
        """One forward step q(x_t | x_{t-1}) (Ho et al. eq. 2):
        x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps. ``x_prev`` is the latent before step t
        (the data when t = 0)."""
        return (self.gather("alphas", t, x_prev).sqrt() * x_prev
                + self.gather("betas", t, x_prev).sqrt() * noise)

    def q_posterior(
        self, x0: Tensor, x_t: Tensor, t: Tensor | int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """q(x_{t-1} | x_t, x_0) = N(mean, variance) (Ho et al. eqs. 6-7).

        mean = coef1_t x_0 + coef2_t x_t, with
        coef1 = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t),
        coef2 = sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t); variance = beta tilde_t.
        Returns ``(mean, variance, log_variance_clipped)``, the last two shaped to broadcast.
        At t = 0 the mean is x_0 and the variance is 0.
        """
        mean = (self.gather("posterior_mean_coef1", t, x_t) * x0
                + self.gather("posterior_mean_coef2", t, x_t) * x_t)
        var = self.gather("posterior_variance", t, x_t)
        log_var = self.gather("posterior_log_variance_clipped", t, x_t)
        return mean, var, log_var

    # ----------------------------------------------------------------- config round trip
    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments, for storing in a training config or checkpoint."""
        return {"kind": self.kind, "timesteps": self._T,
                "zero_terminal_snr": self.zero_terminal_snr}

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, warn: bool = True) -> NoiseSchedule:
        """Inverse of :meth:`to_dict`."""
        return cls(d["kind"], d["timesteps"], zero_terminal_snr=d.get("zero_terminal_snr", False),
                   warn=warn)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NoiseSchedule) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.to_dict().items()))

    def __len__(self) -> int:
        return self._T

    def __repr__(self) -> str:
        b = self._f64["betas"]
        return (f"NoiseSchedule(kind={self.kind!r}, T={self._T}, "
                f"zero_terminal_snr={self.zero_terminal_snr}, "
                f"beta=[{float(b[0]):.3g}, {float(b[-1]):.3g}], "
                f"alpha_bar_T={self.alpha_bar_T:.4g})")
