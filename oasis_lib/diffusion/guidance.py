"""Classifier-free guidance (Ho & Salimans 2022) as a model wrapper the samplers can call.

The samplers only ever call ``model(x_t, t)``. :class:`ClassifierFreeGuidance` holds a
conditional network ``model(x, t, cond)``, the condition and its null twin, and is itself such
a callable (an ``nn.Module``, so :func:`~oasis_lib.diffusion.sampling.sample` finds its device
and puts the wrapped network in eval mode).

Scale convention (diffusers' ``guidance_scale``): with the unconditional output u and the
conditional output c at the same x_t and t, the guided output is

    g = u + s (c - u) = (1 + w) c - w u,   s = 1 + w        (Ho & Salimans 2022 eq. 6, w = s - 1)

so ``scale = 1`` is the conditional model, ``scale = 0`` the unconditional one and s > 1
extrapolates away from the unconditional prediction. Quote s (not w) wherever a scale is shown.

Any prediction type (proof). At fixed x_t and t, the eps, x0 and v predictions are affine in each
other with the same offset for both passes: any conversion is f(y) = A x_t + B y (e.g.
x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab), v = sqrt(ab) eps - sqrt(1 - ab) x0). Hence
f(u + s (c - u)) = A x_t + B u + s B (c - u) = f(u) + s (f(c) - f(u)): guiding the network's own
output and converting, or converting and then guiding, give the same result, whatever the
prediction type (tested numerically). Guidance rescale, below, is not affine, so it needs a
chosen space.

Guidance rescale (Lin et al. 2024, sec. 3.4): at large s the guided prediction's
spread exceeds the data's (over-exposure); with per-sample standard deviations over C, H, W,

    g_rescaled = g * std(c) / std(g),   g_final = phi g_rescaled + (1 - phi) g.

``rescale_space="x0"`` (default) applies it to the predicted image x0, the quantity whose
brightness range the paper corrects, and converts back to the network's prediction type;
``"output"`` applies it to the raw output (eps or v), as diffusers' ``guidance_rescale`` does.
``rescale=0`` is plain CFG (the rescale code is skipped).

Dynamic thresholding (Saharia et al. 2022, Imagen, sec. 2.3): a large s pushes the predicted
x0 outside [-1, 1], and the sampler's static clip then saturates those pixels. Instead, per
sample, take s_p = the ``percentile`` p quantile of |x0|, set s_p = max(s_p, 1), clip x0 to
[-s_p, s_p] and divide by s_p. :class:`DynamicThreshold` is that rule as a callable the
samplers accept in place of the clip (``sample(..., clip_x0=DynamicThreshold(0.995))``,
``pipe.sample(..., clip_x0=...)``). It acts on the x0 prediction at every step, whatever the
guidance scale; at s_p = 1 it is the static clip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .parameterization import check_prediction_type, x0_to_output  # noqa: F401 (re-exported)
from .processes.base import NoiseProcess
from .processes.registry import as_process
from .schedule import NoiseSchedule

RESCALE_SPACES = ("x0", "output")


def cat_conditions(a: Any, b: Any) -> Any:
    """Concatenate two conditions along the batch: tensors, ``None`` (both), dicts of those, or
    objects with a ``cat`` classmethod (:class:`~oasis_lib.models.conditioning.Condition`)."""
    if a is None and b is None:
        return None
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return torch.cat([a, b])
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return {k: cat_conditions(a[k], b[k]) for k in a}
    if type(a) is type(b) and hasattr(type(a), "cat"):
        return type(a).cat([a, b])
    raise TypeError(f"cannot batch conditions of types {type(a).__name__} and "
                    f"{type(b).__name__}; pass tensors, dicts of tensors or Conditions")


def _move(c: Any, device: torch.device) -> Any:
    if c is None:
        return None
    if isinstance(c, dict):
        return {k: _move(v, device) for k, v in c.items()}
    return c.to(device)


def _batch_of(c: Any) -> int | None:
    if isinstance(c, Tensor):
        return int(c.shape[0])
    if isinstance(c, dict):
        sizes = {_batch_of(v) for v in c.values()} - {None}
        return sizes.pop() if len(sizes) == 1 else None
    return getattr(c, "batch_size", None)


def rescale_guidance(guided: Tensor, cond: Tensor, phi: float) -> Tensor:
    """Lin et al. 2024 sec. 3.4: blend ``guided`` with its copy rescaled to ``cond``'s
    per-sample standard deviation (over all non-batch dims), weight ``phi`` in [0, 1]."""
    if not 0.0 <= phi <= 1.0:
        raise ValueError(f"guidance rescale phi must be in [0, 1], got {phi!r}")
    dims = tuple(range(1, guided.ndim))
    std_cond = cond.std(dim=dims, keepdim=True)
    std_guided = guided.std(dim=dims, keepdim=True)
    factor = std_cond / std_guided.clamp(min=torch.finfo(guided.dtype).tiny)
    return guided * (phi * factor + (1.0 - phi))


def dynamic_threshold(x0: Tensor, percentile: float = 0.995) -> Tensor:
    """Saharia et al. 2022 sec. 2.3, per sample: s = quantile_p(|x0|) over C, H, W,
    s = max(s, 1), return clip(x0, -s, s) / s (in [-1, 1]; unchanged where |x0| <= 1 at p)."""
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"percentile must be in (0, 1], got {percentile!r}")
    s = torch.quantile(x0.detach().abs().flatten(1).float(), percentile, dim=1)
    s = s.clamp(min=1.0).to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))  # [B, 1, 1, 1]
    return torch.maximum(torch.minimum(x0, s), -s) / s


class DynamicThreshold:
    """:func:`dynamic_threshold` with a fixed ``percentile`` p (default 0.995, diffusers'
    ``dynamic_thresholding_ratio``), a callable ``x0 -> x0`` for the samplers' ``clip_x0``."""

    def __init__(self, percentile: float = 0.995) -> None:
        if not 0.0 < percentile <= 1.0:
            raise ValueError(f"percentile must be in (0, 1], got {percentile!r}")
        self.percentile = float(percentile)

    def __call__(self, x0: Tensor) -> Tensor:
        return dynamic_threshold(x0, self.percentile)

    def __repr__(self) -> str:
        return f"DynamicThreshold(percentile={self.percentile:g})"


