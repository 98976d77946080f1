"""What an evaluation report is and how it reads: :class:`EvaluationReport` and its text.

:func:`~oasis_lib.evaluation.report.evaluate_samples` builds an :class:`EvaluationReport`; it
keeps the arrays behind the numbers (the samples' masks, tissue fractions, in-brain
intensities, nearest training slices) for figures and notebooks, and serialises to the JSON of
``report.json`` (:meth:`EvaluationReport.to_json`). Its text: :func:`format_report` (the CLI's
table and verdict), :func:`metrics_table` (the notebooks' rounded table), :func:`held_out_note`
(which splits were trained on and held out). The figures are drawn by
:func:`~oasis_lib.evaluation.report.write_report`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ..data.layout import SEED_TRAIN_SPLITS
from .conditions import condition_lines
from .reference import RealReference

REPORT_NAME = "report.json"


@dataclass
class EvaluationReport:
    """What :func:`evaluate_samples` found, with the arrays behind every number.

    ``report["meta"]``, ``report["metrics"]`` and ``report["verdict"]`` read the JSON view
    (:meth:`to_dict`), so the report can be used like the dict that ``report.json`` holds.
    """

    meta: dict
    metrics: dict  # name -> entry (value, floor, subsample_range, direction, explanation, ...)
    verdict: str
    samples: Tensor  # float32 [n, 1, S, S] in [-1, 1], CPU
    sample_masks: Tensor  # long [n, S, S]: the segmenter's masks of the samples
    reference: RealReference = field(repr=False)

    # ---- arrays kept for figures (the JSON drops them)
    @property
    def fractions(self) -> dict[str, np.ndarray]:
        """Per-slice CSF/grey/white fractions [N, 3] of ``samples``, ``train`` and the
        held-out split (keyed by its name, ``meta["held_out"]``)."""
        return self.metrics["tissue_fractions"]["_fractions"]

    @property
    def intensities(self) -> dict[str, np.ndarray]:
        """In-brain intensities of ``samples``, ``train`` and the held-out split (keyed by its
        name), seeded subsets of at most a million values each."""
        return self.metrics["intensity_histogram"]["_intensities"]

    def nearest_neighbours(self, space: str = "pixel") -> dict[str, Any]:
        """Each sample's nearest training slice: ``distance`` [n], ``index`` [n] into
        ``references`` (pixel space: train slices and their mirror images), and the held-out
        slices' own nearest distances ``held_out_distance``."""
        d_s, i_s, d_h, refs = self.metrics[f"memorization_{space}"]["_nn"]
        return {"distance": d_s, "index": i_s, "held_out_distance": d_h, "references": refs}

    # ---- views
    def to_dict(self) -> dict:
        """The JSON-ready report (numbers only; arrays dropped)."""
        return _clean({"meta": self.meta, "metrics": self.metrics, "verdict": self.verdict})

    def __getitem__(self, key: str):
        return self.to_dict()[key]

    def to_json(self, path) -> Path:
        """Write :meth:`to_dict` to ``path`` atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, path)
        return path

    def table(self, *, digits: int = 3) -> str:
        """The metrics as a table (value, reference, subsample range at half size, direction),
        rounded to ``digits`` significant digits so a notebook's table reproduces across CPUs."""
        return metrics_table(self.to_dict(), digits=digits)

    def __str__(self) -> str:
        return format_report(self.to_dict())


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
    """A compact table: metric, value, reference (real vs real), direction; then the verdict."""
    def num(v):
        return "-" if v is None else f"{v:.4g}"

    rows = [f"{'metric':<22}{'value':>11}{'floor':>11}  direction"]
    for name, e in report["metrics"].items():
        rows.append(f"{name:<22}{num(e['value']):>11}{num(e['floor']):>11}  {e['direction']}")
    for space in ("pixel", "features"):
        verdict = report["metrics"][f"memorization_{space}"]["verdict"]
        rows.append(f"memorization ({space}): {verdict}")
    rows += condition_lines(report)
    rows.append(held_out_note(report["meta"]))
    return "\n".join(rows)


def held_out_note(meta: dict) -> str:
    """One line naming the train and held-out splits of a report, and whether the held-out
    numbers are untouched by training and selection."""
    trained = " + ".join(meta.get("train_splits") or SEED_TRAIN_SPLITS)
    held = meta["held_out"]
    if held == "test":
        return (f"trained on {trained}; held out: test (never used for training or for "
                "choosing the checkpoint)")
    return (f"trained on {trained}; held out: {held}, which also chose the checkpoint (no split "
            "is untouched; retrain with --train-splits train to keep test for final numbers)")


def metrics_table(report: dict, *, digits: int = 3) -> str:
    """The report's metrics as a table: metric, value, floor (the real-vs-real reference),
    subsample range (2.5-97.5 percentiles over random subsets of k samples, k = half the
    compared set, drawn without replacement: a spread at size k, not a confidence interval),
    direction; numbers rounded to ``digits`` significant digits.
    :func:`format_report` is the CLI's longer version."""
    def num(v):
        return "-" if v is None else f"{v:.{digits}g}"

    rows = [f"{'metric':<22}{'value':>10}{'floor':>10}  {'subsample range':<26}direction"]
    for name, e in report["metrics"].items():
        iv = e.get("subsample_range")
        span = "-" if iv is None else f"[{num(iv[0])}, {num(iv[1])}] k={e['subsample_size']}"
        # a space between the columns: a long number (e.g. a negative KID) never runs on
        rows.append(f"{name:<22}{num(e['value']):>9} {num(e['floor']):>9}  {span:<26}"
                    f"{e['direction']}")
    return "\n".join(rows)
