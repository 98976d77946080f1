"""Command line: ``python -m oasis_lib {make-demo,summary,train,sample,export,demo,...} --help``.

Every ``choices=`` comes from the library's constants: a new sampler or schedule appears by itself.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..config import AutoencoderTrainConfig, DecoderTrainConfig, TrainConfig
from ..diffusion.processes import ALL_SPACINGS
from ..diffusion.sampling import SAMPLERS
from .checks import check_args
from .conditional import add_condition_flags, add_inpaint_parser
from .config_flags import config_from_args
from .errors import DEBUG_ENV, DEBUG_FLAG, run
from .evaluate import add_evaluate_parser
from .reflow import add_reflow_parser
from .slice_regressor import add_slice_regressor_parser
from .train import add_train_flags
from .validate import add_train_splits_flag


def _cmd_make_demo(args) -> int:
    from ..data.demo import build_demo_dataset

    t0 = time.perf_counter()
    out = build_demo_dataset(args.out, cases=tuple(args.cases), seed=args.seed,
                             overwrite=args.overwrite)
    print(f"demo dataset written to {out} in {time.perf_counter() - t0:.1f} s")
    return 0


def _cmd_summary(args) -> int:
    from ..data import resolve_data_root, summarize
    from .demo import draw_validate_overlays

    root = resolve_data_root(args.data_root)
    print(summarize(root))
    out = draw_validate_overlays(root, Path(args.out) / "slices_with_masks.png")
    print(f"wrote {out}")
    return 0


def _train_config(args):
    """The TrainConfig of ``train``'s flags (:mod:`.config_flags`: the preset's values, the
    flags given over them)."""
    return config_from_args(TrainConfig, args)


def _cmd_train_autoencoder(args) -> int:
    from ..training.autoencoder import train_autoencoder
    from .train import prepare_train_autoencoder

    cfg = prepare_train_autoencoder(args)  # flags checked; a resume matched to last.pt
    if cfg is None:
        return 0  # a resumed run that is already finished (said so)
    return _report(train_autoencoder(cfg, resume=args.resume), "the autoencoder")


def _report(result, what: str, *, unit: str = "images", then: str = "") -> int:
    """Draw the run's loss curve next to its checkpoints and say what was trained."""
    from ..viz.plotting import plot_loss_curve

    metrics = Path(result.out_dir) / "metrics.jsonl"
    if metrics.is_file():
        plot_loss_curve(metrics, save_to=Path(result.out_dir) / "loss_curve.png")
    print(f"trained {what} to step {result.step} (epoch {result.epoch}) at "
          f"{result.images_per_second:.1f} {unit}/s; best EMA val loss {result.best_val_loss}; "
          f"checkpoints in {result.out_dir}{then}")
    return 0


def _cmd_train_decoder(args) -> int:
    from ..training.decoder_distill import train_decoder
    from .train import prepare_train_autoencoder

    cfg = prepare_train_autoencoder(args, DecoderTrainConfig)  # a resume matched to last.pt
    if cfg is None:
        return 0  # a resumed run that is already finished (said so)
    result = train_decoder(cfg, resume=args.resume)
    return _report(result, "the light decoder", unit="latents", then=(
        f"; export with `python -m oasis_lib export --checkpoint {result.out_dir}/best.pt "
        "--out FILE.safetensors`"))


def _cmd_train(args) -> int:
    from ..training.distributed import RankFailure, destroy
    from ..training.trainer import Trainer
    from ..viz.plotting import plot_loss_curve
    from .train import prepare_train

    cfg = prepare_train(args, _train_config)  # flags checked; a resume matched to last.pt
    if cfg is None:
        return 0  # a resumed run that is already finished (said so)
    trainer = Trainer(cfg, resume=args.resume)
    if trainer.dist.is_main:
        world = trainer.dist.world_size
        print(f"precision: {trainer.precision_reason}"
              + (f"; {world} ranks ({trainer.dist.backend}), {trainer.micro_batch} images per "
                 f"rank and micro-step" if world > 1 else ""), flush=True)
    try:
        result = trainer.fit()
    except RankFailure as e:  # another rank died or hung: one actionable line, no traceback
        print(e, file=sys.stderr, flush=True)
        return 1
    destroy(trainer.dist)
    if not trainer.dist.is_main:
        return 0  # rank 0 alone draws the curve and reports
    metrics = Path(result.out_dir) / "metrics.jsonl"
    if metrics.is_file():
        plot_loss_curve(metrics, save_to=Path(result.out_dir) / "loss_curve.png")
    print(f"trained to step {result.step} (epoch {result.epoch}) at "
          f"{result.images_per_second:.1f} images/s; best EMA val loss "
          f"{result.best_val_loss}; checkpoints in {result.out_dir}")
    return 0


