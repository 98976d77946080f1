"""How the network is trained: the diffusion loss, through a noise process.

:func:`diffusion_loss` asks a :class:`~oasis_lib.diffusion.processes.base.NoiseProcess` for
everything that depends on the process (the draw of t, x_t, the target, the weight), so the
same loss trains the VP process of Ho et al. 2020 (a ``NoiseSchedule`` is taken as its
:class:`~oasis_lib.diffusion.processes.vp.VPProcess`) and any process of the registry.

What the VP network predicts (eps, x0 or v) and the exact conversions between them live in
:mod:`oasis_lib.diffusion.parameterization` and are importable from here too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .parameterization import (  # noqa: F401 (re-exported: their historical home)
    MIN_SQRT_ALPHA_BAR,
    PREDICTION_TYPES,
    check_prediction_type,
    min_snr_weight,
    model_output_to_x0_eps,
    predict_eps_from_v,
    predict_eps_from_x0,
    predict_x0_from_eps,
    predict_x0_from_v,
    training_target,
    v_target,
    x0_to_output,
)
from .processes.base import NoiseProcess
from .processes.registry import as_process
from .schedule import NoiseSchedule

LOSS_TYPES = ("mse", "l1")


def diffusion_loss(
    model: Callable[[Tensor, Tensor], Tensor],
    process: NoiseProcess | NoiseSchedule,
    x0: Tensor,
    *,
    prediction_type: str = "eps",
    loss_type: str = "mse",
    min_snr_gamma: float | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The diffusion training loss (Ho et al. 2020 Algorithm 1 / eq. 14), as a scalar tensor.

    Args:
        model: called as ``model(x_t, t)``.
        process (NoiseProcess or NoiseSchedule): the forward process; a schedule is its VP
            process (:func:`~oasis_lib.diffusion.processes.registry.as_process`).
        x0 (Tensor [B, C, H, W]): clean images in [-1, 1].
        prediction_type (str, default ``"eps"``): one of the process's ``prediction_types``
            (VP: ``PREDICTION_TYPES``).
        loss_type (str, default ``"mse"``): one of ``LOSS_TYPES`` (``"l1"`` is the seed's loss).
        min_snr_gamma (float or None, default None): if set, weight each sample by the
            process's ``loss_weight`` (VP: :func:`min_snr_weight`, Hang et al. 2023; gamma = 5
            in the paper).
        t (Tensor [B] or None): times (VP: long in [0, T)); drawn by the process's
            ``sample_time`` when None.
        noise (Tensor like x0 or None): drawn from N(0, I) when None.
        generator (torch.Generator or None): CPU generator for the draws. Order: t first
            (VP: ``torch.randint``), then noise (``torch.randn``, float32); both on the CPU,
            then moved to x0's device, so a seed gives the same loss on every device.

    The per-element loss is averaged over each sample, weighted, then averaged over the batch.
    """
    process = as_process(process)
    process.check_prediction_type(prediction_type)
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {LOSS_TYPES}")
    b = x0.shape[0]
    if t is None:
        t = process.sample_time(b, generator=generator)  # Algorithm 1, line 3
    t = process.as_time(t, x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32)  # line 4
    noise = noise.to(device=x0.device, dtype=x0.dtype)

    x_t = process.forward(x0, t, noise)  # VP: eq. 4
    output = model(x_t, t)
    target = process.training_target(x0, noise, t, prediction_type=prediction_type)
    loss_fn = F.mse_loss if loss_type == "mse" else F.l1_loss  # line 5, eq. 14
    per_sample = loss_fn(output, target, reduction="none").reshape(b, -1).mean(dim=1)
    weight = process.loss_weight(t, prediction_type=prediction_type, min_snr_gamma=min_snr_gamma)
    if weight is not None:
        per_sample = per_sample * weight.to(per_sample.dtype)
    return per_sample.mean()


def validation_draws(
    process: NoiseProcess | NoiseSchedule, shape: tuple[int, ...], *, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Fixed (t, noise) for a validation batch of ``shape``: the process's
    :meth:`~oasis_lib.diffusion.processes.base.NoiseProcess.validation_draws` (VP: t evenly
    spread over [0, T), so each batch covers low and high noise levels alike; noise from a CPU
    generator seeded ``seed``). Re-create them with the same seed every epoch."""
    return as_process(process).validation_draws(shape, seed=seed)


def validation_loss(
    model: Callable[[Tensor, Tensor], Tensor],
    process: NoiseProcess | NoiseSchedule,
    x0: Tensor,
    *,
    t: Tensor,
    noise: Tensor,
    prediction_type: str = "eps",
    loss_type: str = "mse",
    min_snr_gamma: float | None = None,
) -> Tensor:
    """:func:`diffusion_loss` with fixed ``t`` and ``noise`` (e.g. from :func:`validation_draws`)
    and no gradient, so the number is comparable between epochs. Does not change the model's
    train/eval mode; the caller puts it in eval mode."""
    with torch.no_grad():
        return diffusion_loss(model, process, x0, prediction_type=prediction_type,
                              loss_type=loss_type, min_snr_gamma=min_snr_gamma, t=t, noise=noise)