class ClassifierFreeGuidance(nn.Module):
    """``(x_t, t) -> u + scale (c - u)`` for a conditional network (see the module docstring).

    Args:
        model: the network, called as ``model(x, t, cond)``.
        cond: the condition for the batch (a tensor such as mask channels ``[B, C, H, W]``, a
            dict of tensors, or a ``Condition``); its batch size must match x's.
        uncond: the null condition of the same batch size; default ``cond.null_like()`` (for a
            ``Condition``). For raw tensors pass it explicitly.
        scale (float, default 1.0): s = 1 + w (diffusers' convention): 1 = conditional,
            0 = unconditional, > 1 = guided. At exactly 0 or 1 only one pass is run.
        rescale (float, default 0.0): phi of Lin et al. 2024 sec. 3.4; 0 = plain CFG.
        rescale_space (str, default ``"x0"``): one of ``RESCALE_SPACES``.
        schedule, prediction_type: needed for ``rescale > 0`` with ``rescale_space="x0"``
            (the schedule stands for its VP process).
        process (NoiseProcess or None): the noise process instead of ``schedule`` (the x0
            conversions of the rescale: ``process.to_x0`` and ``process.to_output``).
        batched (bool, default True): run the conditional and unconditional passes as one call
            on a batch of 2B (cond first, then uncond); False makes two calls of B (less memory).

    ``self.nfe_batches`` counts the network calls (for the tests and benchmarks).
    """

    def __init__(
        self,
        model: Callable[..., Tensor],
        cond: Any,
        uncond: Any = None,
        *,
        scale: float = 1.0,
        rescale: float = 0.0,
        rescale_space: str = "x0",
        schedule: NoiseSchedule | None = None,
        prediction_type: str = "eps",
        batched: bool = True,
        process: NoiseProcess | None = None,
    ) -> None:
        super().__init__()
        if rescale_space not in RESCALE_SPACES:
            raise ValueError(f"unknown rescale_space {rescale_space!r}; "
                             f"choose one of {RESCALE_SPACES}")
        if not 0.0 <= rescale <= 1.0:
            raise ValueError(f"guidance rescale phi must be in [0, 1], got {rescale!r}")
        if process is None and schedule is not None:
            process = as_process(schedule)
        if process is None:
            check_prediction_type(prediction_type)
        else:
            process.check_prediction_type(prediction_type)
        if rescale > 0 and rescale_space == "x0" and process is None:
            raise ValueError("rescale in x0 space needs the schedule (schedule=...) or the "
                             "noise process (process=...)")
        if uncond is None:
            if not hasattr(cond, "null_like"):
                raise ValueError("pass uncond (the null condition) for a condition of type "
                                 f"{type(cond).__name__}")
            uncond = cond.null_like()
        if _batch_of(cond) != _batch_of(uncond):
            raise ValueError(f"cond has batch size {_batch_of(cond)} but uncond has "
                             f"{_batch_of(uncond)}")
        self.model = model  # an nn.Module is registered as a submodule (device, eval mode)
        self.cond, self.uncond = cond, uncond
        self.scale, self.rescale, self.rescale_space = float(scale), float(rescale), rescale_space
        self.schedule, self.prediction_type, self.batched = schedule, prediction_type, batched
        self.process = process
        self.nfe_batches = 0

    def _call(self, x: Tensor, t: Tensor, c: Any) -> Tensor:
        self.nfe_batches += 1
        return self.model(x, t, _move(c, x.device))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        b = _batch_of(self.cond)
        if b is not None and b != x.shape[0]:
            raise ValueError(f"the condition has batch size {b} but x_t has {x.shape[0]}")
        if self.scale == 1.0:
            return self._call(x, t, self.cond)
        if self.scale == 0.0:
            return self._call(x, t, self.uncond)
        if self.batched:
            both = self._call(torch.cat([x, x]), torch.cat([t, t]),
                              cat_conditions(self.cond, self.uncond))
            out_c, out_u = both.chunk(2)
        else:
            out_c, out_u = self._call(x, t, self.cond), self._call(x, t, self.uncond)
        guided = out_u + self.scale * (out_c - out_u)
        if self.rescale == 0.0:
            return guided
        if self.rescale_space == "output":
            return rescale_guidance(guided, out_c, self.rescale)
        pt = self.prediction_type
        x0_c = self.process.to_x0(out_c, x, t, prediction_type=pt)
        x0_g = self.process.to_x0(guided, x, t, prediction_type=pt)
        x0 = rescale_guidance(x0_g, x0_c, self.rescale)
        return self.process.to_output(x0, x, t, prediction_type=pt)

    def extra_repr(self) -> str:
        return (f"scale={self.scale:g}, rescale={self.rescale:g}, "
                f"rescale_space={self.rescale_space!r}, batched={self.batched}")


def classifier_free_guidance(model: Callable[..., Tensor], cond: Any, uncond: Any = None,
                             **kwargs: Any) -> ClassifierFreeGuidance:
    """Functional alias of :class:`ClassifierFreeGuidance` (same arguments)."""
    return ClassifierFreeGuidance(model, cond, uncond, **kwargs)
