"""Keep what an evaluation computed when a later step fails.

Sampling is the expensive part of :func:`oasis_lib.evaluation.report.evaluate` (hours at the
default n = 500 on a CPU); scoring reads data, the segmenter and the slice regressor, any of
which can fail. :func:`kept_samples` saves the samples to ``OUT/samples.pt`` before scoring
and, if scoring fails, adds to the error where they are and how to score them without sampling
again; when scoring succeeds the file is removed (the report and figures hold the results).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from torch import Tensor

SAMPLES_NAME = "samples.pt"


@contextlib.contextmanager
def kept_samples(samples: Tensor, out) -> Iterator[Path | None]:
    """Within this block the samples are saved at ``out/samples.pt`` (``out`` None: nothing
    is written); an exception leaving it names that file (same exception type for the
    library's ValueError and RuntimeError families, a note on the others)."""
    if out is None:
        yield None
        return
    from ..checkpoint import atomic_save

    path = atomic_save(samples.detach().cpu(), Path(out) / SAMPLES_NAME)
    try:
        yield path
    except Exception as err:
        note = (f"(the {len(samples)} samples were saved to {path} before this step failed: "
                "score them with evaluate_samples(torch.load(path)) instead of sampling again)")
        if isinstance(err, ValueError | RuntimeError) and type(err).__init__ in (
                ValueError.__init__, RuntimeError.__init__):
            raise type(err)(f"{err} {note}") from err
        err.add_note(note)
        raise
    path.unlink(missing_ok=True)
