"""``export``: a training checkpoint's weights to a shareable fp16 ``.safetensors`` file.

Three kinds of run are exported, each to the one file its reader needs:

* a pixel diffusion run (``train``): the U-Net and the run's config; ``sample`` reads it;
* a latent diffusion run (``train --autoencoder A``): the U-Net **and** the autoencoder ``A``
  (keys prefixed ``autoencoder.``, its config and the latent scale factor in the metadata), so
  the file samples 256x256 slices on its own, without the run folder of ``A``;
* an autoencoder run (``train-autoencoder``): the autoencoder alone (``kind="autoencoder"``),
  which ``train --autoencoder FILE`` and :func:`oasis_lib.pretrained.load_autoencoder` read.

Refuses before reading anything when the output is not ``.safetensors`` (the only format
``sample`` and ``load_model`` read as an export), is the input itself, is a training
checkpoint (a run could no longer resume), or already exists (unless ``--overwrite``). The
file is written under a temporary name, read back exactly as its reader would, and only then
renamed to ``--out``: a file at ``--out`` is always one that can be read.

A latent run bundles the autoencoder it trained with, found and checked by its content hash
(:func:`oasis_lib.pretrained.run_autoencoder`; ``--autoencoder FILE`` if it moved).

``--default-sampler NAME --default-steps K [--default-spacing GRID]`` write the sampler, step
count and time grid the file samples with when not told otherwise (``sampling_defaults`` in its
metadata: :mod:`oasis_lib.diffusion.sampling_defaults`); ``--default-steps`` alone keeps the
model's process's default sampler. All are checked against the run's noise process before
anything is written (an unknown sampler, one of another process, a step count or a grid it
refuses).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..checkpoint import CheckpointError, load_checkpoint, writing
from ..file_layout import run_kind, write_model_export
from .errors import UsageError
from .guard import check_no_replace
from .validate import check_output_file, check_positive_int


def export_sampling_defaults(args, config: dict, *, source: Path) -> dict | None:
    """``--default-sampler``/``--default-steps`` as the ``sampling_defaults`` of the file
    (None when neither is given), checked against the noise process of the run's ``config``;
    a value it refuses is a :class:`UsageError` naming the flags."""
    sampler, steps = args.default_sampler, args.default_steps
    spacing = getattr(args, "default_spacing", None)
    if sampler is None and steps is None and spacing is None:
        return None
    if run_kind(config) != "diffusion":
        raise UsageError(f"--default-sampler/--default-steps given, but {source} is not a "
                         "diffusion run (an autoencoder samples nothing); drop them")
    from ..config import TrainConfig
    from ..diffusion.processes import get_noise_process
    from ..diffusion.sampling_defaults import SamplingDefaults

    d = TrainConfig.from_dict(config).diffusion
    process = get_noise_process(d.noise_process).from_config(d, warn=False)
    try:
        defaults = SamplingDefaults(sampler or process.default_sampler, steps,
                                    spacing).check(process)
    except ValueError as err:
        flags = " ".join(f"{f} {v}" for f, v in (("--default-sampler", sampler),
                                                  ("--default-steps", steps),
                                                  ("--default-spacing", spacing))
                         if v is not None)
        raise UsageError(f"{flags}: {err}") from err
    return defaults.to_dict()


def _write_decoder(state: dict, config: dict, tmp: Path) -> None:
    """A ``train-decoder`` run: the light decoder alone (``kind="lite-decoder"``), with the
    hash of the autoencoder it reproduces; an absolute autoencoder path is cut to its name."""
    from ..models.lite_decoder import LiteDecoder
    from ..pretrained_decoder import _config_from_state, export_decoder, load_decoder

    if config.get("autoencoder") and Path(config["autoencoder"]).is_absolute():
        config = {**config, "autoencoder": Path(config["autoencoder"]).name}
    model = LiteDecoder(_config_from_state(config["lite_decoder"], state))
    model.load_state_dict(state)
    export_decoder(model, tmp, autoencoder_sha256=config["autoencoder_sha256"],
                   run_config=config)
    load_decoder(tmp, device="cpu")  # what `sample --decoder OUT` will do


def _write(state: dict, config: dict, tmp: Path, *, autoencoder_run: bool, source: Path,
           moved: str | None = None, sampling_defaults: dict | None = None) -> None:
    from ..pretrained import export_autoencoder, load_autoencoder, load_model, run_autoencoder

    shared = {"out_dir": f"runs/{Path(config['out_dir']).name}"}  # not this machine's path
    if run_kind(config) == "decoder":
        return _write_decoder(state, {**config, **shared}, tmp)
    if autoencoder_run:
        config = {**config, **shared}
        from ..config import AutoencoderTrainConfig
        from ..models.autoencoder import AutoencoderConfig, AutoencoderKL

        run = AutoencoderTrainConfig.from_dict(config)
        model = AutoencoderKL(AutoencoderConfig.preset(run.preset, **run.autoencoder_overrides))
        model.load_state_dict(state)
        export_autoencoder(model, tmp, run_config=config)
        load_autoencoder(tmp, device="cpu")  # what `train --autoencoder OUT` will do
        return
    autoencoder = None
    if config.get("autoencoder"):  # a latent run: carry the autoencoder inside the file,
        # the one it trained with (found and checked by content), never another at its path
        autoencoder = run_autoencoder(config, run_path=source, override=moved, device="cpu")[0]
    write_model_export(tmp, state, {**config, **shared}, autoencoder=autoencoder,
                       sampling_defaults=sampling_defaults)
    load_model(tmp, device="cpu")  # what `sample --checkpoint OUT` will do


def run_export(args) -> int:
    source, out = Path(args.checkpoint), Path(args.out)
    if source.suffix.lower() == ".safetensors":
        raise UsageError(f"--checkpoint {source} is already a .safetensors export; export "
                         "reads a training checkpoint (last.pt or best.pt of a run)")
    check_output_file(out, flag="--out", suffixes=(".safetensors",), inputs=(source,))
    check_no_replace(out, overwrite=args.overwrite)
    check_positive_int(args.default_steps, flag="--default-steps")
    ckpt = load_checkpoint(source)
    if args.autoencoder is not None and not ckpt["config"].get("autoencoder"):
        raise UsageError(f"--autoencoder {args.autoencoder} given, but {source} is not a latent "
                         "diffusion run; drop it")
    if args.live:
        state = ckpt["model"]
    elif "ema" in ckpt and "model" in ckpt["ema"]:
        state = ckpt["ema"]["model"]
    else:
        raise CheckpointError(f"{source} holds no EMA weights; pass --live to export the live "
                              "weights")
    # The shared file carries the recipe, not this machine's paths (out_dir is read first:
    # it anchors a latent run's autoencoder path).
    config = {**ckpt["config"], "data_root": None}
    if config.get("latent_cache_dir"):  # (a speed knob: where this machine kept its latents)
        config["latent_cache_dir"] = f"runs/{Path(config['latent_cache_dir']).name}"
    autoencoder_run = run_kind(config) == "autoencoder"
    defaults = export_sampling_defaults(args, config, source=source)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.export.safetensors")
    try:
        with writing(out):  # a full disk names OUT, not its temporary file
            _write(state, config, tmp, autoencoder_run=autoencoder_run, source=source,
                   moved=args.autoencoder, sampling_defaults=defaults)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    size_mb = out.stat().st_size / 2**20
    what = ("autoencoder" if autoencoder_run else "light decoder" if run_kind(config) == "decoder"
            else "latent diffusion + autoencoder" if ckpt["config"].get("autoencoder")
            else "diffusion")
    said = ("" if defaults is None else f"; samples with {defaults['sampler']}, "
            f"{'its default' if defaults['steps'] is None else defaults['steps']} steps"
            f"{', ' + defaults['spacing'] + ' spacing' if defaults.get('spacing') else ''} "
            "unless told otherwise")
    print(f"wrote {'live' if args.live else 'EMA'} {what} weights of step {ckpt['step']} to "
          f"{out} (fp16, {size_mb:.1f} MB){said}")
    return 0
