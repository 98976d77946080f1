"""Light decoders on disk: read (:func:`load_decoder`) and written (:func:`export_decoder`).

A light decoder (:class:`~oasis_lib.models.lite_decoder.LiteDecoder`, trained by
``train-decoder``) reproduces one autoencoder's decoder; it carries that autoencoder's content
hash, and :func:`check_decoder` refuses to pair it with another. ``oasis_lib.pretrained``
re-exports these names; ``load_model(FILE, decoder=...)`` uses them.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .checkpoint import CheckpointError, load_checkpoint, load_state_strict
from .decoder_train_config import DecoderTrainConfig
from .device import get_device
from .file_layout import read_decoder_export, run_kind, write_decoder_export
from .models.lite_decoder import LiteDecoder, LiteDecoderConfig
from .pretrained_autoencoder import autoencoder_sha256

__all__ = ["check_decoder", "export_decoder", "load_decoder"]


def _config_from_state(preset: str, state: dict) -> LiteDecoderConfig:
    """A run checkpoint stores the preset; the latent and image channels (the teacher's) are
    read from the weights' shapes."""
    config = LiteDecoderConfig.preset(preset)
    last = f"up.{len(config.channels) - 1}.weight"
    if "conv_in.weight" not in state or last not in state:
        raise CheckpointError(f"the weights hold no light decoder of preset {preset!r}")
    return config.replace(latent_channels=int(state["conv_in.weight"].shape[1]),
                          out_channels=int(state[last].shape[0]) // 4)


def load_decoder(path: str | os.PathLike, *, device: str | torch.device | None = None,
                 use_ema: bool = True) -> LiteDecoder:
    """A trained light decoder, frozen, in eval mode, with ``teacher_sha256`` (the content hash
    of the autoencoder it reproduces). ``path``: an export (``kind="lite-decoder"``) or a
    ``train-decoder`` run's checkpoint (its EMA weights)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state, meta = read_decoder_export(path)
        config, teacher = LiteDecoderConfig(**meta["lite_decoder"]), meta["autoencoder_sha256"]
    else:
        ckpt = load_checkpoint(path)
        if run_kind(ckpt["config"]) != "decoder":
            raise CheckpointError(f"{path} is not a light decoder's run (made by "
                                  "`train-decoder`) or export")
        run = DecoderTrainConfig.from_dict(ckpt["config"])
        state = ckpt["ema"]["model"] if use_ema and "ema" in ckpt else ckpt["model"]
        config, teacher = _config_from_state(run.lite_decoder, state), run.autoencoder_sha256
    model = LiteDecoder(config)
    load_state_strict(model, state, source=str(path))
    model.teacher_sha256 = teacher
    return model.float().to(get_device(device)).eval().requires_grad_(False)


def check_decoder(decoder: LiteDecoder, autoencoder: torch.nn.Module, *, source: str = "") -> None:
    """Raise :class:`CheckpointError` unless ``decoder`` was distilled from ``autoencoder``
    (content hashes) and reads its latents (channels, factor f)."""
    where = f" ({source})" if source else ""
    found = autoencoder_sha256(autoencoder)
    teacher = getattr(decoder, "teacher_sha256", None)
    if teacher is not None and teacher != found:
        raise CheckpointError(f"the light decoder{where} was distilled from another autoencoder "
                              f"(sha256 {teacher[:12]}), not this model's ({found[:12]}): "
                              "train one for this model's autoencoder with `train-decoder`")
    ae = autoencoder.config
    if (decoder.config.latent_channels, decoder.downsampling_factor) != \
            (ae.latent_channels, ae.downsampling_factor):
        raise CheckpointError(f"the light decoder{where} reads {decoder.config.latent_channels}"
                              f"-channel latents at f={decoder.downsampling_factor}, the "
                              f"autoencoder makes {ae.latent_channels} at "
                              f"f={ae.downsampling_factor}")


def export_decoder(decoder: LiteDecoder, path: str | os.PathLike, *, autoencoder_sha256: str,
                   run_config: dict | None = None, dtype: torch.dtype = torch.float16) -> Path:
    """Write a light decoder to a safetensors file :func:`load_decoder` reads."""
    return write_decoder_export(path, decoder, autoencoder_sha256=autoencoder_sha256,
                                run_config=run_config, dtype=dtype)
