"""The inputs each exercise checker tries and the library's answers it compares with.

For every exercise of :mod:`oasis_lib.teaching.exercises`: a generator of ``(description,
args)`` cases (fixed seeds, several shapes and timesteps, the edge cases t = 0 and t = T-1 among
them) and, where the library's function does not take the same arguments, a thin reference
wrapper around it (``_ref_<name>``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from ..diffusion.editing import ddim_invert_step
from ..diffusion.flow_matching import point_mixture_velocity
from ..diffusion.objectives import min_snr_weight
from ..diffusion.sampling import ddim_step
from ..diffusion.schedule import NoiseSchedule
from ..evaluation.metrics import frechet_from_stats, nearest_neighbours
from ..models.autoencoder import DiagonalGaussian
from ..models.condition_encoding import encode_mask
from ..training.ema import EMA


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


def _cases_point_velocity():
    """t = 1 (every weight equal), the middle, near the data (one point dominates); one, two
    and three points; points far apart (where exp without the max shift underflows: 0/0)."""
    settings = ((1, 1.0, 1.0), (2, 1.0, 2.0), (2, 0.5, 2.0), (3, 0.3, 1.5), (3, 0.05, 2.0),
                (2, 0.01, 30.0))
    for i, (k, t, spread) in enumerate(settings):
        g = _gen(i)
        points = spread * torch.randn(k, 2, generator=g, dtype=torch.float64)
        x = torch.randn(7, 2, generator=g, dtype=torch.float64)
        yield f"{k} point(s), t={t}, x [7, 2]", (x, t, points)


def _ref_point_velocity(x, t, points):
    return point_mixture_velocity(x, t, points)


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
