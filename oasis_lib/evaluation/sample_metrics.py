"""The sample metrics of an evaluation, each with its real-vs-real reference value.

The rule (:mod:`~oasis_lib.evaluation.reference`): the samples are scored against the
*held-out* slices, subjects the model never trained on (``ref.held_out_split``: test unless
the model trained on it, else validate). Every entry is ``{"value", "floor",
"subsample_range", "subsample_size", "direction", "explanation", ...}``:

- ``value``: the metric of the samples against the held-out slices;
- ``floor``: the same metric with as many *train* slices (a seeded random subset) in place of
  the samples, so both numbers are computed at one set size (the Fréchet distance is biased
  upwards at small sizes, Wasserstein-1 between finite sets too). Real slices the model
  learned from score this against subjects it never saw; a model that copied its training
  slices would score it too. It is a *reference*, not a bound: samples can score below it by
  chance. Diversity has no second set: its floor is the held-out slices' own diversity;
  memorisation's is the chance level.
- ``subsample_range`` (where computed): the 2.5-97.5 percentile range of the metric over random
  subsets of ``subsample_size`` (half) of the samples, drawn without replacement, against all
  held-out slices (:func:`~oasis_lib.evaluation.metrics.subsample_range`): a spread at that
  smaller size, not a confidence interval.

Keys starting with ``_`` hold arrays for figures and are dropped from the JSON.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from torch import Tensor

from . import metrics as M
from .reference import RealReference
from .texture import BACKGROUND_THRESHOLD, ratios_from_values, texture_values, threshold_mask


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
    """A seeded random subset of ``size`` rows of ``x`` in their order (all of ``x`` if
    smaller)."""
    if len(x) <= size:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), size, replace=False))]


def _kid(a: np.ndarray, b: np.ndarray, *, size: int, subsets: int, seed: int) -> float:
    return M.kernel_inception_distance(a, b, subsets=subsets, subset_size=size, seed=seed)[0]


def _mmd2_against_all(a: np.ndarray, b: np.ndarray) -> float:
    """KID of one subset ``a`` against *all* rows of ``b``: the unbiased MMD^2 with every
    row of both sets (Gretton et al. 2012, eq. 3, which allows m != n). The statistic behind
    KID's subsample range, so the range varies the samples only, as
    :func:`~oasis_lib.evaluation.metrics.subsample_range` requires."""
    return M.mmd2_unbiased(np.asarray(a, np.float64), np.asarray(b, np.float64))


def _feature_metrics(fs: np.ndarray, ref: RealReference, *, seed: int, n_subsets: int) -> dict:
    """Fréchet distance and KID in segmenter feature space: m = min(n, N) samples against all
    held-out slices; floor: m train slices (seeded subset) against the same held-out slices."""
    fh, ft = ref.held_out_out["features"], ref.train_out["features"]
    held = ref.held_out_split
    m = min(len(fs), len(ft))
    fs_m = _subset(fs, m, seed)
    k = min(m, len(fh))  # KID's subset size: no larger than either set
    kid = partial(_kid, size=k, subsets=50, seed=seed)
    return {
        "frechet_segmenter": _entry(
            M.frechet_distance(fs_m, fh),
            M.real_vs_real_floor(M.frechet_distance, ft, fh, size=m, seed=seed), "lower",
            f"Fréchet distance of segmenter features, {m} samples vs all {len(fh)} {held} "
            f"slices; floor: {m} train slices vs the same",
            _spread(M.frechet_distance, fs_m, fh, n_subsets=n_subsets, seed=seed),
            n_compared=m),
        "kid_segmenter": _entry(
            kid(fs_m, fh), M.real_vs_real_floor(kid, ft, fh, size=m, seed=seed), "lower",
            f"KID (unbiased MMD^2, cubic kernel) of segmenter features vs {held} slices, "
            f"subsets of {k}; ~0 means indistinguishable from them; floor: {m} train slices",
            _spread(_mmd2_against_all, fs_m, fh, n_subsets=n_subsets, seed=seed),
            std=M.kernel_inception_distance(fs_m, fh, subsets=50, subset_size=k, seed=seed)[1]),
    }


def _distribution_metrics(samples: Tensor, out_s: dict, ref: RealReference, *, seed: int,
                          n_subsets: int, max_values: int = 1_000_000) -> dict:
    """Tissue fractions and in-brain intensities (samples vs held-out slices; floor: as many
    train slices vs the same), and diversity (floor: as many held-out slices)."""
    held = ref.held_out_split
    n = len(samples)
    pick = _subset(np.arange(len(ref.train)), n, seed)  # the train slices of every floor
    frac = {"samples": out_s["fractions"], "train": ref.train_out["fractions"],
            held: ref.held_out_out["fractions"]}
    tfd = M.tissue_fraction_distance(frac["samples"], frac[held])
    tfd_floor = M.tissue_fraction_distance(frac["train"][pick], frac[held])

    def mean_w1(a, b):
        return M.tissue_fraction_distance(a, b)["mean"]

    def pooled(images, masks):  # in-brain intensities, seeded subset of at most max_values
        values = M.brain_intensities(images, masks).numpy()
        return _subset(values, max_values, seed)

    i_s = pooled(samples, out_s["masks"])
    i_t = pooled(ref.train, ref.train_out["masks"])  # all train slices, for the figure
    i_h = pooled(ref.held_out, ref.held_out_out["masks"])
    i_floor = pooled(ref.train[pick], ref.train_out["masks"][pick])
    n_pairs = 2000
    real_div = _subset(ref.held_out, n, seed)
    return {
        "tissue_fractions": _entry(
            tfd["mean"], tfd_floor["mean"], "lower",
            f"Wasserstein-1 of per-slice CSF/grey/white fractions (segmenter masks) vs {held} "
            f"slices, mean of 3 classes (0.01 = one percentage point); floor: {len(pick)} "
            "train slices vs the same",
            _spread(mean_w1, frac["samples"], frac[held], n_subsets=n_subsets, seed=seed),
            per_class=tfd, floor_per_class=tfd_floor,
            mean_fractions={k: f.mean(0).tolist() for k, f in frac.items()}, _fractions=frac),
        "intensity_histogram": _entry(
            _w1(i_s, i_h), _w1(i_floor, i_h), "lower",
            f"Wasserstein-1 of in-brain intensities (segmenter non-background) vs {held} "
            f"slices, in [-1, 1] units (one grey level = 0.0078); floor: {len(pick)} train "
            "slices vs the same", _intensities={"samples": i_s, "train": i_t, held: i_h}),
        "diversity_ssim": _entry(
            M.pairwise_ssim(samples, max_pairs=n_pairs, seed=seed),
            M.pairwise_ssim(real_div, max_pairs=n_pairs, seed=seed), "closer to floor",
            f"mean SSIM of all sample pairs, a random {n_pairs} if more; floor: the same for "
            f"{len(real_div)} {held} slices; above the floor = less diverse (mode collapse)"),
    }


def _texture_metrics(samples: Tensor, ref: RealReference, *, seed: int) -> dict:
    """How much fine texture the samples keep (:mod:`~oasis_lib.evaluation.texture`), unpaired:
    each sample's mean |Laplacian| and high-frequency share (energy above 0.25 cycles/pixel)
    over the *median* of the held-out slices; the value is the median of those ratios. Floor:
    the same for as many train slices (seeded subset), ~1. Region: the pixels above -0.9 (the
    background is exactly -1; on real slices this is the ground-truth brain mask pixel for
    pixel), for the samples and the real slices alike, since a segmenter mask comes at the
    segmenter's resolution (64x64), whose blocky outline would count as texture at 256x256."""
    held, n = ref.held_out_split, len(samples)
    train = ref.train[_subset(np.arange(len(ref.train)), n, seed)]

    real = texture_values(ref.held_out, threshold_mask(ref.held_out))

    def ratios(images: Tensor) -> dict:
        return ratios_from_values(real, texture_values(images, threshold_mask(images)))

    s, f = ratios(samples), ratios(train)
    region = f"inside the brain (pixels > {BACKGROUND_THRESHOLD})"
    return {
        "texture_laplacian": _entry(
            s["laplacian_ratio_median"], f["laplacian_ratio_median"], "closer to 1",
            f"median over samples of mean |Laplacian| {region} / the median of the {held} "
            f"slices (1 = real texture, < 1 = smoother); floor: {len(train)} train slices",
            worst=s["laplacian_ratio_worst"], below_half=s["laplacian_below_half"],
            floor_worst=f["laplacian_ratio_worst"], sample_median=s["laplacian_fake"],
            held_out_median=s["laplacian_real"]),
        "texture_hf_share": _entry(
            s["hf_share_ratio_median"], f["hf_share_ratio_median"], "closer to 1",
            f"median over samples of the share of spectral energy above 0.25 cycles/pixel "
            f"{region} / the median of the {held} slices; floor: {len(train)} train slices",
            worst=s["hf_share_ratio_worst"], floor_worst=f["hf_share_ratio_worst"],
            sample_median=s["hf_share_fake"], held_out_median=s["hf_share_real"]),
    }


