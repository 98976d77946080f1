"""Evaluate a diffusion model offline: generate samples, score them against real slices.

:func:`evaluate` loads a checkpoint, generates ``n`` samples and calls
:func:`evaluate_samples`, which any caller (e.g. a benchmark comparing samplers) can also use on
samples it made itself. Every metric (:mod:`oasis_lib.metrics`) comes with a **floor**: the same
number for real held-out slices (validate) against the training slices, so "how good is 3.1?"
is answered by "real data scores 2.4".

Sets: *train* = the slices the diffusion model learned from (train + test splits, as
:func:`oasis_lib.data.load_splits`), *validate* = held-out subjects. Feature-space metrics use
the tissue segmenter's features (:mod:`oasis_lib.segmenter`), trained on brain slices, instead
of ImageNet Inception features. The Fréchet distance depends on set size, so samples and
validate slices are compared with train at one matched size ``min(n, len(validate))`` (the
demo data has 256 validate slices; with n = 500 a seeded subset of 256 samples is used, and the
all-samples value is reported too). Real slices and their segmenter outputs are cached per
(data root, image size, segmenter), so repeated calls only pay for the samples.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from . import metrics as M
from .plotting import image_grid, to_display

REPORT_NAME = "report.json"
FIGURES = ("samples.png", "memorization_gallery.png", "tissue_fractions.png",
           "intensity_histogram.png")
TISSUES = ("csf", "grey_matter", "white_matter")


# --------------------------------------------------------------------------- real reference
@dataclass
class RealReference:
    """Real slices at one image size with their segmenter outputs (cached between calls)."""

    train: Tensor  # float32 [N, 1, H, W] in [-1, 1]: what the diffusion model learned from
    validate: Tensor  # float32 [V, 1, H, W]: held-out subjects
    validate_masks: Tensor  # long [V, H, W]: ground truth
    train_out: dict  # features [N, D] float64, masks [N, H, W] predicted, fractions [N, 3]
    validate_out: dict
    dice: list[float]  # segmenter Dice per class on validate (background, CSF, grey, white)
    segmenter: object  # the segmenter these outputs came from (the cache checks identity)


_REFERENCES: dict[tuple, RealReference] = {}
_CACHE_SIZE = 2


@torch.no_grad()
def segment(segmenter, images: Tensor, *, batch_size: int = 64, desc: str | None = None) -> dict:
    """Segmenter features (float64 [N, D]), predicted masks (long [N, H, W]) and tissue
    fractions (float64 [N, 3]) of images [N, 1, H, W]; images are resized to the segmenter's
    training size when it differs and the masks resized back (nearest). ``desc``: show a
    progress bar with this label."""
    from .segmenter import tissue_fractions

    device = next(segmenter.parameters()).device
    size = getattr(getattr(segmenter, "config", None), "image_size", None)
    feats, masks = [], []
    for k in tqdm(range(0, len(images), batch_size), desc=desc, disable=desc is None,
                  leave=False):
        x = images[k:k + batch_size].float().clamp(-1, 1).to(device)
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        feats.append(segmenter.features(x).double().cpu())
        m = segmenter.predict(x).cpu()
        if m.shape[-2:] != images.shape[-2:]:
            m = F.interpolate(m[:, None].float(), size=images.shape[-2:], mode="nearest")[:, 0]
        masks.append(m.long())
    masks_t = torch.cat(masks)
    return {"features": torch.cat(feats).numpy(), "masks": masks_t,
            "fractions": tissue_fractions(masks_t).double().numpy()}


def _stack(datasets) -> tuple[Tensor, Tensor]:
    images = torch.cat([d.images for d in datasets]).float()[:, None] / 127.5 - 1.0
    return images, torch.cat([d.masks for d in datasets]).long()


def real_reference(segmenter, image_size: int, *, data_root=None, batch_size: int = 64,
                   progress: bool = False) -> RealReference:
    """Train and validate slices at ``image_size`` with their segmenter outputs; cached per
    (data root, image size, segmenter object)."""
    from .data import load_splits, resolve_data_root
    from .segmenter import dice_per_class

    root = resolve_data_root(data_root)
    key = (str(Path(root).resolve()), int(image_size), id(segmenter))
    ref = _REFERENCES.get(key)
    if ref is not None and ref.segmenter is segmenter:
        return ref
    train_set, val_set = load_splits(root, image_size, with_masks=True, augment=False)
    train, _ = _stack(train_set.datasets)
    validate, val_masks = _stack([val_set])

    def label(split: str) -> str | None:  # progress-bar label; None: no bar
        return f"segmenting {split} slices" if progress else None

    train_out = segment(segmenter, train, batch_size=batch_size, desc=label("train"))
    val_out = segment(segmenter, validate, batch_size=batch_size, desc=label("validate"))
    dice = dice_per_class(val_out["masks"], val_masks).tolist()
    ref = RealReference(train, validate, val_masks, train_out, val_out, dice, segmenter)
    while len(_REFERENCES) >= _CACHE_SIZE:  # drop the oldest (dicts keep insertion order)
        _REFERENCES.pop(next(iter(_REFERENCES)))
    _REFERENCES[key] = ref
    return ref


# --------------------------------------------------------------------------- sampling
def generate_samples(model, schedule, config, n: int, *, sampler: str = "ddim", steps: int = 50,
                     seed: int = 0, batch_size: int = 64, device=None,
                     progress: bool = True) -> tuple[Tensor, float]:
    """``n`` samples (CPU float32 [n, 1, S, S]) from one seeded generator, in batches; returns
    them with the wall-clock seconds per image."""
    from .sampling import sample

    g = torch.Generator().manual_seed(seed)
    size, out = config.image_size, []
    t0 = time.perf_counter()
    with tqdm(total=n, desc=f"sampling ({sampler})", unit="img", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            x = sample(model, schedule, (b, 1, size, size), sampler=sampler,
                       steps=None if sampler == "ddpm" else steps,
                       prediction_type=config.diffusion.prediction_type, generator=g,
                       device=device, progress=False)
            out.append(x.float().cpu())
            bar.update(b)
    return torch.cat(out), (time.perf_counter() - t0) / n


# --------------------------------------------------------------------------- metrics
def _entry(value, floor, direction: str, explanation: str, interval=None, **extra) -> dict:
    return {"value": value, "floor": floor, "interval": interval, "direction": direction,
            "explanation": explanation, **extra}


def _subset(x, size: int, seed: int):
    if len(x) <= size:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), size, replace=False))]


def _kid(a: np.ndarray, b: np.ndarray, *, size: int, subsets: int, seed: int) -> float:
    return M.kernel_inception_distance(a, b, subsets=subsets, subset_size=size, seed=seed)[0]


def _feature_metrics(fs: np.ndarray, ref: RealReference, *, seed: int, n_boot: int) -> dict:
    """Fréchet distance and KID in segmenter feature space, samples and validate slices each
    against all train slices, at the matched size m = min(n, V)."""
    ft, fv = ref.train_out["features"], ref.validate_out["features"]
    m = min(len(fs), len(fv))
    fs_m = _subset(fs, m, seed)
    kid = partial(_kid, size=m, subsets=50, seed=seed)
    kid_once = partial(_kid, size=m, subsets=1, seed=seed)  # inside the bootstrap
    return {
        "frechet_segmenter": _entry(
            M.frechet_distance(fs_m, ft),
            M.real_vs_real_floor(M.frechet_distance, fv, ft, size=m, seed=seed), "lower",
            f"Fréchet distance of segmenter features, {m} samples vs all train slices; floor: "
            f"{m} validate slices vs train",
            M.bootstrap_interval(M.frechet_distance, fs_m, ft, n_boot=n_boot, seed=seed),
            n_compared=m, value_all_samples=M.frechet_distance(fs, ft)),
        "kid_segmenter": _entry(
            kid(fs_m, ft), M.real_vs_real_floor(kid, fv, ft, size=m, seed=seed), "lower",
            f"KID (unbiased MMD^2, cubic kernel) of segmenter features, subsets of {m}; ~0 "
            "means indistinguishable from train",
            M.bootstrap_interval(kid_once, fs_m, ft, n_boot=n_boot, seed=seed),
            std=M.kernel_inception_distance(fs_m, ft, subsets=50, subset_size=m, seed=seed)[1]),
    }


def _distribution_metrics(samples: Tensor, out_s: dict, ref: RealReference, *, seed: int,
                          n_boot: int, max_values: int = 1_000_000) -> dict:
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
            M.bootstrap_interval(mean_w1, frac["samples"], frac["train"], n_boot=n_boot,
                                 seed=seed),
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
            f"fraction of samples nearer ({metric}, {space}) to a train slice than any validate "
            f"slice is; floor: the chance level. {rep['verdict']}", **rep,
            _nn=(d_s, i_s, d_v, r))
    return out


def evaluate_samples(samples: Tensor, *, data_root=None, segmenter=None, segmenter_path=None,
                     out=None, inception_weights=None, batch_size: int = 64, device=None,
                     seed: int = 0, n_boot: int = 200, meta: dict | None = None,
                     progress: bool = True) -> dict:
    """Score generated ``samples`` [n, 1, S, S] in [-1, 1] against real slices at size S.

    Args:
        segmenter: a :class:`~oasis_lib.segmenter.TissueSegmenter` (else loaded from
            ``segmenter_path``; None: the shipped one) on ``device``.
        out: folder for ``report.json`` and the figures (None: write nothing).
        inception_weights: a local Inception-v3 state dict for the optional standard FID.
        n_boot: bootstrap resamples for the intervals. meta: extra fields for the report.

    Returns the report: ``{"meta": {...}, "metrics": {name: {"value", "floor", "interval",
    "direction", "explanation", ...}}, "verdict": str}``.
    """
    from .device import get_device
    from .segmenter import load_segmenter

    t0 = time.perf_counter()
    if samples.ndim != 4 or samples.shape[1] != 1 or len(samples) < 2:
        raise ValueError(f"samples must be [n >= 2, 1, S, S], got {tuple(samples.shape)}")
    samples = samples.detach().float().cpu().clamp(-1, 1)
    dev = get_device(device)
    if segmenter is None:
        segmenter = load_segmenter(segmenter_path, device=dev)
    ref = real_reference(segmenter, samples.shape[-1], data_root=data_root,
                         batch_size=batch_size, progress=progress)
    t_ref = time.perf_counter() - t0  # ~0 when cached
    out_s = segment(segmenter, samples, batch_size=batch_size)
    dice = dict(zip(("background", *TISSUES), ref.dice, strict=True))
    metrics = {"segmenter_dice": _entry(
        float(np.mean(ref.dice[1:])), None, "higher",
        "segmenter Dice on validate (mean of CSF/grey/white): how far to trust the "
        "segmenter-based metrics", per_class=dice)}
    metrics |= _feature_metrics(out_s["features"], ref, seed=seed, n_boot=n_boot)
    metrics |= _distribution_metrics(samples, out_s, ref, seed=seed, n_boot=n_boot)
    metrics |= _memorization(samples, out_s["features"], ref)
    metrics["inception_fid"] = _inception(samples, ref, inception_weights, dev, seed)
    report = {"meta": {"n": len(samples), "image_size": samples.shape[-1],
                       "n_train": len(ref.train), "n_validate": len(ref.validate),
                       "seed": seed, "n_boot": n_boot, **(meta or {}),
                       "reference_seconds": round(t_ref, 2),
                       "metric_seconds": round(time.perf_counter() - t0 - t_ref, 2)},
              "metrics": metrics,
              "verdict": (f"pixels: {metrics['memorization_pixel']['verdict']}; segmenter "
                          f"features: {metrics['memorization_features']['verdict']}")}
    if out is not None:
        write_report(report, samples, ref, out)
    return _clean(report)


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


def evaluate(checkpoint=None, *, n: int = 500, sampler: str = "ddim", steps: int = 50,
             seed: int = 0, out="outputs/eval", data_root=None, segmenter_path=None,
             segmenter=None, inception_weights=None, batch_size: int = 64, device=None,
             progress: bool = True, n_boot: int = 200) -> dict:
    """Generate ``n`` samples from ``checkpoint`` (None: the shipped demo model) with
    ``sampler``/``steps`` from ``seed`` and score them (:func:`evaluate_samples`); writes
    ``report.json`` and the figures to ``out`` (None: nothing written). Returns the report."""
    from .pretrained import DEMO_CHECKPOINT, load_model

    model, schedule, config = load_model(checkpoint, device=device)
    dev = next(model.parameters()).device
    samples, spi = generate_samples(model, schedule, config, n, sampler=sampler, steps=steps,
                                    seed=seed, batch_size=batch_size, device=dev,
                                    progress=progress)
    meta = {"checkpoint": str(checkpoint or DEMO_CHECKPOINT.name), "sampler": sampler,
            "steps": None if sampler == "ddpm" else steps, "device": dev.type,
            "seconds_per_image": round(spi, 4), "sampling_seconds": round(spi * n, 1)}
    return evaluate_samples(samples, data_root=data_root, segmenter=segmenter,
                            segmenter_path=segmenter_path, out=out,
                            inception_weights=inception_weights, batch_size=batch_size,
                            device=dev, seed=seed, n_boot=n_boot, meta=meta,
                            progress=progress)


# --------------------------------------------------------------------------- output
def _clean(x):
    """JSON-ready copy: numpy to python, NaN to None, private ``_*`` keys dropped."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items() if not str(k).startswith("_")}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic | Tensor):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def format_report(report: dict) -> str:
    """A compact table: metric, value, floor (real vs real), direction; then the verdict."""
    def num(v):
        return "-" if v is None else f"{v:.4g}"

    rows = [f"{'metric':<22}{'value':>11}{'floor':>11}  direction"]
    for name, e in report["metrics"].items():
        rows.append(f"{name:<22}{num(e['value']):>11}{num(e['floor']):>11}  {e['direction']}")
    for space in ("pixel", "features"):
        verdict = report["metrics"][f"memorization_{space}"]["verdict"]
        rows.append(f"memorization ({space}): {verdict}")
    return "\n".join(rows)