def _cmd_sample(args) -> int:
    import torch
    from torchvision.utils import save_image

    from ..pretrained import load_model
    from ..training.precision import resolve_precision
    from .checks import check_sample_args
    from .conditional import condition_from_args
    from .validate import check_input_checkpoint

    check_input_checkpoint(args.decoder, flag="--decoder")
    pipe = load_model(args.checkpoint, device=args.device, autoencoder=args.autoencoder,
                      decoder=args.decoder)
    choice = check_sample_args(args, pipe)  # flags or the file's defaults; --n against memory
    cond = condition_from_args(args, pipe)  # --mask/--slice read and checked against the model
    device = pipe.device
    dtype, why = resolve_precision(args.precision, device)  # bf16 only where it is native
    if args.channels_last:  # NHWC weights: every conv then runs NHWC (inputs follow)
        for part in (pipe.model, pipe.autoencoder, pipe.decoder):
            if isinstance(part, torch.nn.Module):
                part.to(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        x = pipe.sample(args.n, sampler=args.sampler, steps=args.steps, eta=args.eta,
                        spacing=args.spacing, generator=torch.Generator().manual_seed(args.seed),
                        progress=not args.no_progress, condition=cond,
                        guidance_scale=args.guidance if pipe.conditional else None,
                        guidance_rescale=args.guidance_rescale)
    x = (x.float().cpu().clamp(-1, 1) + 1) / 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(x, out, nrow=args.nrow or int(args.n ** 0.5 + 0.5), padding=2, pad_value=1.0)
    print(f"wrote {out} ({args.n} samples; {choice.describe(pipe.process)}; "
          f"{time.perf_counter() - t0:.1f} s on {device.type}"
          f"{'' if args.precision == 'fp32' else '; precision ' + why}"
          f"{'; decoded by ' + Path(args.decoder).name if args.decoder else ''}"
          f"{'; channels_last' if args.channels_last else ''})")
    if args.individual:
        folder = out.with_suffix("")
        folder.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(x):
            save_image(img, folder / f"sample_{i:03d}.png")
        print(f"wrote {args.n} PNGs to {folder}")
    return 0


def _cmd_export(args) -> int:
    from .export import run_export  # refuses to overwrite its input or a training checkpoint

    return run_export(args)


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(out=args.out, train_steps=args.train_steps)
    return 0


def _cmd_train_segmenter(args) -> int:
    from ..evaluation.segmenter import train_segmenter

    metrics = train_segmenter(args.data, image_size=args.size, epochs=args.epochs,
                              batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                              out=args.out, device=args.device, progress=not args.no_progress,
                              train_splits=args.train_splits)
    print(f"trained the segmenter ({metrics['parameters']:,} parameters) in "
          f"{metrics['train_seconds']:.0f} s at {metrics['images_per_second']:.1f} images/s; "
          f"wrote {args.out}")
    print("validate Dice: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics["dice"].items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m oasis_lib", description="DDPM on OASIS brain "
                                "MRI slices: data, training, sampling.")
    p.add_argument(DEBUG_FLAG, action="store_true",
                   help=f"show the traceback of an error (also {DEBUG_ENV}=1; any position)")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("make-demo", help="build the offline demo dataset in the OASIS layout")
    m.add_argument("--out", default="data/demo", help="output folder (default data/demo)")
    m.add_argument("--cases", type=int, nargs=3, default=(60, 8, 4),
                   metavar=("TRAIN", "VALIDATE", "TEST"), help="cases per split (60 8 4)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--overwrite", action="store_true", help="replace an existing demo build")
    m.set_defaults(func=_cmd_make_demo)

    s = sub.add_parser("summary", help="print a data summary and draw slices with masks")
    s.add_argument("--data-root", default=None, help="OASIS root (default $OASIS_DATA or demo)")
    s.add_argument("--out", default="outputs")
    s.set_defaults(func=_cmd_summary)

    t = sub.add_parser("train", help="train a diffusion model (resumable)")
    add_train_flags(t, TrainConfig)  # one flag per knob of the config (cli/config_flags.py)
    t.set_defaults(func=_cmd_train)

    k = sub.add_parser("train-autoencoder",
                       help="train the latent autoencoder on crops of native slices (resumable)")
    add_train_flags(k, AutoencoderTrainConfig)
    k.set_defaults(func=_cmd_train_autoencoder)

    r = sub.add_parser("train-decoder", help="distil a light decoder from an autoencoder's "
                                             "(faster decoding; resumable)")
    add_train_flags(r, DecoderTrainConfig)
    r.set_defaults(func=_cmd_train_decoder)

    a = sub.add_parser("sample", help="sample a grid from a checkpoint")
    a.add_argument("--checkpoint", default=None,
                   help="a .pt or .safetensors file (default: the shipped demo checkpoint)")
    a.add_argument("--sampler", default=None, choices=SAMPLERS,
                   help="default: the file's default sampler if it carries one, else the "
                        "model's (ddim for VP diffusion, flow-euler for rectified flow)")
    a.add_argument("--steps", type=int, default=None,
                   help="network calls (default: the file's default steps with its sampler; "
                        "else all T for ddpm, which takes no other value, 50 for the VP "
                        "samplers, 20 for the flow samplers)")
    a.add_argument("--spacing", default=None, choices=ALL_SPACINGS,
                   help="the time grid (default: the file's, else trailing for VP diffusion, "
                        "linspace for rectified flow; karras, which the VP multistep solvers "
                        "accept, scores best in benchmarks/results/samplers.md; trailing, evenly "
                        "spaced, for a few-step flow)")
    a.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
                   help="fp32 (default: the same bytes on every CPU); auto: bf16 autocast where "
                        "the CPU has native bf16 (avx512_bf16/amx_bf16) and it measures faster, "
                        "about 2x on such CPUs (benchmarks/results/sampling_split.md); bf16: "
                        "always")
    a.add_argument("--channels-last", action="store_true",
                   help="the networks' weights in NHWC (torch.channels_last): decoding 16 slices "
                        "took about half the time in bf16 (benchmarks/results/decoder.md); the "
                        "numbers differ from NCHW's in the last bits")
    a.add_argument("--eta", type=float, default=0.0,
                   help="DDIM eta in [0, 1] (ddim only; other samplers refuse it)")
    a.add_argument("--n", type=int, default=16)
    a.add_argument("--nrow", type=int, default=None)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--device", default=None)
    a.add_argument("--out", default="outputs/samples.png")
    a.add_argument("--individual", action="store_true", help="also write one PNG per sample")
    a.add_argument("--autoencoder", default=None, metavar="FILE",
                   help="a latent run's .pt whose autoencoder moved: its new place (accepted "
                        "only if it holds the weights the run trained with)")
    a.add_argument("--decoder", default=None, metavar="FILE",
                   help="a light decoder distilled from the model's autoencoder (made by "
                        "train-decoder, then export): decodes faster, images a little softer")
    add_condition_flags(a)
    a.add_argument("--no-progress", action="store_true")
    a.set_defaults(func=_cmd_sample)
    add_inpaint_parser(sub)

    e = sub.add_parser("export", help="export a checkpoint's EMA weights to fp16 safetensors")
    e.add_argument("--checkpoint", required=True, help="a training checkpoint (.pt)")
    e.add_argument("--out", required=True, help="the .safetensors file to write")
    e.add_argument("--live", action="store_true", help="export the live weights, not the EMA")
    e.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out file (never a training checkpoint)")
    e.add_argument("--autoencoder", default=None, metavar="FILE",
                   help="a latent run whose autoencoder moved: its new place (accepted only if "
                        "it holds the weights the run trained with)")
    e.add_argument("--default-sampler", default=None, choices=SAMPLERS, metavar="NAME",
                   help="the sampler the file samples with unless told otherwise (sample, "
                        "evaluate, load_model(FILE).sample); one of its process's")
    e.add_argument("--default-steps", type=int, default=None, metavar="K",
                   help="the file's default network calls (with --default-sampler, or the "
                        "model's default sampler)")
    e.add_argument("--default-spacing", default=None, choices=ALL_SPACINGS, metavar="GRID",
                   help="the file's default time grid (e.g. trailing for a few-step flow)")
    e.set_defaults(func=_cmd_export)

    d = sub.add_parser("demo", help="the whole pipeline in minutes on a CPU (make demo)")
    d.add_argument("--out", default="outputs")
    d.add_argument("--train-steps", type=int, default=300)
    d.set_defaults(func=_cmd_demo)

    g = sub.add_parser("train-segmenter",
                       help="train the tissue segmenter used to evaluate samples")
    g.add_argument("--data", "--data-root", dest="data", default=None,
                   help="OASIS root (default $OASIS_DATA or demo)")
    add_train_splits_flag(g, default=("train",))
    g.add_argument("--size", type=int, default=64, help="image size (default 64)")
    g.add_argument("--epochs", type=int, default=20)
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--lr", type=float, default=2e-3)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default=None, help="auto | cpu | cuda | mps")
    g.add_argument("--out", default="runs/segmenter64.safetensors",
                   help="the .safetensors file to write (default runs/segmenter64.safetensors)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(func=_cmd_train_segmenter)
    add_slice_regressor_parser(sub)
    add_reflow_parser(sub)

    add_evaluate_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run a command; errors end in one line ``error: ...`` and an exit code (0 ok, 1 failure,
    2 bad usage, 130/143 stopped by SIGINT/SIGTERM after saving): :mod:`oasis_lib.cli.errors`.
    ``--debug`` or ``OASIS_DEBUG=1`` also prints the traceback."""
    return run(_main, argv)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)  # flags and output paths, before anything is loaded or computed
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