def _w1(a: np.ndarray, b: np.ndarray) -> float | None:
    """W1 of two value sets, None when one is empty (no brain found by the segmenter)."""
    return M.wasserstein_1d(a, b) if len(a) and len(b) else None


def _memorization(samples: Tensor, fs: np.ndarray, ref: RealReference) -> dict:
    """Nearest-train-slice distances of the samples vs those of the held-out slices. Pixel
    space compares with the train slices and their mirror images (the trainer flips at random),
    RMS per pixel; feature space with the segmenter features of the train slices, Euclidean."""
    out = {}
    mirrored = torch.cat([ref.train, ref.train.flip(-1)])
    for space, q, r, v, metric, exact in (
        ("pixel", samples, mirrored, ref.held_out, "rms", 1.0 / 255),
        ("features", fs, ref.train_out["features"], ref.held_out_out["features"], "l2", 1e-6),
    ):
        d_s, i_s = M.nearest_neighbours(q, r, metric=metric)
        d_v, _ = M.nearest_neighbours(v, r, metric=metric)
        rep = M.memorization_report(d_s, d_v, exact_threshold=exact)
        out[f"memorization_{space}"] = _entry(
            rep["near_copy_fraction"], rep["expected_near_fraction"], "lower",
            f"fraction of samples nearer ({metric}, {space}) to a train slice than any "
            f"{ref.held_out_split} slice is; floor: the chance level. {rep['verdict']}", **rep,
            _nn=(d_s, i_s, d_v, r))
    return out


def _inception(samples, ref, weights, device, seed) -> dict:
    net = None if weights is None else M.load_inception(weights, device)  # warns if missing
    if net is None:
        why = "no weights given" if weights is None else f"{weights} not found"
        return _entry(None, None, "lower", f"standard FID (Inception-v3); skipped ({why}): pass "
                      "--inception-weights FILE, a local torchvision state dict")
    m = min(len(samples), len(ref.train))
    f_h = M.inception_features(net, ref.held_out)
    f_s = M.inception_features(net, _subset(samples, m, seed))
    f_t = M.inception_features(net, _subset(ref.train, m, seed))
    return _entry(M.frechet_distance(f_s, f_h), M.frechet_distance(f_t, f_h), "lower",
                  f"standard FID (ImageNet Inception-v3 pool features), {m} samples vs "
                  f"{len(f_h)} {ref.held_out_split} slices; floor: {m} train slices vs the "
                  "same; loose for MRI")
