"""Measurements and figures that the notebooks teach with (pyplot is imported only when drawing).

- :func:`per_timestep_errors`: the loss of a trained network at chosen timesteps, in its own
  parameterisation and as the error of its implied x0 prediction (Ho et al. 2020 eq. 4 inverted;
  Salimans & Ho 2022 sec. 4), on fixed slices and fixed noise;
- :func:`plot_per_timestep_loss`: that loss against t next to the min-SNR-gamma weights
  (Hang et al. 2023) of the eps, x0 and v targets;
- :func:`plot_steps_vs_quality`: the sampler benchmark (``benchmarks/results/samplers.json``)
  as quality against network calls;
- :func:`ema_trajectories` / :func:`plot_ema_trajectories`: the library's EMA following a
  weight that noisy SGD moves, at several decays.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from ..diffusion.objectives import (
    PREDICTION_TYPES,
    min_snr_weight,
    model_output_to_x0_eps,
    training_target,
)
from ..diffusion.samplers import display_name, sampler_names
from ..diffusion.schedule import NoiseSchedule

__all__ = ["ema_trajectories", "per_timestep_errors", "plot_ema_trajectories",
           "plot_per_timestep_loss", "plot_steps_vs_quality", "read_sampler_benchmark"]

DPI = 100


@torch.no_grad()
def per_timestep_errors(
    model: Callable[[Tensor, Tensor], Tensor], schedule: NoiseSchedule, x0: Tensor,
    timesteps: Sequence[int], *, prediction_type: str, seed: int = 0, clip_x0: bool = True,
) -> dict[str, Tensor]:
    """Per-timestep errors of ``model`` on the clean slices ``x0`` ``[B, C, H, W]``.

    For every t the same noise (a CPU generator seeded ``seed``, drawn once) makes
    x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, and the network's output is compared with

    - ``target_mse``: its training target (eps, x0 or v) -- the unweighted loss of eq. 14 at t;
    - ``x0_mse``: the clean slice, through the x0 the output implies (clipped to [-1, 1] like the
      samplers do when ``clip_x0``).

    Returns float64 tensors ``[len(timesteps)]`` under ``"target_mse"`` and ``"x0_mse"``, and
    ``"t"`` (long). The model is called in eval mode, one batch per t.
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; "
                         f"choose one of {PREDICTION_TYPES}")
    ts = [int(t) for t in timesteps]
    if not ts or min(ts) < 0 or max(ts) >= schedule.T:
        raise ValueError(f"timesteps must be a non-empty list in [0, {schedule.T - 1}]")
    device = next(model.parameters()).device if isinstance(model, torch.nn.Module) else "cpu"
    was_training = getattr(model, "training", False)
    if isinstance(model, torch.nn.Module):
        model.eval()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    x0, noise = x0.to(device), noise.to(device)
    target_mse, x0_mse = [], []
    try:
        for t in ts:
            tb = torch.full((x0.shape[0],), t, dtype=torch.long, device=device)
            x_t = schedule.q_sample(x0, tb, noise)
            out = model(x_t, tb)
            target = training_target(schedule, x0, noise, tb, prediction_type)
            x0_hat, _ = model_output_to_x0_eps(schedule, out, x_t, tb, prediction_type)
            if clip_x0:
                x0_hat = x0_hat.clamp(-1, 1)
            target_mse.append(float((out - target).double().pow(2).mean()))
            x0_mse.append(float((x0_hat - x0).double().pow(2).mean()))
    finally:
        if isinstance(model, torch.nn.Module):
            model.train(was_training)
    return {"t": torch.tensor(ts), "target_mse": torch.tensor(target_mse, dtype=torch.float64),
            "x0_mse": torch.tensor(x0_mse, dtype=torch.float64)}


def plot_per_timestep_loss(
    errors: Mapping[str, Tensor], schedule: NoiseSchedule, *, prediction_type: str,
    gamma: float | None = 5.0, figsize=(11.0, 3.6),
):
    """Left: the per-t loss of :func:`per_timestep_errors` (log scale), unweighted and, when
    ``gamma`` is set, multiplied by the min-SNR weight the network was trained with. Right: the
    min-SNR-``gamma`` weight of each target against t (what the training loss multiplies each
    t's error by)."""
    import matplotlib.pyplot as plt

    t = errors["t"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=figsize, dpi=DPI)
    ax.plot(t, errors["target_mse"], "o-", color="C0", label=f"{prediction_type}-MSE (unweighted)")
    if gamma is not None:
        w = min_snr_weight(schedule, t, gamma, prediction_type).double()
        ax.plot(t, errors["target_mse"] * w, "s--", color="C1",
                label=f"x min-SNR weight (gamma={gamma:g})")
    ax.set_yscale("log")
    ax.set_xlabel("timestep t")
    ax.set_ylabel("mean squared error")
    ax.set_title("loss of the network at each t")
    ax.legend(fontsize=8)
    all_t = torch.arange(schedule.T)
    for k, kind in enumerate(PREDICTION_TYPES):
        w = min_snr_weight(schedule, all_t, gamma if gamma is not None else 5.0, kind)
        bx.plot(all_t, w, color=f"C{k + 2}", label=f"{kind} target")
    bx.set_yscale("log")
    bx.set_ylim(1e-4, 10)
    bx.set_xlabel("timestep t")
    bx.set_ylabel("loss weight")
    bx.set_title(f"min-SNR weight, gamma = {gamma if gamma is not None else 5.0:g}")
    bx.legend(fontsize=8)
    fig.tight_layout()
    return fig


