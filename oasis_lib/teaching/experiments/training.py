"""Experiment exercise of notebook 04: the prediction target decides where x0 is learned.

The reader trains the tiny U-Net briefly, changing one setting, ``prediction_type``, from
``"v"`` to ``"eps"``, and compares the two runs' error in x0 at each t. In x0 terms an
eps-loss weights the error by SNR_t and a v-loss by 1 + SNR_t (notebook 04; Salimans & Ho 2022,
sec. 4): at high t, where SNR_t is near 0, an eps-loss barely asks for x0 at all, and turning
an eps prediction into x0 divides by sqrt(alpha_bar_t), which is near 0 there (Ho et al. 2020
eq. 4 solved for x0). The checker tests that direction: the eps run's x0 error at high t is
larger than the v run's.

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

__all__ = ["HIGH_T", "TIMESTEPS", "check_eps_vs_v", "reference_eps_vs_v", "train_briefly"]

#: The timesteps at which the x0 error is measured, and those the checker calls "high t".
TIMESTEPS = (0, 100, 300, 500, 700, 900, 950, 990, 999)
HIGH_T = (900, 950, 990, 999)


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
        steps (int, default 60): optimiser steps of 8 slices (the tiny preset's batch).
        seed (int, default 0): the run's seed (weights, data order, t and noise).
        image_size, train_slices, val_slices: the data (slices evenly spread over the train
            and validate splits).
        timesteps: where to measure.
        root (str or None): the dataset folder; None: $OASIS_DATA, else the demo data.

    Returns:
        ``{"t", "x0_mse", "target_mse"}`` of :func:`~oasis_lib.teaching.figures.per_timestep_errors`
        for the EMA weights on the fixed validate slices (fixed noise, x0 clipped to [-1, 1]),
        and ``"prediction_type"``. Cached: the same arguments return the same (shared) dict.
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; "
                         f"choose one of {PREDICTION_TYPES}")
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
            "tiny", image_size=image_size, max_steps=steps, seed=seed, out_dir=out,
            epochs=-(-steps * 8 // len(train_set)), validate_every=10_000, sample_every=10_000,
            checkpoint_every=10_000, progress=False, diffusion={"prediction_type": prediction_type})
        trainer = Trainer(cfg, train_set=train_set, val_set=val_set)
        trainer.fit()
        x0 = torch.stack([val_set[i] for i in range(len(val_set))])
        errors = per_timestep_errors(trainer.ema.model, trainer.schedule, x0, timesteps,
                                     prediction_type=prediction_type, seed=seed)
    return {**errors, "prediction_type": prediction_type}


def reference_eps_vs_v(steps: int = 60, seed: int = 0, root: str | None = None
                       ) -> dict[str, dict[str, torch.Tensor]]:
    """The reference run: the same short training twice, predicting v, then eps."""
    return {target: train_briefly(target, steps=steps, seed=seed, root=root)
            for target in ("v", "eps")}


def check_eps_vs_v(runs: dict[str, dict[str, torch.Tensor]], *, quiet: bool = False
                   ) -> CheckResult:
    """Check the direction: the eps run's mean x0-MSE over ``HIGH_T`` exceeds the v run's.

    ``runs`` maps ``"v"`` and ``"eps"`` to :func:`train_briefly` results (e.g. from
    :func:`reference_eps_vs_v`, or the reader's own eps run next to the v run). Prints the
    x0-MSE of both at every measured t, then the verdict.
    """
    missing = [k for k in ("v", "eps") if k not in runs]
    if missing:
        return _report(False, f"eps_vs_v: not run yet: no {' or '.join(missing)} run; task: "
                       "train with prediction_type 'eps' next to 'v'", quiet)
    v, eps = runs["v"], runs["eps"]
    if v["t"].tolist() != eps["t"].tolist():
        return _report(False, "eps_vs_v: the two runs were measured at different t", quiet)
    lines = ["    t   x0-MSE (v)  x0-MSE (eps)"]
    lines += [f"  {int(t):>3}   {a:10.4f}  {b:12.4f}"
              for t, a, b in zip(v["t"], v["x0_mse"], eps["x0_mse"], strict=True)]
    high = torch.tensor([int(t) in HIGH_T for t in v["t"]])
    if not high.any():
        return _report(False, f"eps_vs_v: no measured t in {HIGH_T}", quiet)
    v_high, eps_high = float(v["x0_mse"][high].mean()), float(eps["x0_mse"][high].mean())
    passed = eps_high > v_high
    verdict = (f"eps_vs_v: {'passed' if passed else 'FAILED'}: at t >= {min(HIGH_T)} the eps "
               f"run's x0-MSE is {'larger' if passed else 'not larger'} than the v run's "
               f"(mean {eps_high:.3f} against {v_high:.3f})")
    return _report(passed, "\n".join([*lines, verdict]), quiet)


def _report(passed: bool, message: str, quiet: bool) -> CheckResult:
    """Print and return the verdict; a direction has no error size (0 if passed, else inf)."""
    if not quiet:
        print(message)
    return CheckResult("eps_vs_v", passed, 0.0 if passed else float("inf"), message)
