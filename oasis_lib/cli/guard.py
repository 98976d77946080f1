"""One guard for every command's files: no output may replace one of its inputs.

Each command's input paths (checkpoint, mask, image, region, autoencoder, segmenter, slice
regressor, init-from, data root ...) are listed once, in :data:`INPUTS`, and what it writes in
:func:`outputs`: files, or names inside a folder. :func:`check_inputs_outputs` runs before
anything is loaded or computed (:func:`oasis_lib.cli.checks.check_args`) and refuses, with
exit code 2 and one line naming both flags and the path,

* an output that is an input file: the same path after ``resolve()`` (symlinked folders
  included), or the same file on disk (``os.path.samefile``: a symlink or a hard link to it);
* a folder output that would write a name an input file has there (``sample --individual``'s
  ``sample_000.png``, ``evaluate``'s ``report.json`` ...);
* an output inside a data root's image or mask folders (``keras_png_slices_*``), where the
  next run would read it as a slice, or over an existing file of a data root.

:func:`check_no_replace` is the rule for commands that write one model file (``export``,
``train-segmenter``, ``train-slice-regressor``): an existing file is replaced only with
``--overwrite``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from .errors import UsageError

__all__ = ["INPUTS", "check_inputs_outputs", "check_no_replace", "input_paths", "outputs"]

#: command -> (flag, argparse dest) of every path it reads. Data roots are folders.
INPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "sample": (("--checkpoint", "checkpoint"), ("--mask", "mask"),
               ("--autoencoder", "autoencoder")),
    "inpaint": (("--checkpoint", "checkpoint"), ("--image", "image"), ("--region", "region"),
                ("--mask", "mask"), ("--autoencoder", "autoencoder")),
    "export": (("--checkpoint", "checkpoint"), ("--autoencoder", "autoencoder")),
    "evaluate": (("--checkpoint", "checkpoint"), ("--segmenter", "segmenter"),
                 ("--slice-regressor", "slice_regressor"),
                 ("--inception-weights", "inception_weights"), ("--data", "data"),
                 ("--autoencoder", "autoencoder")),
    "train": (("--data-root", "data_root"), ("--autoencoder", "autoencoder"),
              ("--init-from", "init_from")),
    "train-autoencoder": (("--data-root", "data_root"), ("--init-from", "init_from")),
    "train-segmenter": (("--data", "data"),),
    "train-slice-regressor": (("--data", "data"),),
    "summary": (("--data-root", "data_root"),),
    "reflow-pairs": (("--checkpoint", "checkpoint"),),
}
DATA_FLAGS = ("--data", "--data-root")
RUN_FILES = re.compile(r"(last|best)\.pt|metrics\.jsonl|loss_curve\.png")
EVALUATE_FILES = re.compile(r"report\.json|samples\.(png|pt)|memorization_gallery\.png|"
                            r"tissue_fractions\.png|intensity_histogram\.png")


def input_paths(args) -> list[tuple[str, Path]]:
    """``(flag, path)`` of every input the command was given (the default data root too)."""
    found = []
    for flag, dest in INPUTS.get(getattr(args, "command", None), ()):
        value = getattr(args, dest, None)
        if value is None and flag in DATA_FLAGS:
            from ..data.layout import default_demo_root

            value = os.environ.get("OASIS_DATA") or default_demo_root()
        if value is not None:
            found.append((flag, Path(value).expanduser()))
    return found


def outputs(args) -> list[tuple[str, Path, re.Pattern | None]]:
    """``(flag, path, names)``: a file (``names`` None), or a folder and the pattern of the
    file names the command writes into it."""
    command, out = getattr(args, "command", None), getattr(args, "out", None)
    if out is None:
        return []
    out = Path(out).expanduser()
    if command in ("sample", "inpaint", "export", "train-segmenter", "train-slice-regressor"):
        found = [("--out", out, None)]
        if command == "sample" and args.individual:
            found.append(("--individual", out.with_suffix(""), re.compile(r"sample_\d+\.png")))
        return found
    if command == "evaluate":
        return [("--out", out, EVALUATE_FILES)]
    if command in ("train", "train-autoencoder") and not args.resume:
        return [("--out", out, RUN_FILES)]
    if command == "summary":
        return [("--out", out, re.compile(r"slices_with_masks\.png"))]
    return []


def _same(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _in_data(out: Path, names, root: Path) -> bool:
    """Would ``out`` write into a split folder of the data root ``root``, or over a file in
    it?"""
    target, root = (out if names is None else out / "x").resolve(), root.resolve()
    if root not in target.parents:
        return False
    rel = target.relative_to(root).parts
    return (len(rel) > 1 and rel[0].startswith("keras_png_slices_")) or (
        names is None and out.is_file())


def _collisions(args) -> Iterator[str]:
    ins = input_paths(args)
    for out_flag, out, names in outputs(args):
        for in_flag, source in ins:
            if in_flag in DATA_FLAGS:  # a folder of slices
                if _in_data(out, names, source):
                    yield (f"{out_flag} {out} is inside the data root ({in_flag} {source}); "
                           "refusing to write into it (the next run would read it as data): "
                           f"choose another {out_flag}")
                continue
            if names is None:
                hit = _same(out, source)
            else:
                hit = bool(names.fullmatch(source.name)) and _same(out, source.parent)
            if hit:
                what = f"{out}" if names is None else f"{out / source.name}"
                yield (f"{out_flag} {what} is the input file itself ({in_flag} {source}); "
                       f"refusing to overwrite it: choose another {out_flag}")


def check_inputs_outputs(args) -> None:
    """Refuse (:class:`UsageError`) an output that would replace one of the command's
    inputs (module docstring); the first collision is named."""
    for message in _collisions(args):
        raise UsageError(message)


def check_no_replace(path: str | os.PathLike, *, overwrite: bool, flag: str = "--out") -> None:
    """An existing file at ``path`` is replaced only with ``--overwrite``."""
    path = Path(path)
    if path.is_file() and not overwrite:
        raise UsageError(f"{flag} {path} already exists ({path.stat().st_size:,} bytes); "
                         f"refusing to replace it: pass --overwrite to replace it, or choose "
                         f"another {flag}")
