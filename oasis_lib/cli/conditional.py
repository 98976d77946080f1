"""The conditional flags of ``sample`` (``--mask``, ``--slice``, ``--guidance``) and the
``inpaint`` command (issue 12).

PNG inputs are read strictly (:func:`oasis_lib.data.checks.read_png`) and brought to the
model's image grid; everything wrong with them is one line naming the flag, the file and what
was found:

* ``--mask``: an OASIS mask PNG (0/85/170/255 = background/CSF/grey/white matter) of any
  square size an integer factor away from the model's (e.g. 256 for a 64x64 model), resized by
  nearest neighbour (``nearest-exact``: the pixel at each cell's centre);
* ``--image``: a grey slice, resized like the dataset's slices (antialiased bilinear);
* ``--region``: 0 = keep, 255 (or 1) = regenerate; shrunk by max-pooling, so every cell of
  the model's grid that a painted pixel touches is regenerated (a thin stroke grows to the
  cells it crosses, never vanishes), enlarged by nearest neighbour.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.layout import MASK_VALUES, SLICES_PER_CASE
from ..models.conditioning import Condition
from .errors import UsageError
from .validate import check_input_checkpoint, check_output_file

__all__ = ["add_condition_flags", "add_guidance_flags", "add_inpaint_parser",
           "check_condition_flags", "check_guidance_flags",
           "check_inpaint_args", "condition_from_args", "read_image_png", "read_mask_png",
           "read_region_png", "run_inpaint", "write_grey_png"]


def add_condition_flags(p) -> None:
    """``--mask``, ``--slice``, ``--guidance``, ``--guidance-rescale`` on a subparser."""
    p.add_argument("--mask", default=None, metavar="FILE.png",
                   help="tissue mask PNG in the OASIS format (0/85/170/255) for a "
                        "mask-conditioned model; any size an integer factor from the model's")
    p.add_argument("--slice", type=int, default=None, metavar="N",
                   help=f"slice level 0..{SLICES_PER_CASE - 1} for a slice-conditioned model")
    add_guidance_flags(p)


def add_guidance_flags(p) -> None:
    """``--guidance`` and ``--guidance-rescale`` (``sample``, ``inpaint``, ``evaluate``)."""
    p.add_argument("--guidance", type=float, default=None, metavar="S",
                   help="classifier-free guidance scale s = 1 + w (diffusers' convention): 1 = "
                        "the conditional model (default), 0 = unconditional, > 1 = guided")
    p.add_argument("--guidance-rescale", type=float, default=0.0, metavar="PHI",
                   help="guidance rescale phi in [0, 1] (Lin et al. 2024); default 0")


def check_condition_flags(args) -> None:
    """Before loading: files exist, the slice in range, the numbers finite."""
    if args.mask is not None and not Path(args.mask).is_file():
        raise UsageError(f"--mask {args.mask} does not exist")
    if args.slice is not None and not 0 <= args.slice < SLICES_PER_CASE:
        raise UsageError(f"--slice {args.slice} is outside 0..{SLICES_PER_CASE - 1} (the slice "
                         "level in the OASIS stack)")
    check_guidance_flags(args)


def check_guidance_flags(args) -> None:
    """``--guidance`` finite and >= 0, ``--guidance-rescale`` in [0, 1]."""
    if args.guidance is not None and (not math.isfinite(args.guidance) or args.guidance < 0):
        raise UsageError(f"--guidance must be a finite scale >= 0 (1 = conditional, "
                         f"0 = unconditional), got {args.guidance}")
    if not 0.0 <= args.guidance_rescale <= 1.0:
        raise UsageError(f"--guidance-rescale must be in [0, 1], got {args.guidance_rescale}")


def _fit(values: np.ndarray, size: tuple[int, int], *, flag: str, path, mode: str
         ) -> torch.Tensor:
    """uint8 [H, W] -> float [1, 1, h, w] on the model's grid (an integer factor away)."""
    h, w = values.shape
    ok = all(a % b == 0 or b % a == 0 for a, b in ((h, size[0]), (w, size[1])))
    if not ok or h * size[1] != w * size[0]:
        raise UsageError(f"{flag} {path} is {h}x{w}; the model works at {size[0]}x{size[1]}: "
                         f"give a PNG of that size or an integer multiple or fraction of it")
    x = torch.from_numpy(values.astype(np.float32))[None, None]
    if (h, w) == tuple(size):
        return x
    if mode == "bilinear":
        return F.interpolate(x, size=size, mode="bilinear", antialias=True)
    if mode == "max" and h > size[0]:  # shrinking a region: a cell any painted pixel touches
        return F.max_pool2d(x, kernel_size=h // size[0])  # is regenerated (never dropped)
    return F.interpolate(x, size=size, mode="nearest-exact")


def _read(path) -> np.ndarray:
    from ..data.checks import read_png  # a broken file: DataError naming it

    return read_png(Path(path))[0]


def read_mask_png(path, size: tuple[int, int], *, flag: str = "--mask") -> torch.Tensor:
    """Class mask long ``[1, h, w]`` (0..3) of an OASIS mask PNG, resized to ``size``."""
    values = _read(path)
    found = sorted(set(np.unique(values).tolist()) - set(MASK_VALUES))
    if found:
        shown = ", ".join(str(v) for v in found[:8]) + (" ..." if len(found) > 8 else "")
        raise UsageError(f"{flag} {path}: pixel values {shown} are not OASIS mask levels "
                         "0/85/170/255 (background/CSF/grey/white matter); export the mask "
                         "with exactly those values")
    classes = np.searchsorted(np.array(MASK_VALUES), values).astype(np.uint8)
    return _fit(classes, size, flag=flag, path=path, mode="nearest")[:, 0].round().long()


def read_region_png(path, size: tuple[int, int], *, flag: str = "--region") -> torch.Tensor:
    """Region float ``[1, 1, h, w]`` in {0, 1} (1 = regenerate) of a 0/255 (or 0/1) PNG."""
    values = _read(path)
    found = set(np.unique(values).tolist())
    if not (found <= {0, 255} or found <= {0, 1}):
        shown = ", ".join(str(v) for v in sorted(found - {0, 1, 255})[:8])
        raise UsageError(f"{flag} {path}: pixel values {shown} found; a region is 0 (keep) "
                         "and 255 (regenerate)")
    region = (values > 0).astype(np.uint8)
    region = _fit(region, size, flag=flag, path=path, mode="max").round()
    if not region.any():
        h, w = values.shape[-2:]
        raise UsageError(
            f"{flag} {path} is empty: all its {w}x{h} pixels are 0 (keep), so nothing would be "
            "regenerated; paint the part to regenerate white (255) and leave the rest black (0)"
            if not values.any() else
            f"{flag} {path}: its {int((values > 0).sum())} painted pixels vanish when the {w}x{h} "
            f"region is shrunk to the model's {size[1]}x{size[0]} grid; paint a larger region")
    return region


def read_image_png(path, size: tuple[int, int], *, flag: str = "--image") -> torch.Tensor:
    """A grey slice float ``[1, 1, h, w]`` in [-1, 1] (``v / 127.5 - 1``), resized."""
    x = _fit(_read(path), size, flag=flag, path=path, mode="bilinear")
    return (x.clamp(0, 255) / 127.5 - 1.0).float()


def condition_from_args(args, pipe) -> Condition | None:
    """The Condition of ``--mask`` / ``--slice`` for ``pipe``, or None; a condition for an
    unconditional model, or none for a conditional one (unless ``--guidance 0``), is refused."""
    given = [flag for flag, v in (("--mask", args.mask), ("--slice", args.slice))
             if v is not None]
    source = args.checkpoint or "the shipped demo checkpoint"
    if not pipe.conditional:
        extra = given + (["--guidance"] if args.guidance not in (None, 1.0) else []) + (
            ["--guidance-rescale"] if args.guidance_rescale else [])
        if extra:
            raise UsageError(f"{' and '.join(extra)} given, but {source} is an unconditional "
                             f"model; drop {'it' if len(extra) == 1 else 'them'}, or pass a "
                             "checkpoint trained with --condition")
        return None
    uses = {"--mask": "mask" in pipe.condition, "--slice": "slice" in pipe.condition}
    for flag in given:
        if not uses[flag]:
            raise UsageError(f"{flag} given, but {source} is conditioned on {pipe.condition} "
                             "only; drop it")
    if not given:
        if getattr(args, "command", None) == "inpaint":
            if args.guidance is not None or args.guidance_rescale:
                raise UsageError("--guidance needs a condition to guide towards: add --mask "
                                 "and/or --slice (without them inpainting is unconditional)")
            return None
        if args.guidance == 0:
            return None
        need = " and ".join(f for f, u in uses.items() if u)
        raise UsageError(f"{source} is a conditional model ({pipe.condition}): give {need} "
                         "(e.g. --mask seg.png --slice 16), or --guidance 0 for unconditional "
                         "samples")
    if args.guidance == 0:  # s = 0 is the unconditional model: the condition is never read
        raise UsageError(f"{' and '.join(given)} given with --guidance 0, which samples "
                         "unconditionally and would ignore "
                         f"{'it' if len(given) == 1 else 'them'}: drop "
                         f"{'it' if len(given) == 1 else 'them'} for unconditional samples, or "
                         "use --guidance 1 (conditional) or more (guided)")
    mask = None
    if args.mask is not None:
        mask = read_mask_png(args.mask, tuple(pipe.image_shape[-2:]))
    slice_index = None if args.slice is None else torch.tensor([args.slice])
    return Condition(mask=mask, slice_index=slice_index)


def check_inpaint_args(args) -> None:
    """``inpaint`` before loading anything."""
    check_input_checkpoint(args.checkpoint)
    for flag, path in (("--image", args.image), ("--region", args.region)):
        if not Path(path).is_file():
            raise UsageError(f"{flag} {path} does not exist")
    for flag, value in (("--resample", args.resample), ("--jump", args.jump)):
        if value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")
    check_output_file(args.out, flag="--out", suffixes=(".png",),
                      inputs=(args.checkpoint, args.image, args.region))
    check_condition_flags(args)


def add_inpaint_parser(sub) -> None:
    """The ``inpaint`` subcommand."""
    i = sub.add_parser("inpaint", help="regenerate a region of a slice with RePaint (any model)")
    i.add_argument("--checkpoint", default=None,
                   help="a .pt or .safetensors file (default: the shipped demo checkpoint)")
    i.add_argument("--image", required=True, help="the slice PNG (grey, resized to the model)")
    i.add_argument("--region", required=True,
                   help="PNG of the region to regenerate: 255 = regenerate, 0 = keep")
    i.add_argument("--resample", type=int, default=1,
                   help="RePaint's resample count r (1 = no resampling; the paper uses 10)")
    i.add_argument("--jump", type=int, default=10,
                   help="RePaint's jump length j in steps (default 10, as the paper)")
    add_condition_flags(i)
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--device", default=None)
    i.add_argument("--out", default="outputs/inpainted.png", help="the PNG to write")
    i.add_argument("--no-progress", action="store_true")
    i.set_defaults(func=run_inpaint)


def write_grey_png(x: torch.Tensor, path) -> Path:
    """One image [1, H, W] in [-1, 1] as an 8-bit grey PNG (``round((x + 1) * 127.5)``, so a
    slice read with ``v / 127.5 - 1`` is written back to the same bytes)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = ((x.float().cpu().clamp(-1, 1)[0] + 1) * 127.5).round().to(torch.uint8).numpy()
    Image.fromarray(values, mode="L").save(path)
    return path


def run_inpaint(args) -> int:
    from ..pretrained import load_model

    pipe = load_model(args.checkpoint, device=args.device)
    size = tuple(pipe.image_shape[-2:])
    image = read_image_png(args.image, size)
    region = read_region_png(args.region, size)
    if args.jump >= pipe.schedule.T:
        raise UsageError(f"--jump {args.jump} must be below the model's T={pipe.schedule.T}")
    cond = condition_from_args(args, pipe)
    t0 = time.perf_counter()
    out = pipe.inpaint(image, region, jump_length=args.jump, resample=args.resample,
                       condition=cond, guidance_scale=args.guidance if cond is not None else None,
                       guidance_rescale=args.guidance_rescale,
                       generator=torch.Generator().manual_seed(args.seed),
                       progress=not args.no_progress)
    path = write_grey_png(out[0], args.out)
    print(f"wrote {path} ({int(region.sum())} of {size[0] * size[1]} pixels regenerated, "
          f"jump {args.jump}, resample {args.resample}, {time.perf_counter() - t0:.1f} s)")
    return 0

