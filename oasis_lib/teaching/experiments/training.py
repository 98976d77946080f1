"""Experiment exercise of notebook 04: the prediction target decides where x0 is learned.

The reader trains the tiny U-Net briefly, changing one setting, ``prediction_type``, from
``"v"`` to ``"eps"``, and compares what the two runs' training did to their error in x0 at each
t. In x0 terms an eps-loss weights the error by SNR_t and a v-loss by 1 + SNR_t (notebook 04;
Salimans & Ho 2022, sec. 4): where SNR_t is small, an eps-loss barely asks for x0.

The error is measured without clipping x0, at t from 600 to 900 (SNR_t from about 0.5 down to
0.02), where an eps-loss weights the x0 error at most about a third as much as a v-loss. An eps
network's x0 comes from x0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t) (Ho et al. 2020 eq. 4).
Because x0 - x0_hat = (eps_hat - eps) / sqrt(SNR_t) for an eps run, an eps
network's x0 error is larger than a v network's even before training; comparing the two raw
errors would test that identity, not training. The checker therefore compares the *share* of
its untrained network's x0 error each run has left after training (the same initial weights and
the same noise): the eps run must have more left than the v run, and both runs must have
lowered their error at all. A run that trained nothing leaves a share of 1 and fails; so do two
swapped runs.

:func:`reference_eps_vs_v` is the reference run (both targets, the same seed and data);
:func:`check_eps_vs_v` is the checker. At the default 60 steps of 8 slices each run takes a few
seconds on one CPU core.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset, Subset

from ...config import TrainConfig
from ...data import load_splits
from ...diffusion.objectives import PREDICTION_TYPES
from ...training.trainer import Trainer
from ..exercises import CheckResult
from ..figures import per_timestep_errors

__all__ = ["CHECKED_T", "TIMESTEPS", "check_eps_vs_v", "reference_eps_vs_v", "train_briefly"]

#: The timesteps at which the x0 error is measured, and those the checker compares (on the
#: cosine schedule, SNR_t from 0.51 at t = 600 to 0.024 at t = 900).
TIMESTEPS = (100, 300, 500, 600, 700, 800, 900)
CHECKED_T = (600, 700, 800, 900)


@functools.lru_cache(maxsize=1)
def _demo_data(root: str | None, image_size: int, train_slices: int, val_slices: int
               ) -> tuple[Dataset, Dataset]:
    """Up to ``train_slices`` training and ``val_slices`` validate slices, evenly spread over
    their splits (cached: the two runs of an experiment share them)."""
    train, val = load_splits(root, image_size=image_size, augment=False)

    def spread(ds: Dataset, n: int) -> Dataset:
        return Subset(ds, torch.linspace(0, len(ds) - 1, min(n, len(ds))).long().tolist())

    return spread(train, train_slices), spread(val, val_slices)


def train_briefly(prediction_type: str, *, steps: int = 60, seed: int = 0, image_size: int = 32,
                  train_slices: int = 240, val_slices: int = 16,
                  timesteps: Sequence[int] = TIMESTEPS, root: str | None = None
                  ) -> dict[str, torch.Tensor]:
    """Train the ``tiny`` preset for ``steps`` optimiser steps predicting ``prediction_type``,
    then measure its x0 error at each of ``timesteps``.

    Args:
        prediction_type (str): ``"eps"``, ``"x0"`` or ``"v"``: the one setting the reader changes.
        steps (int, default 60): optimiser steps of 8 slices (the tiny preset's batch); 0
            measures the untrained network only.
        seed (int, default 0): the run's seed (weights, data order, t and noise).
        image_size, train_slices, val_slices: the data (slices evenly spread over the train
            and validate splits).
        timesteps: where to measure.
        root (str or None): the dataset folder; None: $OASIS_DATA, else the demo data.

    Returns:
        ``{"t", "x0_mse", "target_mse"}`` of :func:`~oasis_lib.teaching.figures.per_timestep_errors`
        for the live weights after training, on the fixed validate slices (fixed noise, x0 not
        clipped); ``"x0_mse_start"``, the same for the untrained initial weights; ``"snr"``,
        SNR_t at each t; and ``"prediction_type"``. Cached: the same arguments return the same
        (shared) dict.
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; "
                         f"choose one of {PREDICTION_TYPES}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    return _train(prediction_type, steps, seed, image_size, train_slices, val_slices,
                  tuple(int(t) for t in timesteps), root)