def write_report(report: dict, samples: Tensor, ref: RealReference, out) -> Path:
    """``report.json`` and the four figures (:data:`FIGURES`) in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    m = report["metrics"]
    image_grid(samples[:64], nrow=8, title=f"{len(samples)} samples (first 64)",
               save_to=out / "samples.png")
    d_s, i_s, d_v, mirrored = m["memorization_pixel"]["_nn"]
    plot_memorization(samples, mirrored, d_s, i_s, float(d_v.min()),
                      save_to=out / "memorization_gallery.png")
    plot_fractions(m["tissue_fractions"]["_fractions"], save_to=out / "tissue_fractions.png")
    i_s, i_t, i_v = m["intensity_histogram"]["_intensities"]
    plot_histograms({"samples": i_s, "train": i_t, "validate": i_v}, "in-brain intensity",
                    save_to=out / "intensity_histogram.png")
    path = out / REPORT_NAME
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_clean(report), indent=2))
    os.replace(tmp, path)
    return path


def _save(fig, save_to):
    if save_to is not None:
        fig.savefig(save_to, dpi=100, bbox_inches="tight")
        plt.close(fig)
    return fig


def plot_memorization(samples: Tensor, train: Tensor, dist, index, val_min: float, *,
                      k: int = 8, save_to=None):
    """The ``k`` samples closest to a training slice (top) above that slice (bottom);
    ``train[index]`` is each sample's nearest training slice (possibly mirrored)."""
    order = np.argsort(np.asarray(dist))[:k]
    fig, axes = plt.subplots(2, len(order), figsize=(1.5 * len(order), 3.6), squeeze=False)
    for j, s in enumerate(order):
        axes[0, j].imshow(to_display(samples[s]), cmap="gray", vmin=0, vmax=1)
        axes[0, j].set_title(f"d={float(dist[s]):.3f}", fontsize=8)
        axes[1, j].imshow(to_display(train[int(index[s])]), cmap="gray", vmin=0, vmax=1)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle(f"closest samples (top) and their nearest train slice (RMS pixel distance); "
                 f"closest validate slice: {val_min:.3f}", fontsize=9)
    return _save(fig, save_to)


