"""Distilling a light decoder from the autoencoder's (:class:`DecoderTrainConfig`, a
:class:`~oasis_lib.run_config.RunConfig`) and its presets (:data:`DECODER_TRAIN_PRESETS`).
Trained by :mod:`oasis_lib.training.decoder_distill`; also importable from :mod:`oasis_lib.config`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config_knobs import knob
from .models.lite_decoder import LITE_DECODER_PRESETS
from .run_config import RunConfig, _choice


@dataclass
class DecoderTrainConfig(RunConfig):
    """A :class:`~oasis_lib.models.lite_decoder.LiteDecoder` trained to reproduce a frozen
    autoencoder's decoder on the latents of the training slices (TAESD's idea of a tiny decoder
    for the same latents, Bohan 2023, trained here by distillation). Presets:
    :data:`DECODER_TRAIN_PRESETS`."""

    autoencoder: str | None = knob(  # the trained autoencoder whose decoder is distilled
        #   (.safetensors export or runs/ae/best.pt); required
        None, flag=True, metavar="FILE",
        help="the autoencoder whose decoder is distilled (required)")
    lite_decoder: str = knob(  # the student's preset: tiny | cpu | gpu (models.lite_decoder)
        "cpu", flag="--decoder-preset", choices=tuple(LITE_DECODER_PRESETS),
        help="the light decoder's size")
    latent_crop: int | None = knob(  # side of the random latent crops both decoders see
        #   (32 latents = 128 pixels at f = 4: a quarter of the teacher's cost); None: whole
        32, flag=True, help="side of the random latent training crops (None: whole latents)")
    edge_weight: float = knob(  # weight of the L1 distance between the two images' Laplacians
        #   (next to their L1 distance): without it a small decoder blurs
        1.0, flag=True, help="weight of the Laplacian (edge) L1 term")
    latent_cache_dir: str = knob(  # latents of the data, keyed by autoencoder + data
        "runs/latent_cache", flag=True, resume="free", help="where the encoded data is cached")
    autoencoder_sha256: str | None = knob(  # the teacher's content hash, stored at the start:
        #   an export carries it, and a pipeline refuses a decoder of another autoencoder
        None, resume="derived")
    sample_n: int = knob(8, resume="safe")  # validate slices in the progress grids

    def validate(self) -> None:
        super().validate()
        if not self.autoencoder:
            raise ValueError("a decoder run needs the autoencoder to distil (--autoencoder FILE)")
        _choice("lite_decoder", self.lite_decoder, tuple(LITE_DECODER_PRESETS))
        if self.latent_crop is not None and (isinstance(self.latent_crop, bool)
                                             or self.latent_crop < 4):
            raise ValueError(f"latent_crop must be an int >= 4 or None, got {self.latent_crop!r}")
        if not self.edge_weight >= 0:
            raise ValueError(f"edge_weight must be >= 0, got {self.edge_weight!r}")

    @classmethod
    def presets(cls) -> dict[str, DecoderTrainConfig]:
        return DECODER_TRAIN_PRESETS


DECODER_TRAIN_PRESETS: dict[str, DecoderTrainConfig] = {
    # Seconds: tests (the tiny decoder of the tiny autoencoder on 32x32 slices).
    "tiny": DecoderTrainConfig(lite_decoder="tiny", image_size=32, latent_crop=4, epochs=1,
                               batch_size=8, lr=1e-3, warmup_steps=5, checkpoint_every=20,
                               val_size=8, sample_n=4, ema_decay=0.9, precision="fp32",
                               out_dir="runs/decoder_tiny"),
    # A laptop CPU: native slices, 32x32 latent crops, validated on 64 whole slices.
    "cpu": DecoderTrainConfig(image_size=256, epochs=100, batch_size=16, lr=1e-3,
                              warmup_steps=100, val_size=64, ema_decay=0.999,
                              checkpoint_every=200, out_dir="runs/decoder"),
    # A GPU: the wider decoder, whole latents.
    "gpu": DecoderTrainConfig(lite_decoder="gpu", image_size=256, latent_crop=None, epochs=200,
                              batch_size=32, lr=1e-3, warmup_steps=500, val_size=256,
                              ema_decay=0.9995, out_dir="runs/decoder_gpu"),
}
