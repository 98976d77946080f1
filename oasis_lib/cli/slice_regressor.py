"""The ``train-slice-regressor`` command: the slice-level faithfulness network (issue 12), as
``train-segmenter`` trains the tissue segmenter."""

from __future__ import annotations

from ..evaluation.slice_level import SLICE_HEADS
from .guard import check_no_replace
from .validate import (
    add_train_splits_flag,
    check_output_file,
    check_positive_float,
    check_positive_int,
)

__all__ = ["add_slice_regressor_parser", "check_slice_regressor_args", "run_slice_regressor"]


def add_slice_regressor_parser(sub) -> None:
    """The ``train-slice-regressor`` subcommand."""
    r = sub.add_parser("train-slice-regressor",
                       help="train the slice-level regressor that scores slice faithfulness")
    r.add_argument("--data", "--data-root", dest="data", default=None,
                   help="OASIS root (default $OASIS_DATA or demo)")
    r.add_argument("--size", type=int, default=64, help="image size (default 64)")
    r.add_argument("--head", default="classification", choices=SLICE_HEADS,
                   help="a 32-way classifier read by its median (default) or a regression "
                        "(one output, L1)")
    r.add_argument("--epochs", type=int, default=12)
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--lr", type=float, default=2e-3)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default=None, help="auto | cpu | cuda | mps")
    r.add_argument("--out", default="runs/slice_regressor64.safetensors",
                   help="the .safetensors file to write (default "
                        "runs/slice_regressor64.safetensors)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_train_splits_flag(r, default=("train",))
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=run_slice_regressor)


def check_slice_regressor_args(args) -> None:
    """Before any data is read: positive sizes, a writable .safetensors output."""
    for flag, value in (("--size", args.size), ("--epochs", args.epochs),
                        ("--batch-size", args.batch_size)):
        check_positive_int(value, flag=flag)
    check_positive_float(args.lr, flag="--lr")
    check_output_file(args.out, flag="--out", suffixes=(".safetensors",))
    check_no_replace(args.out, overwrite=args.overwrite)


def run_slice_regressor(args) -> int:
    from ..evaluation.slice_level import train_slice_regressor

    m = train_slice_regressor(args.data, image_size=args.size, head=args.head,
                              epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                              seed=args.seed, out=args.out, device=args.device,
                              progress=not args.no_progress, train_splits=args.train_splits)
    print(f"trained the slice regressor ({m['head']}, {m['parameters']:,} parameters) in "
          f"{m['train_seconds']:.0f} s at {m['images_per_second']:.1f} images/s; "
          f"wrote {args.out}")
    print(f"validate MAE: {m['validate_mae']:.3f} slices ({m['validate_slices']} slices)")
    return 0
