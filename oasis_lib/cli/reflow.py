"""The ``reflow-pairs`` command: a rectified-flow teacher's (noise, sample) pairs for one reflow
round (Liu et al. 2022 sec. 3; :mod:`oasis_lib.training.reflow`), then ``train --reflow-pairs
DIR --init-from TEACHER`` trains on them."""

from __future__ import annotations

import time
from pathlib import Path

from ..diffusion.sampling import SAMPLERS
from .errors import UsageError
from .validate import check_input_checkpoint, check_positive_int

__all__ = ["add_reflow_parser", "check_reflow_args", "check_reflow_train", "run_reflow_pairs"]


def add_reflow_parser(sub) -> None:
    """The ``reflow-pairs`` subcommand."""
    r = sub.add_parser("reflow-pairs",
                       help="write a rectified-flow teacher's (noise, sample) pairs for reflow "
                            "(resumable: a re-run skips the finished shards)")
    r.add_argument("--checkpoint", required=True, metavar="FILE",
                   help="the teacher: a latent rectified-flow model (.safetensors or .pt)")
    r.add_argument("--n", type=int, required=True, help="number of pairs")
    r.add_argument("--steps", type=int, default=20,
                   help="the teacher's sampler steps (default 20)")
    r.add_argument("--sampler", default=None, choices=SAMPLERS,
                   help="default: the file's default sampler, else flow-euler")
    r.add_argument("--out", required=True, metavar="DIR",
                   help="the pair directory (shards pairs_00000.safetensors, ... and pairs.json)")
    r.add_argument("--shard-size", type=int, default=64,
                   help="pairs per shard (default 64; a stop loses at most one shard)")
    r.add_argument("--seed", type=int, default=0, help="noise seed (shard k: seed, k)")
    r.add_argument("--device", default=None)
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=run_reflow_pairs)


def check_reflow_args(args) -> None:
    """Before the teacher is loaded: an existing model file, positive counts, a folder out."""
    check_input_checkpoint(args.checkpoint)
    for flag, value in (("--n", args.n), ("--steps", args.steps),
                        ("--shard-size", args.shard_size)):
        check_positive_int(value, flag=flag)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give the folder to write the pairs in")


def check_reflow_train(cfg) -> None:
    """``train --reflow-pairs DIR``: DIR holds a pair manifest (before any compute)."""
    from ..training.reflow import MANIFEST_NAME

    folder = getattr(cfg, "reflow_pairs", None)
    if folder is not None and not (Path(folder) / MANIFEST_NAME).is_file():
        raise UsageError(f"--reflow-pairs {folder}: no reflow pairs there ({MANIFEST_NAME} "
                         "missing); write them first: python -m oasis_lib reflow-pairs "
                         f"--checkpoint TEACHER.safetensors --n N --out {folder}")


def run_reflow_pairs(args) -> int:
    from ..pretrained import load_model
    from ..training.reflow import generate_pairs, read_manifest, shard_name

    pipe = load_model(args.checkpoint, device=args.device)
    t0 = time.perf_counter()
    out = generate_pairs(pipe, args.out, args.n, steps=args.steps, sampler=args.sampler,
                         shard_size=args.shard_size, seed=args.seed,
                         progress=not args.no_progress)
    m = read_manifest(out)
    print(f"wrote {m['n']} reflow pairs of {args.checkpoint} ({m['sampler']}, {m['steps']} "
          f"steps, seed {m['seed']}) to {out}: {m['shards']} shards "
          f"{shard_name(0)} ... {shard_name(m['shards'] - 1)} "
          f"({time.perf_counter() - t0:.1f} s on {pipe.device.type})")
    print(f"train on them: python -m oasis_lib train --reflow-pairs {out} --init-from "
          f"{args.checkpoint} --noise-process rectified-flow --prediction velocity, with the "
          "teacher's --preset and --image-size")
    return 0
