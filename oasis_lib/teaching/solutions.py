"""Reference solutions of the exercises (:mod:`oasis_lib.teaching.exercises`).

Each ``solution_<name>`` is what ``exercises.solution(name)`` shows the reader; the tests run
every one through its checker. They are written to be read: plain tensor code, one formula per
line, each citing the equation it implements.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..diffusion.schedule import NoiseSchedule


def solution_tissue_fractions(masks: Tensor) -> Tensor:
    """Share of each class 0..3 among all pixels of ``masks`` (long, any shape): float32 [4].
    A class that does not occur gets 0 (``minlength``)."""
    counts = torch.bincount(masks.reshape(-1).long(), minlength=4)
    return counts.float() / masks.numel()


def solution_q_sample(schedule: NoiseSchedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """Ho et al. 2020 eq. 4: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, per image."""
    ab = schedule.alpha_bar[t].reshape(-1, *([1] * (x0.ndim - 1)))  # [B, 1, 1, 1]
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def solution_sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """Vaswani et al. 2017 sec. 3.5 for timesteps (Ho et al. 2020 app. B), even ``dim``:
    [sin(t w_0) .. sin(t w_{h-1}), cos(t w_0) .. cos(t w_{h-1})], w_i = 10000^(-i/h), h = dim/2."""
    h = dim // 2
    omega = 10000.0 ** (-torch.arange(h, dtype=torch.float32) / h)
    args = t.float()[:, None] * omega[None, :]
    return torch.cat([args.sin(), args.cos()], dim=1)


def solution_v_target(schedule: NoiseSchedule, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """Salimans & Ho 2022 sec. 4: v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0."""
    ab = schedule.alpha_bar[t].reshape(-1, *([1] * (x0.ndim - 1)))
    return ab.sqrt() * eps - (1 - ab).sqrt() * x0


def solution_min_snr_v(snr: Tensor, gamma: float) -> Tensor:
    """Hang et al. 2023: the x0-space weight min(SNR, gamma), written for a v-target. The v-MSE
    is (SNR + 1) times the x0-MSE, so the weight becomes min(SNR, gamma) / (SNR + 1)."""
    return snr.clamp(max=gamma) / (snr + 1)


def solution_ema_update(ema: Tensor, live: Tensor, decay: float) -> Tensor:
    """One EMA step: theta_ema <- decay theta_ema + (1 - decay) theta (returns the new value)."""
    return decay * ema + (1 - decay) * live


def solution_posterior(
    schedule: NoiseSchedule, x0: Tensor, x_t: Tensor, t: Tensor
) -> tuple[Tensor, Tensor]:
    """Ho et al. 2020 eqs. 6-7: q(x_{t-1} | x_t, x0) = N(mean, variance) with
    mean = sqrt(ab_prev) beta_t / (1 - ab_t) x0 + sqrt(alpha_t) (1 - ab_prev) / (1 - ab_t) x_t,
    variance = (1 - ab_prev) / (1 - ab_t) beta_t; ab_prev = alpha_bar_{t-1} (1 at t = 0)."""
    def col(a: Tensor) -> Tensor:
        return a[t].reshape(-1, *([1] * (x0.ndim - 1)))

    ab, ab_prev, beta = col(schedule.alpha_bar), col(schedule.alpha_bar_prev), col(schedule.betas)
    mean = (ab_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_prev) * x_t) / (1 - ab)
    return mean, (1 - ab_prev) / (1 - ab) * beta


def solution_ddim_step(
    schedule: NoiseSchedule, x_t: Tensor, eps: Tensor, t: int, t_prev: int
) -> Tensor:
    """Song et al. 2021 eq. 12 with eta = 0: predict x0 from eps (eq. 4 inverted), then go to
    step t_prev with the same eps: x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps.
    ``t_prev = -1`` is the clean data (ab_prev = 1)."""
    ab = schedule.alpha_bar[t]
    ab_prev = schedule.alpha_bar[t_prev] if t_prev >= 0 else torch.tensor(1.0)
    x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
    return ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps


def solution_ddim_invert_step(
    schedule: NoiseSchedule, x: Tensor, eps: Tensor, t: int, t_next: int
) -> Tensor:
    """DDIM inversion (Song et al. 2021 eq. 12 run forward, eta = 0): predict x0 from eps at the
    current level t, then go *up* to t_next with the same eps:
    x_next = sqrt(ab_next) x0 + sqrt(1 - ab_next) eps. ``t = -1`` is the clean image:
    ``alpha_bar_at(-1)`` returns ab = 1, so x0 = x."""
    ab, ab_next = schedule.alpha_bar_at(t), schedule.alpha_bar_at(t_next)
    x0 = (x - (1 - ab) ** 0.5 * eps) / ab**0.5
    return ab_next**0.5 * x0 + (1 - ab_next) ** 0.5 * eps


def solution_cfg(eps_uncond: Tensor, eps_cond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6 written with s = 1 + w):
    eps = eps_uncond + s (eps_cond - eps_uncond); s = 1 is the conditional model, s = 0 the
    unconditional one, s > 1 pushes away from the unconditional prediction."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def solution_dice(pred: Tensor, target: Tensor, num_classes: int = 4) -> Tensor:
    """Dice 2 |A and B| / (|A| + |B|) of each class over all pixels; 1 for a class absent from
    both (nothing to find, nothing found)."""
    out = []
    for k in range(num_classes):
        a, b = pred == k, target == k
        size = int(a.sum() + b.sum())
        out.append(1.0 if size == 0 else 2 * float((a & b).sum()) / size)
    return torch.tensor(out)


def solution_frechet_diagonal(mu1: Tensor, var1: Tensor, mu2: Tensor, var2: Tensor) -> float:
    """Fréchet distance d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al.
    2017) for diagonal S1 = diag(var1), S2 = diag(var2): the trace becomes
    sum((sqrt(var1) - sqrt(var2))^2)."""
    return float(((mu1 - mu2) ** 2).sum() + ((var1.sqrt() - var2.sqrt()) ** 2).sum())


def solution_nearest_rms(queries: Tensor, references: Tensor) -> tuple[Tensor, Tensor]:
    """For each query image, the root-mean-square pixel difference to its nearest reference
    image and that reference's index: ``(distances [Q], indices long [Q])``."""
    q, r = queries.flatten(1).double(), references.flatten(1).double()
    d = torch.cdist(q, r) / q.shape[1] ** 0.5  # [Q, R]: l2 / sqrt(pixels) = RMS difference
    dist, idx = d.min(dim=1)
    return dist, idx


