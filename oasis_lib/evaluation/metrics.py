"""Sample-quality metrics that work offline: pure functions on features, images and masks.

FID's Inception network was trained on ImageNet photographs and its weights cannot be
downloaded here, so the evaluation (:mod:`oasis_lib.evaluation`) measures quality in the
feature space of our own tissue segmenter and with what the data offers (tissue fractions,
intensities, nearest neighbours). Every number is read against a **floor**: the same metric
between two disjoint sets of *real* slices (:func:`real_vs_real_floor`), since even two real
sets never score 0.

- :func:`frechet_distance` (Heusel et al. 2017), :func:`kernel_inception_distance`
  (Bińkowski et al. 2018) on any features, with :func:`subsample_range` (the spread at
  half the set size, without replacement).
- :func:`ssim` / :func:`pairwise_ssim` (Wang et al. 2004): diversity as mean pairwise SSIM.
- :func:`nearest_neighbours` and :func:`memorization_report`: does the model copy its
  training slices?
- :func:`wasserstein_1d`: tissue fractions and in-brain intensity histograms.
- :func:`inception_fid`: the standard FID, only with a user-supplied weights file.

Statistics use float64 (numpy) where cancellation matters (covariances, traces).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .ssim import pairwise_ssim, ssim, ssim_map  # noqa: F401 (part of the metrics API)

NN_METRICS = ("l2", "rms", "cosine")


def _f64(x) -> np.ndarray:
    """Any tensor/array as a float64 numpy array."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _features(x, name: str) -> np.ndarray:
    x = _f64(x)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"{name} must be a [N, D] array with N >= 2, got shape {x.shape}")
    return x


# --------------------------------------------------------------------------- Fréchet distance
def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix (eigenvalues clamped at 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_from_stats(mu1, s1, mu2, s2) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, s1) and N(mu2, s2) (Heusel et al. 2017):

    d^2 = ||mu1 - mu2||^2 + Tr(s1 + s2 - 2 (s1 s2)^{1/2}).

    Tr((s1 s2)^{1/2}) is computed without a non-symmetric square root: s1 s2 is similar to the
    PSD matrix M = s1^{1/2} s2 s1^{1/2}, so the trace is the sum of sqrt(eigenvalues of M),
    tiny negative eigenvalues (round-off) clamped to 0. Lower is better; 0 for equal Gaussians.
    """
    mu1, mu2, s1, s2 = _f64(mu1), _f64(mu2), np.atleast_2d(_f64(s1)), np.atleast_2d(_f64(s2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"inconsistent shapes: mu {mu1.shape}/{mu2.shape}, "
                         f"sigma {s1.shape}/{s2.shape}")
    r = _sqrt_psd(s1)
    eig = np.linalg.eigvalsh(r @ ((s2 + s2.T) / 2) @ r)
    tr_sqrt = np.sqrt(np.clip(eig, 0.0, None)).sum()
    d2 = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt
    return float(max(d2, 0.0))


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D] and [M, D]
    (means, unbiased covariances); :func:`frechet_from_stats`. FID when the features are
    Inception pool features. Lower is better. It is biased upwards for small N (a finite real
    set never scores 0), which is why it is always read against :func:`real_vs_real_floor`
    at the same set sizes."""
    a, b = _features(feats_a, "feats_a"), _features(feats_b, "feats_b")
    return frechet_from_stats(a.mean(0), np.cov(a, rowvar=False), b.mean(0),
                              np.cov(b, rowvar=False))


