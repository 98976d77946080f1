"""The sample metrics of an evaluation, each with its real-vs-real reference value.

Every entry is ``{"value", "floor", "subsample_range", "subsample_size", "direction",
"explanation", ...}``: ``floor``
is the same metric for real held-out slices (``ref.held_out``: the test split unless the model
trained on it, else validate) against the train slices at the same sample
size. It is a *reference*, not a bound: a finite set of samples can score below it by chance
or by being closer to train than held-out subjects are (for the Fréchet distance, whose
estimate is biased upwards at small sizes, the sample and the reference are therefore always
compared at one matched size). ``subsample_range`` (where computed) is the 2.5-97.5 percentile
range of the metric over random subsets of ``subsample_size`` (half) of the samples, drawn
without replacement, against the whole training set (:func:`~oasis_lib.evaluation.metrics.
subsample_range`): a spread at that smaller size, not a confidence interval. Keys starting
with ``_`` hold arrays for figures and are dropped from the JSON.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from torch import Tensor

from . import metrics as M
from .reference import RealReference


def _entry(value, floor, direction: str, explanation: str, spread=None, **extra) -> dict:
    """One metric; ``spread``: ``(range, size)`` from :func:`_spread`, or None."""
    rng, size = spread if spread is not None else (None, None)
    return {"value": value, "floor": floor, "subsample_range": rng, "subsample_size": size,
            "direction": direction, "explanation": explanation, **extra}


def _spread(fn, a, b, *, n_subsets: int, seed: int):
    """``(subsample range, size)`` of ``fn(a, b)`` over half-size subsets of ``a``."""
    size = max(2, len(a) // 2)
    return M.subsample_range(fn, a, b, size=size, n_subsets=n_subsets, seed=seed), size


def _subset(x, size: int, seed: int):
    if len(x) <= size:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), size, replace=False))]


def _kid(a: np.ndarray, b: np.ndarray, *, size: int, subsets: int, seed: int) -> float:
    return M.kernel_inception_distance(a, b, subsets=subsets, subset_size=size, seed=seed)[0]


def _feature_metrics(fs: np.ndarray, ref: RealReference, *, seed: int, n_subsets: int) -> dict:
    """Fréchet distance and KID in segmenter feature space, samples and validate slices each
    against all train slices, at the matched size m = min(n, V)."""
    ft, fv = ref.train_out["features"], ref.validate_out["features"]
    m = min(len(fs), len(fv))
    fs_m = _subset(fs, m, seed)
    kid = partial(_kid, size=m, subsets=50, seed=seed)
    return {
        "frechet_segmenter": _entry(
            M.frechet_distance(fs_m, ft),
            M.real_vs_real_floor(M.frechet_distance, fv, ft, size=m, seed=seed), "lower",
            f"Fréchet distance of segmenter features, {m} samples vs all train slices; floor: "
            f"{m} {ref.held_out} slices vs train",
            _spread(M.frechet_distance, fs_m, ft, n_subsets=n_subsets, seed=seed),
            n_compared=m, value_all_samples=M.frechet_distance(fs, ft)),
        "kid_segmenter": _entry(
            kid(fs_m, ft), M.real_vs_real_floor(kid, fv, ft, size=m, seed=seed), "lower",
            f"KID (unbiased MMD^2, cubic kernel) of segmenter features, subsets of {m}; ~0 "
            "means indistinguishable from train",
            _spread(partial(_kid, size=max(2, m // 2), subsets=1, seed=seed), fs_m, ft,
                    n_subsets=n_subsets, seed=seed),
            std=M.kernel_inception_distance(fs_m, ft, subsets=50, subset_size=m, seed=seed)[1]),
    }


def _distribution_metrics(samples: Tensor, out_s: dict, ref: RealReference, *, seed: int,
                          n_subsets: int, max_values: int = 1_000_000) -> dict:
    frac = {"samples": out_s["fractions"], "train": ref.train_out["fractions"],
            "validate": ref.validate_out["fractions"]}
    tfd = M.tissue_fraction_distance(frac["samples"], frac["train"])
    tfd_floor = M.tissue_fraction_distance(frac["validate"], frac["train"])

    def mean_w1(a, b):
        return M.tissue_fraction_distance(a, b)["mean"]

    def pooled(images, masks):  # in-brain intensities, seeded subset of at most max_values
        values = M.brain_intensities(images, masks).numpy()
        return _subset(values, max_values, seed)

    i_s = pooled(samples, out_s["masks"])
    i_t = pooled(ref.train, ref.train_out["masks"])
    i_v = pooled(ref.validate, ref.validate_out["masks"])
    n_pairs = 2000
    real_div = _subset(ref.train, len(samples), seed)
    return {
        "tissue_fractions": _entry(
            tfd["mean"], tfd_floor["mean"], "lower",
            "Wasserstein-1 of per-slice CSF/grey/white fractions (segmenter masks) vs train, "
            "mean of 3 classes (0.01 = one percentage point)",
            _spread(mean_w1, frac["samples"], frac["train"], n_subsets=n_subsets, seed=seed),
            per_class=tfd, floor_per_class=tfd_floor,
            mean_fractions={k: f.mean(0).tolist() for k, f in frac.items()}, _fractions=frac),
        "intensity_histogram": _entry(
            _w1(i_s, i_t), _w1(i_v, i_t), "lower",
            "Wasserstein-1 of in-brain intensities (segmenter non-background) vs train, in "
            "[-1, 1] units (one grey level = 0.0078)", _intensities=(i_s, i_t, i_v)),
        "diversity_ssim": _entry(
            M.pairwise_ssim(samples, max_pairs=n_pairs, seed=seed),
            M.pairwise_ssim(real_div, max_pairs=n_pairs, seed=seed), "closer to floor",
            f"mean SSIM of {n_pairs} random sample pairs; floor: same for {len(real_div)} "
            "train slices; above the floor = less diverse (mode collapse)"),
    }


def _w1(a: np.ndarray, b: np.ndarray) -> float | None:
    """W1 of two value sets, None when one is empty (no brain found by the segmenter)."""
    return M.wasserstein_1d(a, b) if len(a) and len(b) else None


def _memorization(samples: Tensor, fs: np.ndarray, ref: RealReference) -> dict:
    """Nearest-train-slice distances of samples vs validate slices. Pixel space compares with
    the train slices and their mirror images (the trainer flips at random), RMS per pixel;
    feature space with the segmenter features of the train slices, Euclidean."""
    out = {}
    mirrored = torch.cat([ref.train, ref.train.flip(-1)])
    for space, q, r, v, metric, exact in (
        ("pixel", samples, mirrored, ref.validate, "rms", 1.0 / 255),
        ("features", fs, ref.train_out["features"], ref.validate_out["features"], "l2", 1e-6),
    ):
        d_s, i_s = M.nearest_neighbours(q, r, metric=metric)
        d_v, _ = M.nearest_neighbours(v, r, metric=metric)
        rep = M.memorization_report(d_s, d_v, exact_threshold=exact)
        out[f"memorization_{space}"] = _entry(
            rep["near_copy_fraction"], rep["expected_near_fraction"], "lower",
            f"fraction of samples nearer ({metric}, {space}) to a train slice than any "
            f"{ref.held_out} "
            f"slice is; floor: the chance level. {rep['verdict']}", **rep,
            _nn=(d_s, i_s, d_v, r))
    return out


def _inception(samples, ref, weights, device, seed) -> dict:
    net = None if weights is None else M.load_inception(weights, device)  # warns if missing
    if net is None:
        why = "no weights given" if weights is None else f"{weights} not found"
        return _entry(None, None, "lower", f"standard FID (Inception-v3); skipped ({why}): pass "
                      "--inception-weights FILE, a local torchvision state dict")
    m = min(len(samples), len(ref.validate))
    f_t = M.inception_features(net, _subset(ref.train, len(samples), seed))
    f_s = M.inception_features(net, _subset(samples, m, seed))
    f_v = M.inception_features(net, _subset(ref.validate, m, seed))
    return _entry(M.frechet_distance(f_s, f_t), M.frechet_distance(f_v, f_t), "lower",
                  f"standard FID (ImageNet Inception-v3 pool features), {m} samples vs "
                  f"{len(f_t)} train slices; loose for MRI")