def plot_fractions(fractions: dict, *, save_to=None):
    """Per-slice CSF / grey / white fractions of the brain, one panel per tissue."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for k, (ax, name) in enumerate(zip(axes, ("CSF", "grey matter", "white matter"),
                                       strict=True)):
        plot_histograms({g: f[:, k] for g, f in fractions.items()}, f"{name} fraction",
                        ax=ax, bins=30)
    return _save(fig, save_to)


def plot_histograms(groups: dict, xlabel: str, *, ax=None, bins: int = 50, save_to=None):
    """Overlaid density histograms of 1-D values, one per named group."""
    fig, ax = (plt.subplots(figsize=(6, 3.5)) if ax is None else (ax.figure, ax))
    groups = {name: np.asarray(v) for name, v in groups.items() if len(v)}
    if not groups:
        return _save(fig, save_to) if save_to is not None else fig
    lo = min(float(np.min(v)) for v in groups.values())
    hi = max(float(np.max(v)) for v in groups.values())
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    for name, values in groups.items():
        ax.hist(values, bins=edges, density=True, histtype="step", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return _save(fig, save_to) if save_to is not None else fig


def metrics_table(report: dict, *, digits: int = 3) -> str:
    """The report's metrics as a table: metric, value, floor, 95% bootstrap interval,
    direction; numbers rounded to ``digits`` significant digits (so that a notebook's printed
    table reproduces across CPUs). :func:`format_report` is the CLI's longer version."""
    def num(v):
        return "-" if v is None else f"{v:.{digits}g}"

    rows = [f"{'metric':<22}{'value':>9}{'floor':>9}  {'interval':<20}direction"]
    for name, e in report["metrics"].items():
        iv = e.get("interval")
        span = "-" if iv is None else f"[{num(iv[0])}, {num(iv[1])}]"
        rows.append(f"{name:<22}{num(e['value']):>9}{num(e['floor']):>9}  {span:<20}"
                    f"{e['direction']}")
    return "\n".join(rows)


