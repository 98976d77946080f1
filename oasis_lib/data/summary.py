"""A summary of a data root: cases and slices per split, image size, tissue fractions."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .checks import check_every_file
from .layout import CLASS_NAMES, SPLITS, image_dir, mask_dir
from .oasis import _DECODE_THREADS, OASISDataset
from .roots import resolve_data_root


def tissue_fractions(masks) -> torch.Tensor:
    """Fraction of pixels per class (background, CSF, grey, white) of class masks (0..3)."""
    flat = torch.as_tensor(masks).reshape(-1).long()
    if flat.numel() == 0 or flat.min() < 0 or flat.max() > 3:
        raise ValueError("masks must be a non-empty tensor of classes 0..3")
    return torch.bincount(flat, minlength=4).double().div(flat.numel()).float()


class DataSummary(dict):
    """A dict (root, splits, image_size, class_fractions) that prints as a short text table."""

    def __str__(self) -> str:
        return format_summary(self)


def summarize(root=None) -> DataSummary:
    """Cases and slices per split, image size and class fractions (over all masks, if any).

    Every image and mask it counts is decoded and checked as strictly as the loader checks
    it (:func:`oasis_lib.data.checks.check_every_file`): a file the loader would refuse fails
    here, with its name."""
    root = resolve_data_root(root)
    summary = DataSummary(root=str(root), splits={}, image_size=None, class_fractions=None)
    counts = np.zeros(4, dtype=np.int64)
    for split in SPLITS:
        if not image_dir(root, split).is_dir():
            continue
        labels = mask_dir(root, split) if mask_dir(root, split).is_dir() else None
        ds = OASISDataset(image_dir(root, split), labels, cache=False)
        summary["splits"][split] = {"cases": len(ds.case_ids), "slices": len(ds),
                                    "case_range": (ds.case_ids[0], ds.case_ids[-1]),
                                    "masks": labels is not None}
        size = tuple(int(v) for v in ds.native_size)
        if summary["image_size"] not in (None, size):
            warnings.warn(f"{image_dir(root, split)} holds {size[0]}x{size[1]} images but an "
                          "earlier split {0}x{1}; the loader resizes each split to the run's "
                          "image_size".format(*summary["image_size"]), UserWarning, stacklevel=2)
        summary["image_size"] = summary["image_size"] or size
        counts += check_every_file(ds, threads=_DECODE_THREADS)
    if counts.sum() > 0:
        fractions = counts / counts.sum()
        summary["class_fractions"] = {
            n: round(float(f), 4) for n, f in zip(CLASS_NAMES, fractions, strict=True)}
    return summary


def format_summary(summary: dict) -> str:
    """Human-readable text of :func:`summarize`'s result."""
    lines = [f"data root: {summary['root']}"]
    for split, s in summary["splits"].items():
        first, last = s["case_range"]
        lines.append(f"  {split:<8} {s['cases']:>4} cases {s['slices']:>6} slices "
                     f"(case {first:03d}..{last:03d})"
                     + ("" if s.get("masks", True) else f"; no mask folder {mask_dir('', split)}"))
    if summary["image_size"]:
        lines.append("image size: {}x{}".format(*summary["image_size"]))
    if summary["class_fractions"]:
        lines.append("class fractions: " + ", ".join(
            f"{n} {f:.3f}" for n, f in summary["class_fractions"].items()))
    return "\n".join(lines)