def read_sampler_benchmark(path: str | os.PathLike) -> list[dict]:
    """Rows ``{sampler, steps, spacing, nfe, n, seconds_per_image, <metric>: value,
    <metric>_floor}`` of a ``bench_samplers.py`` JSON file
    (``benchmarks/results/samplers.json``)."""
    data = json.loads(open(path, encoding="utf-8").read())
    rows = []
    for r in data["results"]:
        row = {k: r[k] for k in ("sampler", "steps", "nfe", "n", "seconds_per_image")}
        row["spacing"] = r.get("spacing", "trailing")
        for name, m in r["metrics"].items():
            if isinstance(m, dict) and m.get("value") is not None:
                row[name] = m["value"]
                row[f"{name}_floor"] = m.get("floor")
        rows.append(row)
    return rows


METRIC_AXES = {"frechet_segmenter": ("Fréchet distance", 1.0),
               "kid_segmenter": ("KID ×10³", 1e3)}  # title, scale of the plotted values

#: The fast samplers' display names, from the registry (ddpm is the reference line instead).
SAMPLER_LABELS = {name: display_name(name)  # the VP samplers the figures compare
                  for name in sampler_names(needs_every_step=False, processes=("vp",))}


def plot_steps_vs_quality(
    rows: Sequence[Mapping], *, metrics: Sequence[str] = ("frechet_segmenter", "kid_segmenter"),
    tolerance: float = 0.05, figsize=(11.5, 4.0),
):
    """Each metric against network calls per image (log scale): one line per fast sampler and
    time spacing (solid: trailing, dashed: Karras), the 1000-step DDPM as a horizontal line with
    a band up to ``1 + tolerance`` times its value (the benchmark's goal), and the real-vs-real
    reference of each sample size as a dotted line. Titles and scales from ``METRIC_AXES``
    (KID is drawn x 10^3, as the benchmark tables print it)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=figsize, dpi=DPI, squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        title, scale = METRIC_AXES.get(metric, (metric, 1.0))
        have = [r for r in rows if metric in r]
        for k, sampler in enumerate(SAMPLER_LABELS):
            for spacing, style in (("trailing", "o-"), ("karras", "s--")):
                pts = sorted((r["nfe"], scale * r[metric], r["n"]) for r in have
                             if r["sampler"] == sampler and r.get("spacing") == spacing)
                if pts:
                    name = SAMPLER_LABELS[sampler] + (" Karras" if spacing == "karras" else "")
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=f"C{k}",
                            ms=4, lw=1.2, label=f"{name} ({pts[0][2]})")
        for r in (r for r in have if r["sampler"] == "ddpm"):
            value = scale * r[metric]
            ax.axhline(value, color="k", lw=1.5, label=f"DDPM {r['nfe']} ({r['n']})")
            ax.axhspan(value, value + tolerance * abs(value), color="k", alpha=0.12,
                       label=f"up to {tolerance:.0%} above DDPM")
        floors = sorted({(r["n"], scale * r[f"{metric}_floor"]) for r in have
                         if r.get(f"{metric}_floor") is not None})
        for j, (n, floor) in enumerate(floors):
            ax.axhline(floor, color="0.4", ls=":" if j == 0 else "-.", lw=1,
                       label=f"real vs real, {n} slices")
        ax.set_xscale("log")
        nfes = sorted({r["nfe"] for r in have if r["sampler"] != "ddpm"})
        ax.set_xticks(nfes, [str(v) for v in nfes])
        ax.minorticks_off()
        ax.set_xlabel("network calls per image (NFE, log scale)")
        ax.set_ylabel(f"{title} (lower is better)")
        ax.set_title(title)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    fig.tight_layout()
    return fig


def ema_trajectories(decays: Sequence[float] = (0.9, 0.99), *, steps: int = 400, lr: float = 0.05,
                     noise: float = 1.0, seed: int = 0, warmup: bool = True) -> dict[str, Tensor]:
    """Noisy SGD on a one-weight model, with the library's :class:`~oasis_lib.training.ema.EMA`
    (no warm-up) following it at each ``decay``: the live weight and every average, per step.

    The model is ``y = w x`` fitted to targets ``2 x + noise * z`` by plain SGD on one sample
    per step, so the live weight jitters around 2 the way a network's weights jitter between
    batches; the EMA of decay d averages over about 1 / (1 - d) steps. With ``warmup`` one more
    EMA of the largest decay uses the library's warm-up, min(d, (1 + n) / (10 + n)). Returns
    float64 tensors ``[steps]`` under ``"live"``, ``"ema <d>"`` (and ``"ema <d>, warm-up"``).
    """
    from ..training.ema import EMA

    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    emas = {f"ema {d:g}": EMA(model, d, warmup=False) for d in decays}
    if warmup:
        emas[f"ema {max(decays):g}, warm-up"] = EMA(model, max(decays), warmup=True)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    trace: dict[str, list[float]] = {"live": [], **{name: [] for name in emas}}
    for _ in range(steps):
        x = torch.randn((1, 1), generator=g)
        y = 2.0 * x + noise * torch.randn((1, 1), generator=g)
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        trace["live"].append(float(model.weight.detach()))
        for name, ema in emas.items():
            ema.update(model)
            trace[name].append(float(ema.model.weight))
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in trace.items()}


def plot_ema_trajectories(trace: Mapping[str, Tensor], *, target: float | None = 2.0,
                          figsize=(8.0, 3.2)):
    """The live weight (grey) and its EMAs against the optimiser step."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize, dpi=DPI)
    for k, (name, w) in enumerate(trace.items()):
        style = {"color": "0.6", "lw": 0.8} if name == "live" else {"color": f"C{k}", "lw": 1.8}
        ax.plot(torch.arange(1, len(w) + 1), w, label=name if name != "live" else "live weight",
                **style)
    if target is not None:
        ax.axhline(target, color="k", ls=":", lw=1, label="best weight")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("weight")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig
