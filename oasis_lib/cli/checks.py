"""Each command's checks of its flags, before anything is loaded or computed.

:func:`check_args` finds the checks of ``args.command`` (the ``sample``, ``train-segmenter``,
``make-demo`` and ``summary`` checks are here; the other commands' live with them:
:mod:`.conditional`, :mod:`.evaluate`, :mod:`.slice_regressor`; ``train``'s in :mod:`.train`).
They are built from the shared checks of :mod:`.validate`; each raises
:class:`~oasis_lib.cli.errors.UsageError` (exit code 2) naming the flag, the value and what
to do.
"""

from __future__ import annotations

from pathlib import Path

from .conditional import check_condition_flags, check_inpaint_args
from .errors import UsageError
from .evaluate import check_evaluate_args
from .guard import check_inputs_outputs, check_no_replace
from .reflow import check_reflow_args
from .slice_regressor import check_slice_regressor_args
from .validate import (
    IMAGE_SUFFIXES,
    check_input_checkpoint,
    check_memory,
    check_output_file,
    check_positive_float,
    check_positive_int,
    check_sampler_flags,
    check_sampling_for_model,
    check_writable_parent,
)


def _eta_given(args) -> float | None:
    eta = getattr(args, "eta", None)
    return None if eta in (None, 0.0) else eta


def check_sample_args(args, pipe=None):
    """``sample``: before loading (``pipe`` None), then against the loaded pipeline (the
    sampler and steps resolved with the file's defaults: the returned ``SamplingChoice``)."""
    if pipe is None:
        check_input_checkpoint(args.checkpoint)
        check_positive_int(args.n, flag="--n")
        check_positive_int(args.nrow, flag="--nrow")
        out = check_output_file(args.out, flag="--out", suffixes=IMAGE_SUFFIXES,
                                inputs=(args.checkpoint,))
        folder = out.with_suffix("")
        if args.individual and folder.exists() and not folder.is_dir():
            raise UsageError(f"--individual writes into {folder}, which is a file; choose "
                             "another --out")
        check_sampler_flags(sampler=args.sampler or "ddim", steps=args.steps,
                            eta=_eta_given(args))
        check_condition_flags(args)
        return None
    choice = check_sampling_for_model(args, pipe)  # flags, else the file's defaults
    check_sampler_flags(sampler=args.sampler, steps=args.steps, eta=_eta_given(args),
                        timesteps=pipe.schedule.T)
    if pipe.device.type == "cpu":
        check_memory(pipe.model, shape=tuple(pipe.sample_shape), batch=args.n, training=False,
                     flag="--n")
    return choice


def check_segmenter_args(args) -> None:
    for flag, value in (("--size", args.size), ("--epochs", args.epochs),
                        ("--batch-size", args.batch_size)):
        check_positive_int(value, flag=flag)
    check_positive_float(args.lr, flag="--lr")
    check_output_file(args.out, flag="--out", suffixes=(".safetensors",))
    check_no_replace(args.out, overwrite=args.overwrite)


def check_make_demo_args(args) -> None:
    if any(n < 1 for n in args.cases):
        raise UsageError(f"--cases needs at least 1 case per split (train, validate, test), "
                         f"got {' '.join(str(n) for n in args.cases)}; training reads all three")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give the folder to build the dataset in")
    check_writable_parent(out / "x", flag="--out")


def check_summary_args(args) -> None:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; summary writes slices_with_masks.png into a "
                         "folder")
    check_writable_parent(out / "slices_with_masks.png", flag="--out")


def check_args(args) -> None:
    """The checks of ``args.command`` that need nothing loaded (train: :mod:`.train`)."""
    check_inputs_outputs(args)  # no output replaces an input, for every command (guard.py)

    checks = {"sample": check_sample_args, "evaluate": check_evaluate_args,
              "inpaint": check_inpaint_args,
              "train-segmenter": check_segmenter_args, "make-demo": check_make_demo_args,
              "train-slice-regressor": check_slice_regressor_args,
              "reflow-pairs": check_reflow_args,
              "summary": check_summary_args}
    check = checks.get(getattr(args, "command", None))
    if check is not None:
        check(args)
    device = getattr(args, "device", None)
    if device not in (None, "auto"):
        from ..device import get_device

        try:
            get_device(device)
        except ValueError as err:  # unknown, or not on this machine
            raise UsageError(f"--device {device}: {err}") from err