# --------------------------------------------------------------------------- KID
def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / d + 1)^3, the KID kernel (Bińkowski et al. 2018)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) with :func:`polynomial_kernel`:

    sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (n (n-1))
    - 2 sum_{i, j} k(x_i, y_j) / (m n).  Its expectation is 0 for equal distributions, so
    single values can be slightly negative."""
    m, n = len(x), len(y)
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    return float((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
                 + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1)) - 2.0 * k_xy.mean())


def kernel_inception_distance(feats_a, feats_b, *, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 (:func:`mmd2_unbiased`)
    with the cubic polynomial kernel, averaged over ``subsets`` random subsets of
    ``min(subset_size, N, M)`` rows of each set drawn without replacement (as torch-fidelity).

    Returns ``(mean, std)`` over the subsets. Lower is better. Unbiased: two samples of one
    distribution score 0 on average at any set size (only the spread grows for small sets), so
    a real floor above 0 (train vs held-out slices) measures a real difference between subjects.
    """
    a, b = _features(feats_a, "feats_a"), _features(feats_b, "feats_b")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    size = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(a[rng.choice(len(a), size, replace=False)],
                            b[rng.choice(len(b), size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


# --------------------------------------------------------------------------- intervals, floors
def subsample_range(fn: Callable, a, b, *, size: int | None = None, n_subsets: int = 200,
                    seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Subsample range of ``fn(a, b)``: the (1-level)/2 and (1+level)/2 quantiles of
    ``fn(a_s, b)`` over ``n_subsets`` random subsets ``a_s`` of ``size`` rows of ``a`` drawn
    *without* replacement; ``b`` (the reference set, e.g. the held-out slices) is kept whole in
    every call. ``size`` defaults to ``len(a) // 2`` (half-sampling: the delete-d jackknife
    with d = n - size, Shao & Wu 1989; Politis & Romano's 1994 subsampling would need
    size / n -> 0 and a rescaling by sqrt(size / n)).

    What the numbers are: how much the metric moves when it is computed on ``size`` of the
    rows of ``a`` instead of all of them, given this ``a`` and this ``b``. Unlike the
    percentile bootstrap, no row is ever repeated, so the fitted covariances of a subset are
    those of ``size`` distinct rows. What they are not: a confidence interval for the
    population value of a biased estimator. The Fréchet distance's upward bias grows as the
    set shrinks (about linearly in 1/size: Chong & Forsyth 2020), so its range sits above the
    value at full size; read it as a spread, and compare two Fréchet numbers only at one set
    size. For a smooth,
    root-n statistic (a mean; KID, which is unbiased) the spread of half-samples estimates the
    spread of the full-size estimate: the variance of a half-sample mean is
    s^2 / k * (n - k) / (n - 1) = s^2 / (n - 1) at k = n/2 (delete-d jackknife with d = n/2,
    Shao & Wu 1989), s^2 the pool variance (divisor n); s^2 / (n-1) is unbiased for sigma^2 / n.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_subsets < 2:
        raise ValueError(f"n_subsets must be >= 2, got {n_subsets}")
    size = len(a) // 2 if size is None else size
    if not 2 <= size <= len(a):
        raise ValueError(f"size must be in [2, {len(a)}] (the rows of a), got {size}")
    rng = np.random.default_rng(seed)
    stats = [fn(a[np.sort(rng.choice(len(a), size, replace=False))], b)
             for _ in range(n_subsets)]
    lo, hi = np.quantile(stats, [(1.0 - level) / 2, (1.0 + level) / 2])
    return float(lo), float(hi)


def real_vs_real_floor(fn: Callable, real_a, real_b, *, size: int | None = None,
                       seed: int = 0) -> float:
    """The floor of a two-set metric: ``fn`` between two *disjoint real* sets (e.g. train vs
    held-out slices; the caller guarantees they share no subject). With ``size``, ``real_a`` is
    first cut to a seeded random subset of ``size`` rows, the number of samples the metric
    is compared with, because finite-set metrics depend on set size. A generated set scoring
    at the floor is as close to ``real_b`` as the real slices ``real_a`` are."""
    if size is not None:
        if size > len(real_a):
            raise ValueError(f"size {size} exceeds the {len(real_a)} rows of real_a")
        idx = np.sort(np.random.default_rng(seed).choice(len(real_a), size, replace=False))
        real_a = real_a[idx]
    return fn(real_a, real_b)


# --------------------------------------------------------------------------- nearest neighbours
def nearest_neighbours(queries, references, *, metric: str = "l2",
                       batch: int = 1024) -> tuple[Tensor, Tensor]:
    """For each query, its nearest reference: ``(distances float64 [Q], indices long [Q])``.

    Rows are flattened ([N, C, H, W] images -> pixel space; [N, D] features as they are).
    ``metric``: ``"l2"`` Euclidean distance; ``"rms"`` = l2 / sqrt(dim), the root-mean-square
    per-pixel difference (one grey level of 8-bit data in [-1, 1] is 2/255 = 0.0078);
    ``"cosine"`` = 1 - cosine similarity. References are processed ``batch`` rows at a time.
    """
    if metric not in NN_METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {NN_METRICS}")
    q = torch.as_tensor(queries).detach().flatten(1).double()
    r = torch.as_tensor(references).detach().flatten(1).double().to(q.device)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} values per row, references {r.shape[1]}")
    if metric == "cosine":
        q, r = F.normalize(q, dim=1), F.normalize(r, dim=1)
    best = torch.full((len(q),), math.inf, dtype=torch.float64, device=q.device)
    index = torch.zeros(len(q), dtype=torch.long, device=q.device)
    for start in range(0, len(r), batch):
        chunk = r[start:start + batch]
        if metric == "cosine":
            d = 1.0 - q @ chunk.T
        else:  # ||q - r||^2 = |q|^2 + |r|^2 - 2 q.r, clamped at 0 against round-off
            d = ((q * q).sum(1, keepdim=True) + (chunk * chunk).sum(1) - 2 * q @ chunk.T)
            d = d.clamp_min(0).sqrt()
        dist, arg = d.min(1)
        better = dist < best
        best = torch.where(better, dist, best)
        index = torch.where(better, arg + start, index)
    if metric == "rms":
        best = best / math.sqrt(q.shape[1])
    return best.cpu(), index.cpu()


def memorization_report(sample_nn_dist, held_out_nn_dist, *, exact_threshold: float = 1e-6,
                        max_near_fraction: float | None = None) -> dict:
    """Does the model copy training data? Compare each sample's distance to its nearest
    training slice with the same distance for held-out *real* slices (held out -> train).

    Held-out data shows how close a new, honestly generated slice can be to the training set.
    Flags: *exact copies* (distance <= ``exact_threshold``) and *near copies* (closer than the
    closest held-out slice ever gets). If samples and held-out slices came from one
    distribution, a sample would fall below the held-out minimum with probability 1/(V+1);
    the verdict says "copies" when there is an exact copy or the near-copy fraction exceeds
    ``max_near_fraction`` (default 5/(V+1)). Also reported: the fraction of samples closer
    than the median held-out distance (0.5 expected without memorisation).
    """
    s, v = _f64(sample_nn_dist).ravel(), _f64(held_out_nn_dist).ravel()
    if not len(s) or not len(v):
        raise ValueError("memorization_report needs non-empty distance arrays")
    near_limit = float(v.min())
    expected = 1.0 / (len(v) + 1)
    max_near = 5.0 * expected if max_near_fraction is None else max_near_fraction
    exact = int((s <= exact_threshold).sum())
    near = int((s < near_limit).sum())
    near_fraction = near / len(s)
    below_median = float((s < np.median(v)).mean())
    copies = exact > 0 or near_fraction > max_near
    verdict = (
        f"{'COPIES training data' if copies else 'no sign of copying'}: {exact} of {len(s)} "
        f"samples are exact copies (distance <= {exact_threshold:.3g}) and {near} "
        f"({100 * near_fraction:.1f}%) are closer to a training slice than any of {len(v)} "
        f"held-out slices (< {near_limit:.4g}; {100 * expected:.1f}% expected by chance); "
        f"median nearest-training distance {np.median(s):.4g} for samples vs "
        f"{np.median(v):.4g} for held-out slices")
    return {
        "copies_training_data": bool(copies), "exact_copies": exact,
        "exact_threshold": float(exact_threshold), "near_copies": near,
        "near_copy_fraction": near_fraction, "near_copy_threshold": near_limit,
        "expected_near_fraction": expected, "fraction_below_held_out_median": below_median,
        "sample_median": float(np.median(s)), "held_out_median": float(np.median(v)),
        "sample_min": float(s.min()), "verdict": verdict,
    }


# --------------------------------------------------------------------------- distributions
def wasserstein_1d(a, b) -> float:
    """Exact Wasserstein-1 distance between two 1-D empirical distributions:
    W1 = integral |F_a(x) - F_b(x)| dx over the sorted union of the samples (F = empirical
    CDF). Same units as the values; lower is better; 0 only for identical distributions."""
    a, b = np.sort(_f64(a).ravel()), np.sort(_f64(b).ravel())
    if not len(a) or not len(b):
        raise ValueError("wasserstein_1d needs two non-empty samples")
    x = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(a, x[:-1], side="right") / len(a)
    cdf_b = np.searchsorted(b, x[:-1], side="right") / len(b)
    return float(np.sum(np.abs(cdf_a - cdf_b) * np.diff(x)))


def tissue_fraction_distance(fractions_a, fractions_b) -> dict[str, float]:
    """Per-class W1 (:func:`wasserstein_1d`) between two sets of per-slice tissue fractions
    [N, 3] (CSF, grey, white share of the brain), and their ``"mean"``. Lower is better; a
    value of 0.01 means the fractions are off by one percentage point on average."""
    a, b = _f64(fractions_a), _f64(fractions_b)
    if a.ndim != 2 or a.shape[1] != 3 or b.ndim != 2 or b.shape[1] != 3:
        raise ValueError(f"fractions must be [N, 3], got {a.shape} and {b.shape}")
    out = {name: wasserstein_1d(a[:, k], b[:, k])
           for k, name in enumerate(("csf", "grey_matter", "white_matter"))}
    out["mean"] = float(np.mean(list(out.values())))
    return out


def brain_intensities(images: Tensor, masks: Tensor | None = None, *,
                      threshold: float = -0.9) -> Tensor:
    """Intensities of the pixels inside the brain, flattened: where ``masks`` [B, H, W] is
    non-background (class > 0), or without masks where the image exceeds ``threshold``."""
    images = images.detach().float().cpu()
    inside = (masks.cpu() > 0) if masks is not None else (images[:, 0] > threshold)
    return images[:, 0][inside]


# --------------------------------------------------------------------------- optional FID
def load_inception(weights_path: str | os.PathLike | None,
                   device: str | torch.device = "cpu") -> torch.nn.Module | None:
    """torchvision's Inception-v3 with the weights of a *local* state-dict file (e.g.
    torchvision's ImageNet ``inception_v3_google-*.pth``), ``fc`` replaced by the identity so
    it returns the 2048-d pool features; None with a warning when no file is given or found.
    Never downloads anything."""
    from torchvision.models import inception_v3

    if weights_path is None or not Path(weights_path).is_file():
        why = "no weights file given" if weights_path is None else f"{weights_path} not found"
        warnings.warn(f"Inception FID skipped: {why}. Pass a local torchvision Inception-v3 "
                      "state dict (nothing is downloaded).", UserWarning, stacklevel=2)
        return None
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    from ..checkpoint import safe_torch_load  # errors name the file, never suggest unsafe loads

    state = safe_torch_load(weights_path, what="Inception weights")
    net.load_state_dict(state.get("state_dict", state))
    net.fc = torch.nn.Identity()
    return net.to(device).eval()


@torch.no_grad()
def inception_features(net: torch.nn.Module, images: Tensor, *, batch: int = 32) -> np.ndarray:
    """Pool features float64 [N, 2048] of grey [-1, 1] images: repeated to 3 channels and
    resized to 299x299 (bilinear); the Google Inception weights expect inputs in [-1, 1]."""
    device = next(net.parameters()).device
    out = []
    for k in range(0, len(images), batch):
        x = images[k:k + batch].float().to(device).clamp(-1, 1).expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        out.append(net(x).double().cpu().numpy())
    return np.concatenate(out)


def inception_fid(real: Tensor, fake: Tensor, weights_path: str | os.PathLike | None = None, *,
                  batch: int = 32, device: str | torch.device = "cpu") -> float | None:
    """The standard FID (Heusel et al. 2017): :func:`frechet_distance` of Inception-v3 pool
    features (:func:`load_inception`, :func:`inception_features`) of real and generated images.
    Lower is better. An ImageNet network judges MRI texture only loosely, so the evaluation
    leads with segmenter features. Returns None with a warning when no weights file is given
    or found: this function never downloads anything."""
    net = load_inception(weights_path, device)
    if net is None:
        return None
    return frechet_distance(inception_features(net, real, batch=batch),
                            inception_features(net, fake, batch=batch))