@functools.lru_cache(maxsize=4)
def _train(prediction_type: str, steps: int, seed: int, image_size: int, train_slices: int,
           val_slices: int, timesteps: tuple[int, ...], root: str | None
           ) -> dict[str, torch.Tensor]:
    """:func:`train_briefly` (every argument positional, so equal calls share the cache)."""
    train_set, val_set = _demo_data(root, image_size, train_slices, val_slices)
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig.from_preset(
            "tiny", image_size=image_size, max_steps=max(steps, 1), seed=seed, out_dir=out,
            epochs=max(1, -(-steps * 8 // len(train_set))), validate_every=10_000,
            sample_every=10_000, checkpoint_every=10_000, progress=False,
            diffusion={"prediction_type": prediction_type})
        trainer = Trainer(cfg, train_set=train_set, val_set=val_set)
        x0 = torch.stack([val_set[i] for i in range(len(val_set))])

        def measure() -> dict[str, torch.Tensor]:
            return per_timestep_errors(trainer.model, trainer.schedule, x0, timesteps,
                                       prediction_type=prediction_type, seed=seed, clip_x0=False)

        start = measure()
        if steps > 0:
            trainer.fit()
        errors = measure()
        snr = trainer.schedule.snr[list(timesteps)].double().cpu()
    return {**errors, "x0_mse_start": start["x0_mse"], "snr": snr,
            "prediction_type": prediction_type}


def reference_eps_vs_v(steps: int = 60, seed: int = 0, root: str | None = None
                       ) -> dict[str, dict[str, torch.Tensor]]:
    """The reference run: the same short training twice, predicting v, then eps."""
    return {target: train_briefly(target, steps=steps, seed=seed, root=root)
            for target in ("v", "eps")}


def check_eps_vs_v(runs: dict[str, dict[str, torch.Tensor]], *, quiet: bool = False
                   ) -> CheckResult:
    """Check an effect of training: over ``CHECKED_T``, the eps run has more of its untrained
    x0-MSE left than the v run, and both runs lowered it.

    ``runs`` maps ``"v"`` and ``"eps"`` to :func:`train_briefly` results (e.g. from
    :func:`reference_eps_vs_v`, or the reader's own eps run next to the v run). Prints, at
    every measured t, each run's x0-MSE before and after training and the share left (after /
    before) next to SNR_t, then the verdict on the mean share over ``CHECKED_T``.
    """
    missing = [k for k in ("v", "eps") if k not in runs]
    if missing:
        return _report(False, f"eps_vs_v: not run yet: no {' or '.join(missing)} run; task: "
                       "train with prediction_type 'eps' next to 'v'", quiet)
    v, eps = runs["v"], runs["eps"]
    if v["t"].tolist() != eps["t"].tolist():
        return _report(False, "eps_vs_v: the two runs were measured at different t", quiet)
    checked = torch.tensor([int(t) in CHECKED_T for t in v["t"]])
    if not checked.any():
        return _report(False, f"eps_vs_v: no measured t in {CHECKED_T}", quiet)
    share = {k: r["x0_mse"] / r["x0_mse_start"] for k, r in (("v", v), ("eps", eps))}
    snr = v.get("snr")
    lines = ["                    x0-MSE of the v run        x0-MSE of the eps run",
             "    t      SNR_t   before   after   left     before    after   left"]
    lines += [f"  {int(t):>3}  {'' if snr is None else f'{float(snr[i]):.3g}':>7}  "
              f"{v['x0_mse_start'][i]:7.3f} {v['x0_mse'][i]:7.3f} "
              f"{share['v'][i]:5.0%}   {eps['x0_mse_start'][i]:8.3f} {eps['x0_mse'][i]:8.3f} "
              f"{share['eps'][i]:5.0%}" for i, t in enumerate(v["t"])]
    left = {k: float(s[checked].mean()) for k, s in share.items()}
    span = f"{min(CHECKED_T)} <= t <= {max(CHECKED_T)}"
    untrained = [k for k in ("v", "eps") if left[k] >= 1.0]
    if untrained:
        verdict = (f"eps_vs_v: FAILED: at {span} training did not lower the x0-MSE of the "
                   f"{' and '.join(untrained)} run (did it train, steps > 0?)")
        return _report(False, "\n".join([*lines, verdict]), quiet)
    passed = left["eps"] > left["v"]
    verdict = (f"eps_vs_v: {'passed' if passed else 'FAILED'}: at {span} training left "
               f"{left['eps']:.0%} of the eps run's untrained x0-MSE and {left['v']:.0%} of "
               f"the v run's (mean over t); the eps run should keep the larger share")
    return _report(passed, "\n".join([*lines, verdict]), quiet)


def _report(passed: bool, message: str, quiet: bool) -> CheckResult:
    """Print and return the verdict; a direction has no error size (0 if passed, else inf)."""
    if not quiet:
        print(message)
    return CheckResult("eps_vs_v", passed, 0.0 if passed else float("inf"), message)
