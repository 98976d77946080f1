"""The models room: networks that see only ``(x, t)`` (our U-Net, the seed's SimpleUNet), their
time embeddings, and the factory that builds them (and their pipeline) from a config."""

from .simple_unet import SimpleUNet
from .unet import UNET_PRESETS, UNet, UNetConfig, count_parameters

__all__ = ["UNET_PRESETS", "SimpleUNet", "UNet", "UNetConfig", "count_parameters"]