def plot_segmentation(images: Tensor, true_masks: Tensor, pred_masks: Tensor, *,
                      figsize: tuple[float, float] = (10.0, 5.6), save_to=None):
    """Slices (top row), their true tissue masks (middle) and the segmenter's masks (bottom),
    one column per slice, titled with the slice's Dice (mean of CSF, grey, white)."""
    from matplotlib.colors import ListedColormap

    from .plotting import TISSUE_CMAP, TISSUE_NAMES
    from .segmenter import dice_per_class

    colours = ListedColormap(["black", *(TISSUE_CMAP(k)[:3] for k in (1, 2, 3))])
    fig, axes = plt.subplots(3, len(images), figsize=figsize, squeeze=False)
    for j in range(len(images)):
        dice = float(dice_per_class(pred_masks[j].cpu(), true_masks[j].cpu())[1:].mean())
        axes[0, j].imshow(to_display(images[j]), cmap="gray", vmin=0, vmax=1)
        axes[0, j].set_title(f"Dice {dice:.2f}", fontsize=9)
        for r, masks in ((1, true_masks), (2, pred_masks)):
            axes[r, j].imshow(masks[j].cpu().numpy(), cmap=colours, vmin=0, vmax=3,
                              interpolation="nearest")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for r, label in enumerate(("slice", "true mask", "segmenter")):
        axes[r, 0].set_ylabel(label)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours(k)) for k in (1, 2, 3)]
    fig.legend(handles, TISSUE_NAMES[1:], loc="lower center", ncol=3, frameon=False)
    return _save(fig, save_to)
