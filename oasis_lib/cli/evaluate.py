"""The ``evaluate`` command: sample from a checkpoint and score the samples offline
(:func:`oasis_lib.evaluation.report.evaluate`), conditional models included (issue 12).

A conditional model is evaluated with ``--condition validate``: ``n`` validate slices spread
evenly over the split (fixed by ``--seed``) lend their masks and slice levels to the samples,
and the report adds mask faithfulness (segmenter Dice against the conditioning masks) and slice
MAE (the slice regressor's error against the requested level), each with its real floor.
``--guidance S`` / ``--guidance-rescale PHI`` mean what they mean for ``sample``.

A conditional model given no ``--condition`` is **refused**, as ``sample`` refuses it: its null
condition is only the branch trained on the ``p_uncond`` share of steps for guidance, so
scoring it silently would report the numbers of another model under this one's name. The way
to those numbers is explicit: ``--guidance 0`` (the unconditional samples; the report records
``condition: null``, ``guidance_scale: 0``). ``--condition validate --guidance 0`` scores the
unconditional samples against the validate conditions: the faithfulness a model would get by
ignoring its condition.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..diffusion.sampling import SAMPLERS
from ..evaluation.conditions import CONDITION_SOURCES
from .conditional import add_guidance_flags, check_guidance_flags
from .errors import UsageError, usage_phase
from .validate import (
    check_input_checkpoint,
    check_positive_int,
    check_sampler_flags,
    check_sampling_for_model,
    check_writable_parent,
)

__all__ = ["add_evaluate_parser", "check_evaluate_args", "check_evaluation_inputs",
           "evaluation_condition", "run_evaluate"]


def add_evaluate_parser(sub) -> None:
    """The ``evaluate`` subcommand."""
    v = sub.add_parser("evaluate", help="sample from a checkpoint and score the samples offline "
                                        "(segmenter Fréchet/KID, tissue, diversity, copying; "
                                        "mask and slice faithfulness when conditioned)")
    v.add_argument("--checkpoint", default=None,
                   help="a .pt or .safetensors file (default: the shipped demo checkpoint)")
    v.add_argument("--n", type=int, default=500, help="number of samples (default 500)")
    v.add_argument("--sampler", default=None, choices=SAMPLERS,
                   help="default: the file's default sampler if it carries one, else the "
                        "model's (ddim for VP diffusion, flow-euler for rectified flow)")
    v.add_argument("--steps", type=int, default=None,
                   help="network calls (default: the file's default steps with its sampler; "
                        "else all T for ddpm, 50 for the VP samplers, 20 for the flow ones)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--condition", default=None, choices=CONDITION_SOURCES,
                   help="conditional models: condition the samples on the masks and slice "
                        "levels of n validate slices spread over the split (fixed by --seed), "
                        "and score mask and slice faithfulness; required for a conditional "
                        "model unless --guidance 0")
    add_guidance_flags(v)
    v.add_argument("--data", "--data-root", dest="data", default=None,
                   help="OASIS root (default $OASIS_DATA or demo)")
    v.add_argument("--segmenter", default=None,
                   help="segmenter weights (default: the shipped segmenter_demo64)")
    v.add_argument("--slice-regressor", default=None, metavar="FILE",
                   help="slice regressor weights for the slice MAE of a slice-conditioned "
                        "model (default: the shipped slice_regressor64; skipped if absent)")
    v.add_argument("--inception-weights", default=None,
                   help="a local torchvision Inception-v3 state dict for the standard FID "
                        "(optional; nothing is downloaded)")
    v.add_argument("--batch-size", type=int, default=64)
    v.add_argument("--n-subsets", type=int, default=200, help="half-size subsets per range")
    v.add_argument("--device", default=None, help="auto | cpu | cuda | mps")
    v.add_argument("--out", default="outputs/eval", help="folder for report.json and figures")
    v.add_argument("--no-progress", action="store_true")
    v.set_defaults(func=run_evaluate)


def check_evaluate_args(args) -> None:
    """``evaluate`` before loading anything: numbers, files, the output folder."""
    check_input_checkpoint(args.checkpoint)
    check_positive_int(args.n, flag="--n", minimum=2)
    check_positive_int(args.batch_size, flag="--batch-size")
    check_positive_int(args.n_subsets, flag="--n-subsets", minimum=2)
    check_sampler_flags(sampler=args.sampler or "ddim", steps=args.steps, eta=None)
    check_guidance_flags(args)
    for flag, path in (("--segmenter", args.segmenter),
                       ("--slice-regressor", args.slice_regressor),
                       ("--inception-weights", args.inception_weights)):
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{flag} {path} does not exist")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; evaluate writes report.json and figures "
                         "into a folder")
    check_writable_parent(out / "report.json", flag="--out")


def evaluation_condition(args, pipe) -> tuple[str | None, float | None]:
    """``(condition, guidance_scale)`` for :func:`~oasis_lib.evaluation.report.evaluate`, or
    :class:`UsageError`: a condition or guidance for an unconditional model; a conditional
    model without ``--condition`` (unless ``--guidance 0``); guidance without a condition."""
    source = args.checkpoint or "the shipped demo checkpoint"
    rescale = bool(args.guidance_rescale)
    if not pipe.conditional:
        extra = [f for f, given in (("--condition", args.condition is not None),
                                    ("--guidance", args.guidance not in (None, 1.0)),
                                    ("--guidance-rescale", rescale)) if given]
        if extra:
            raise UsageError(f"{' and '.join(extra)} given, but {source} is an unconditional "
                             f"model; drop {'it' if len(extra) == 1 else 'them'}, or pass a "
                             "checkpoint trained with --condition")
        return None, None
    if args.condition is None:
        if args.guidance == 0 and not rescale:
            return None, 0.0  # the null condition: the model's unconditional samples
        if args.guidance not in (None, 1.0) or rescale:
            flag = "--guidance-rescale" if args.guidance in (None, 0.0, 1.0) else "--guidance"
            raise UsageError(f"{flag} needs a condition to guide towards: add --condition "
                             "validate (or --guidance 0 alone for unconditional samples)")
        raise UsageError(f"{source} is a conditional model ({pipe.condition}): add --condition "
                         "validate to score samples conditioned on validate masks and slice "
                         "levels, or --guidance 0 to score its unconditional samples")
    return args.condition, args.guidance


def check_evaluation_inputs(args, pipe, condition):
    """Every input the scoring reads, before any sampling: the data root and each
    split it needs (the model's train splits, its held-out split, validate for
    ``--condition validate``), the segmenter and, for a slice-conditioned model, the slice
    regressor, loaded (so a wrong kind of file is named now). Returns ``(segmenter, slice
    regressor or None)``."""
    from ..data import resolve_data_root
    from ..data.layout import SEED_TRAIN_SPLITS, DataError, held_out_split, image_dir, mask_dir
    from ..evaluation.segmenter import load_segmenter
    from ..evaluation.slice_level import SLICE_REGRESSOR_CHECKPOINT, load_slice_regressor

    root = resolve_data_root(args.data)
    trained = tuple(getattr(pipe.config, "train_splits", None) or SEED_TRAIN_SPLITS)
    held = held_out_split(trained)
    why = {**{s: "the model trained on it" for s in trained}, held: "the held-out split",
           **({"validate": "--condition validate reads its masks"} if condition else {})}
    for split, reason in why.items():
        for folder in (image_dir(root, split), mask_dir(root, split)):
            if not folder.is_dir():
                raise DataError(f"--data {root} has no {folder.name} folder; evaluate reads the "
                                f"{split} split ({reason}): give --data an OASIS root with "
                                f"the {', '.join(why)} splits")
    segmenter = load_segmenter(args.segmenter, device=pipe.device)
    regressor = None
    if condition is not None and "slice" in (pipe.condition or "") and (
            args.slice_regressor is not None or SLICE_REGRESSOR_CHECKPOINT.is_file()):
        regressor = load_slice_regressor(args.slice_regressor, device=pipe.device)
    return segmenter, regressor


def run_evaluate(args) -> int:
    from ..evaluation.conditions import resolve_condition
    from ..evaluation.report import evaluate, format_report
    from ..paths import DEMO_CHECKPOINT
    from ..pretrained import load_model

    t0 = time.perf_counter()
    pipe = load_model(args.checkpoint, device=args.device)
    choice = check_sampling_for_model(args, pipe)  # the flags, else the file's defaults
    print(f"sampling with {choice.describe(pipe.process)}")
    condition, scale = evaluation_condition(args, pipe)
    segmenter, regressor = check_evaluation_inputs(args, pipe, condition)
    if condition is not None:  # --n against the validate split, before any sampling
        with usage_phase():
            resolve_condition(pipe, condition, args.n, data_root=args.data, seed=args.seed)
    report = evaluate(pipe, n=args.n, sampler=args.sampler, steps=args.steps,
                      seed=args.seed, out=args.out, data_root=args.data,
                      segmenter=segmenter, inception_weights=args.inception_weights,
                      batch_size=args.batch_size, device=args.device,
                      progress=not args.no_progress, n_subsets=args.n_subsets,
                      condition=condition, guidance_scale=scale,
                      guidance_rescale=args.guidance_rescale,
                      slice_regressor=regressor or args.slice_regressor,
                      name=args.checkpoint or DEMO_CHECKPOINT.name)
    meta = report["meta"]
    print(format_report(report))
    print(f"{meta['n']} samples ({meta['sampler']}, {meta['seconds_per_image']:.3f} s/image), "
          f"real slices {meta['reference_seconds']:.1f} s, metrics {meta['metric_seconds']:.1f} s, "
          f"total {time.perf_counter() - t0:.0f} s; "
          f"wrote {Path(args.out) / 'report.json'} and figures")
    return 0
