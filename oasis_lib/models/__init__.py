"""The models room: networks that see only ``(x, t[, cond])`` (our U-Net, the seed's SimpleUNet),
their time embeddings, the latent autoencoder, the conditions, and the factory that builds
them (and their pipeline) from a config."""

from .._lazy import lazy_exports

#: Public name -> the module that defines it (imported when the name is first used).
_EXPORTS = {
    "AutoencoderKL": ".autoencoder",
    "DiagonalGaussian": ".autoencoder",
    "estimate_scale_factor": ".autoencoder",
    "AUTOENCODER_PRESETS": ".autoencoder_config",
    "AutoencoderConfig": ".autoencoder_config",
    "SimpleUNet": ".simple_unet",
    "UNET_PRESETS": ".unet",
    "UNet": ".unet",
    "UNetConfig": ".unet",
    "count_parameters": ".unet",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
