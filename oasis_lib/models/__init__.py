"""The models room: networks that see only ``(x, t[, cond])`` (our U-Net, the seed's SimpleUNet),
their time embeddings, the latent autoencoder, the conditions, and the factory that builds
them (and their pipeline) from a config."""

from .autoencoder import AutoencoderKL, DiagonalGaussian, estimate_scale_factor
from .autoencoder_config import AUTOENCODER_PRESETS, AutoencoderConfig
from .simple_unet import SimpleUNet
from .unet import UNET_PRESETS, UNet, UNetConfig, count_parameters

__all__ = ["AUTOENCODER_PRESETS", "UNET_PRESETS", "AutoencoderConfig", "AutoencoderKL",
           "DiagonalGaussian", "SimpleUNet", "UNet", "UNetConfig", "count_parameters",
           "estimate_scale_factor"]