def solution_latent_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, diag(exp(logvar))) || N(0, I)) of each item, summed over its latent elements
    (Kingma & Welling 2014, appendix B): 1/2 sum(mean^2 + exp(logvar) - 1 - logvar), float [B]."""
    terms = mean.pow(2) + logvar.exp() - 1.0 - logvar
    return 0.5 * terms.flatten(1).sum(dim=1)


def solution_mask_onehot(mask: Tensor, present: Tensor) -> Tensor:
    """The mask as network input channels (Konz et al. 2024: concatenated to x_t): channel k =
    [mask == k + 1] for CSF, grey and white matter (background is "none of the three"), then a
    presence flag of ones. Where ``present`` is False (the null condition of classifier-free
    guidance) all four channels are 0, which no real mask gives. float [B, 4, H, W]."""
    classes = torch.stack([(mask == k).float() for k in (1, 2, 3)], dim=1)  # [B, 3, H, W]
    flag = torch.ones_like(classes[:, :1])                                # [B, 1, H, W]
    keep = present.float()[:, None, None, None]                           # [B, 1, 1, 1]
    return torch.cat([classes, flag], dim=1) * keep


def solution_point_velocity(x: Tensor, t: float, points: Tensor) -> Tensor:
    """The exact velocity of the straight path when the data are the equally likely ``points``
    [K, D]: each point's weight is its Gaussian likelihood N(x; (1 - t) mu_k, t^2 I), normalised
    over the points (a softmax of -|x - (1 - t) mu_k|^2 / (2 t^2)); then
    v = (x - sum_k w_k mu_k) / t."""
    sq = ((x[:, None, :] - (1 - t) * points[None]) ** 2).sum(-1)  # [N, K]
    w = torch.softmax(-sq / (2 * t**2), dim=1)
    return (x - w @ points) / t
