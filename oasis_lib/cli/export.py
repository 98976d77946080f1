"""``export``: a training checkpoint's weights to a shareable fp16 ``.safetensors`` file.

Refuses before reading anything when the output is not ``.safetensors`` (the only format
``sample`` and ``load_model`` read as an export), is the input itself, or is a training
checkpoint (a run could no longer resume). The file is written under a temporary name, read back
with :func:`oasis_lib.pretrained.load_model` exactly as ``sample`` would, and only then renamed
to ``--out``: a file at ``--out`` is always one that ``sample`` can read.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..checkpoint import CheckpointError, export_safetensors, load_checkpoint
from .errors import UsageError
from .validate import check_output_file


def run_export(args) -> int:
    source, out = Path(args.checkpoint), Path(args.out)
    if source.suffix.lower() == ".safetensors":
        raise UsageError(f"--checkpoint {source} is already a .safetensors export; export "
                         "reads a training checkpoint (last.pt or best.pt of a run)")
    check_output_file(out, flag="--out", suffixes=(".safetensors",), inputs=(source,))
    ckpt = load_checkpoint(source)
    if args.live:
        state = ckpt["model"]
    elif "ema" in ckpt and "model" in ckpt["ema"]:
        state = ckpt["ema"]["model"]
    else:
        raise CheckpointError(f"{source} holds no EMA weights; pass --live to export the live "
                              "weights")
    # The shared file carries the recipe, not this machine's paths.
    config = {**ckpt["config"], "out_dir": f"runs/{Path(ckpt['config']['out_dir']).name}",
              "data_root": None}
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.export.safetensors")
    try:
        export_safetensors(state, tmp, config=config)
        from ..pretrained import load_model

        load_model(tmp, device="cpu")  # what `sample --checkpoint OUT` will do
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    size_mb = out.stat().st_size / 2**20
    print(f"wrote {'live' if args.live else 'EMA'} weights of step {ckpt['step']} to {out} "
          f"(fp16, {size_mb:.1f} MB)")
    return 0
