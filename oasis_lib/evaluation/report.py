"""Evaluate a diffusion model offline: generate samples, score them against real slices.

:func:`evaluate` loads a checkpoint as a pipeline, generates ``n`` samples and calls
:func:`evaluate_samples`, which any caller (e.g. a benchmark comparing samplers) can also use
on samples it made itself.

The rule, from the splits the model trained on (its config's ``train_splits``, which
:func:`evaluate` reads from the checkpoint and :func:`evaluate_samples` requires):

- *train* = the slices of ``train_splits`` (as :func:`oasis_lib.data.load_splits`);
- *held out* = the test split when the model did not train on it (never used for training or
  for choosing the checkpoint), else the validate split (never trained on, but it chose
  ``best.pt``);
- every metric (:mod:`oasis_lib.evaluation.sample_metrics`) scores the samples **against the
  held-out slices**, and its ``floor`` is the same metric for as many **train slices** against
  the same held-out slices. So "how good is 0.31?" is answered by "the real slices the model
  learned from score 0.25". It is a reference, not a lower bound: samples can score below it.

The report's meta names both sets (``train_splits``, ``held_out``). Feature-space metrics use
the tissue segmenter's features (:mod:`oasis_lib.evaluation.segmenter`), trained on brain
slices, instead of ImageNet Inception features. Real slices and their segmenter outputs are
cached per (data root, image size, train splits, segmenter), so repeated calls only pay for
the samples.

Conditional models take ``condition=`` (a Condition, or ``"validate"``: the masks and slice
indices of n validate slices, :mod:`oasis_lib.evaluation.conditions`) and
``guidance_scale=``; the report's meta records them, and its metrics gain ``mask_dice`` and
``slice_mae`` with their floors. The unconditional path is unchanged.

The result is an :class:`~oasis_lib.evaluation.evaluation_report.EvaluationReport` (its own
module, with its text views ``format_report``, ``metrics_table``, ``held_out_note``; re-exported
here): it keeps the arrays behind the numbers for figures and notebooks, and serialises to the
JSON of ``report.json``; :func:`write_report` writes it and draws the figures.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data.layout import SEED_TRAIN_SPLITS
from ..device import get_device
from ..diffusion.samplers import get_sampler
from ..seeding import cpu_generator
from .conditions import batch_condition, condition_metrics, resolve_condition
from .evaluation_report import (  # noqa: F401 (re-exported: notebooks import them from here)
    REPORT_NAME,
    EvaluationReport,
    format_report,
    held_out_note,
    metrics_table,
)
from .kept import kept_samples
from .reference import real_reference, segment
from .sample_metrics import (
    _distribution_metrics,
    _entry,
    _feature_metrics,
    _inception,
    _memorization,
    _texture_metrics,
)
from .segmenter import load_segmenter

TEXTURE_MIN_SIZE = 128  # evaluate_samples(texture=None) adds the texture metrics from here
FIGURES = ("samples.png", "memorization_gallery.png", "tissue_fractions.png",
           "intensity_histogram.png")


# --------------------------------------------------------------------------- sampling
def generate_samples(pipeline, n: int, *, sampler: str = "ddim", steps: int | None = None,
                     seed: int = 0, batch_size: int = 64, progress: bool = True,
                     spacing: str | None = None, condition=None,
                     guidance_scale: float | None = None, guidance_rescale: float = 0.0,
                     data_root=None) -> tuple[Tensor, float]:
    """``n`` samples (CPU float32 [n, C, H, W]) of a :class:`~oasis_lib.diffusion.pipeline.
    DiffusionPipeline`, from one seeded generator, in batches; returns them with the
    wall-clock seconds per image. ``spacing``: the time grid (None: the model's default).

    Conditional models: ``condition`` is a :class:`~oasis_lib.models.conditioning.Condition`
    of batch 1 or ``n`` (sample k gets row k), or ``"validate"``: the masks and slice indices
    of ``n`` validate slices of ``data_root`` spread evenly over the split, fixed by ``seed``
    (:func:`~oasis_lib.evaluation.conditions.validate_conditions`). ``guidance_scale`` s and
    ``guidance_rescale`` phi: classifier-free guidance as in ``pipeline.sample``."""
    cond, _ = resolve_condition(pipeline, condition, n, data_root=data_root, seed=seed)
    extra = {} if cond is None and guidance_scale is None and not guidance_rescale else {
        "condition": cond, "guidance_scale": guidance_scale,
        "guidance_rescale": guidance_rescale}
    g = cpu_generator(seed)
    out = []
    t0 = time.perf_counter()
    with tqdm(total=n, desc=f"sampling ({sampler})", unit="img", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            if cond is not None:
                extra["condition"] = batch_condition(cond, start, b)
            x = pipeline.sample(b, sampler=sampler, steps=steps, spacing=spacing, generator=g,
                                progress=False, **extra)
            out.append(x.float().cpu())
            bar.update(b)
    return torch.cat(out), (time.perf_counter() - t0) / n


# --------------------------------------------------------------------------- scoring
def evaluate_samples(samples: Tensor, *, train_splits, data_root=None, segmenter=None,
                     segmenter_path=None, out=None, inception_weights=None,
                     batch_size: int = 64, device=None, seed: int = 0, n_subsets: int = 200,
                     meta: dict | None = None, progress: bool = True,
                     texture: bool | None = None) -> EvaluationReport:
    """Score generated ``samples`` [n, 1, S, S] in [-1, 1] against the held-out real slices at
    size S, each metric next to the same metric for n train slices (the module's rule).

    Args:
        train_splits: the splits the model trained on; pass its ``pipe.config.train_splits``
            (:func:`evaluate` does). Required, so that no model is scored against a split it
            learned from: ``("train",)`` holds out test, ``("train", "test")`` validate.
        segmenter: a :class:`~oasis_lib.evaluation.segmenter.TissueSegmenter` (else loaded
            from ``segmenter_path``; None: the shipped one) on ``device``.
        out: folder for ``report.json`` and the figures (None: write nothing).
        inception_weights: a local Inception-v3 state dict for the optional standard FID.
        n_subsets: random half-size subsets of the samples behind each ``subsample_range``
            (:func:`~oasis_lib.evaluation.metrics.subsample_range`). meta: extra fields.
        texture: add ``texture_laplacian`` and ``texture_hf_share`` (how much fine texture the
            samples keep, :func:`~oasis_lib.evaluation.sample_metrics._texture_metrics`);
            None: for S >= 128, the native sizes of the latent models, whose decoder is what
            blurs (the 64x64 pixel models' tables stay as they were).

    Returns an :class:`EvaluationReport`; its JSON view is ``{"meta": {...}, "metrics": {name:
    {"value", "floor", "subsample_range", "subsample_size", "direction", "explanation", ...}},
    "verdict": str}``.
    """
    t0 = time.perf_counter()
    if samples.ndim != 4 or samples.shape[1] != 1 or len(samples) < 2:
        raise ValueError(f"samples must be [n >= 2, 1, S, S], got {tuple(samples.shape)}")
    samples = samples.detach().float().cpu().clamp(-1, 1)
    dev = get_device(device)
    if segmenter is None:
        segmenter = load_segmenter(segmenter_path, device=dev)
    ref = real_reference(segmenter, samples.shape[-1], data_root=data_root,
                         train_splits=train_splits, batch_size=batch_size, progress=progress)
    t_ref = time.perf_counter() - t0  # ~0 when cached
    out_s = segment(segmenter, samples, batch_size=batch_size)
    dice = dict(zip(("background", "csf", "grey_matter", "white_matter"), ref.dice,
                    strict=True))
    metrics = {"segmenter_dice": _entry(
        float(np.mean(ref.dice[1:])), None, "higher",
        f"segmenter Dice on {ref.held_out_split} (mean of CSF/grey/white): how far to trust the "
        "segmenter-based metrics", per_class=dice)}
    metrics |= _feature_metrics(out_s["features"], ref, seed=seed, n_subsets=n_subsets)
    metrics |= _distribution_metrics(samples, out_s, ref, seed=seed, n_subsets=n_subsets)
    metrics |= _memorization(samples, out_s["features"], ref)
    if texture or (texture is None and samples.shape[-1] >= TEXTURE_MIN_SIZE):
        metrics |= _texture_metrics(samples, ref, seed=seed)
    metrics["inception_fid"] = _inception(samples, ref, inception_weights, dev, seed)
    report = EvaluationReport(
        meta={"n": len(samples), "image_size": samples.shape[-1], "n_train": len(ref.train),
              "n_held_out": len(ref.held_out), "train_splits": list(ref.train_splits),
              "held_out": ref.held_out_split, "seed": seed, "n_subsets": n_subsets, **(meta or {}),
              "reference_seconds": round(t_ref, 2),
              "metric_seconds": round(time.perf_counter() - t0 - t_ref, 2)},
        metrics=metrics,
        verdict=(f"pixels: {metrics['memorization_pixel']['verdict']}; segmenter "
                 f"features: {metrics['memorization_features']['verdict']}"),
        samples=samples, sample_masks=out_s["masks"], reference=ref)
    if out is not None:
        write_report(report, out)
    return report


def evaluate(checkpoint=None, *, n: int = 500, sampler: str = "ddim", steps: int | None = 50,
             seed: int = 0, out="outputs/eval", data_root=None, segmenter_path=None,
             segmenter=None, inception_weights=None, batch_size: int = 64, device=None,
             progress: bool = True, n_subsets: int = 200, condition=None,
             guidance_scale: float | None = None, guidance_rescale: float = 0.0,
             slice_regressor=None, name: str | None = None) -> EvaluationReport:
    """Generate ``n`` samples from ``checkpoint`` (a path, a loaded pipeline, or None for the
    shipped demo model) with ``sampler``/``steps`` from ``seed`` and score them
    (:func:`evaluate_samples`) with the checkpoint's own ``train_splits`` (a pipeline
    without them: the seed's train + test, which holds out validate); writes ``report.json``
    and the figures to ``out`` (None: nothing written).

    Conditional models: ``condition`` (a Condition, or ``"validate"``) and ``guidance_scale``
    / ``guidance_rescale`` as in :func:`generate_samples`; the meta records them
    (``condition``: ``"validate"``, ``"given"`` or None) and the metrics gain ``mask_dice`` and
    ``slice_mae`` with their floors (:func:`~oasis_lib.evaluation.conditions.
    condition_metrics`; ``slice_regressor``: a loaded model or a path, None: the shipped one,
    skipped when it is missing). ``name``: what the meta calls the checkpoint (default: the
    path, the shipped checkpoint's name, or ``"(pipeline)"``)."""
    from ..diffusion.pipeline import DiffusionPipeline
    from ..paths import DEMO_CHECKPOINT
    from ..pretrained import load_model

    steps = None if get_sampler(sampler).needs_every_step else steps  # ddpm: all T, as reported
    pipe = checkpoint if isinstance(checkpoint, DiffusionPipeline) else load_model(
        checkpoint, device=device)
    name = str(name) if name is not None else (
        "(pipeline)" if isinstance(checkpoint, DiffusionPipeline)
        else str(checkpoint or DEMO_CHECKPOINT.name))
    cond, chosen = resolve_condition(pipe, condition, n, data_root=data_root, seed=seed)
    samples, spi = generate_samples(pipe, n, sampler=sampler, steps=steps, seed=seed,
                                    batch_size=batch_size, progress=progress, condition=cond,
                                    guidance_scale=guidance_scale,
                                    guidance_rescale=guidance_rescale)
    meta = {"checkpoint": name, "sampler": sampler, "steps": steps, "device": pipe.device.type,
            "seconds_per_image": round(spi, 4), "sampling_seconds": round(spi * n, 1)}
    if pipe.conditional or cond is not None:
        meta |= {"model_condition": pipe.condition,
                 "condition": None if cond is None else (
                     "validate" if chosen is not None else "given"),
                 "guidance_scale": 1.0 if guidance_scale is None else float(guidance_scale),
                 "guidance_rescale": float(guidance_rescale)}
        if chosen is not None:
            meta["validate_indices"] = chosen.indices.tolist()
    conditioned = cond is not None and cond.batch_size is not None
    train_splits = getattr(pipe.config, "train_splits", SEED_TRAIN_SPLITS)
    with kept_samples(samples, out):  # a failure below keeps the samples (and says where)
        return _score(samples, pipe, cond, chosen, meta, conditioned, train_splits, out=out,
                      data_root=data_root, segmenter=segmenter, segmenter_path=segmenter_path,
                      inception_weights=inception_weights, batch_size=batch_size, seed=seed,
                      n_subsets=n_subsets, progress=progress, slice_regressor=slice_regressor)


def _score(samples, pipe, cond, chosen, meta, conditioned, train_splits, *, out, data_root,
           segmenter, segmenter_path, inception_weights, batch_size, seed, n_subsets,
           progress, slice_regressor) -> EvaluationReport:
    """The scoring half of :func:`evaluate`."""
    report = evaluate_samples(samples, data_root=data_root, segmenter=segmenter,
                              train_splits=train_splits, segmenter_path=segmenter_path,
                              out=None if conditioned else out,
                              inception_weights=inception_weights, batch_size=batch_size,
                              device=pipe.device, seed=seed, n_subsets=n_subsets, meta=meta,
                              progress=progress)
    if conditioned:
        report.metrics |= condition_metrics(
            samples, cond, segmenter=report.reference.segmenter,
            slice_model=_slice_model(slice_regressor, cond, pipe.device), real=chosen,
            reference=report.reference, data_root=data_root, batch_size=batch_size)
        if out is not None:
            write_report(report, out)
    return report


def _slice_model(slice_regressor, cond, device):
    """The slice regressor for ``cond`` (None when it has no slice or none is available)."""
    from .slice_level import SLICE_REGRESSOR_CHECKPOINT, load_slice_regressor

    if cond.slice_index is None:
        return None
    if slice_regressor is None or isinstance(slice_regressor, str | os.PathLike):
        if slice_regressor is None and not SLICE_REGRESSOR_CHECKPOINT.is_file():
            return None
        return load_slice_regressor(slice_regressor, device=device)
    return slice_regressor


# --------------------------------------------------------------------------- output
def write_report(report: EvaluationReport, out) -> Path:
    """``report.json`` and the four figures (:data:`FIGURES`) in ``out``."""
    from ..viz.evaluation import plot_fractions, plot_histograms, plot_memorization
    from ..viz.plotting import image_grid

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    samples = report.samples
    image_grid(samples[:64], nrow=8, title=f"{len(samples)} samples (first 64)",
               save_to=out / "samples.png")
    nn = report.nearest_neighbours("pixel")
    plot_memorization(samples, nn["references"], nn["distance"], nn["index"],
                      float(nn["held_out_distance"].min()),
                      held_out=report.reference.held_out_split,
                      save_to=out / "memorization_gallery.png")
    plot_fractions(report.fractions, save_to=out / "tissue_fractions.png")
    plot_histograms(report.intensities, "in-brain intensity",
                    save_to=out / "intensity_histogram.png")
    return report.to_json(out / REPORT_NAME)
