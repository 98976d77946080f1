"""The seed project's U-Net, reproduced faithfully as a *baseline* (62,624,385 parameters).

It is the widely copied ``SimpleUnet`` of the DeepFindr "diffusion model from scratch" Colab,
with one more level and a 1-channel input: ``conv0`` 1->32, five down blocks
32->64->128->256->512->1024 (each ending in a stride-2 conv), five up blocks
1024->512->256->128->64->32 (each starting from the concatenation with the matching down
block's output, ending in a transposed conv), and a 1x1 conv 32->1. Each :class:`Block` is::

    h = BN(ReLU(conv3x3(x)))  +  ReLU(Linear(temb))[..., None, None]
    h = BN(ReLU(conv3x3(h)))
    return Conv4x4/2(h)   (down)   or   ConvTranspose4x4/2(h)   (up)

and the time embedding is ``ReLU(Linear(32, 32)(sinusoidal_32(t)))``. Shapes for a 64x64 image::

    conv0 [B, 32, 64, 64] -> down: 64@32x32, 128@16x16, 256@8x8, 512@4x4, 1024@2x2
    up (input = cat with the down output of the same size):
       2048@2x2 -> 512@4x4, 1024@4x4 -> 256@8x8, 512 -> 128@16x16, 256 -> 64@32x32,
       128@32x32 -> 32@64x64 -> output [B, 1, 64, 64]

(The version with ``down_channels=(64, ..., 1024)`` and a 64->1 output, as in the Colab, has
62,437,601 parameters; only the six-entry list starting at 32 gives the seed's 62,624,385.)

What is wrong with it, and what :class:`~oasis_lib.models.unet.UNet` does instead:

1. **BatchNorm.** In train mode each image is normalised with the statistics of its batch, so
   the output for one image depends on the others, and sampling a single image in train mode
   (the seed's bug 2) normalises with batch-of-1 statistics and overwrites the running
   statistics. Call ``model.eval()`` before sampling; UNet uses GroupNorm, which has no mode.
2. **Weak time conditioning.** ``t`` reaches each block once, as a per-channel bias
   ``ReLU(Linear(temb))`` added between the two convolutions, and never as a scale, so it can
   move a channel's pre-activation but not change its gain per noise level. (That the bias is
   >= 0 is not the weakness: the next convolution has weights of either sign, so its effect on
   later features goes both ways.) The weaknesses are elsewhere: the embedding is one 32-wide
   ``Linear`` + ReLU shared by all blocks, and each block's ReLU zeroes the bias of every
   channel whose input is negative for that ``t`` (about half at initialisation), so those
   channels get no time signal at all at that noise level; and the time bias passes through
   ``conv2`` as a spatially constant per-channel offset into a train-mode BatchNorm (after the
   ReLU) whose statistics pool a batch of mixed timesteps, so how much of ``t`` survives depends
   on the other timesteps in the batch, and differs again in eval mode (running statistics).
   UNet's FiLM gives every residual block a scale and a shift, ``norm(h) * (1 + scale) +
   shift``, from a wider SiLU MLP, with GroupNorm (per image).
3. **No residual connections** inside blocks: ten plain conv stacks in series. UNet's blocks are
   residual and start as the identity (zero-initialised last conv).
4. **No attention** and **no GroupNorm** (see 1).
5. **Every down block ends with a stride-2 conv**, so the finest skip connection is at half
   resolution: no full-resolution feature from ``conv0`` ever reaches the output, which is made
   by a transposed conv followed by a 1x1 conv, with no 3x3 conv at full resolution.
6. **Transposed convolutions** (kernel 4, stride 2) are prone to checkerboard artefacts
   (Odena et al. 2016, "Deconvolution and checkerboard artifacts"); UNet upsamples with nearest
   neighbour + conv3x3.
7. **Parameters where the pixels are not**: the two blocks around the 1024-channel bottleneck
   hold 75% of the 62.6M parameters but, for a 64x64 image, convolve 4x4 and 2x2 maps; five
   halvings also force image sides divisible by 32.

It is kept to reproduce the seed and to compare against; it is not a default.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from .embeddings import SinusoidalPosEmb

__all__ = ["SimpleUNet"]


class Block(nn.Module):
    """The seed's down (``up=False``) or up (``up=True``) block; see the module docstring."""

    def __init__(self, in_ch: int, out_ch: int, time_emb_dim: int, up: bool = False):
        super().__init__()
        self.time_mlp = nn.Linear(time_emb_dim, out_ch)
        if up:  # the input is the concatenation [h, skip], hence 2 * in_ch
            self.conv1 = nn.Conv2d(2 * in_ch, out_ch, 3, padding=1)
            self.transform = nn.ConvTranspose2d(out_ch, out_ch, 4, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
            self.transform = nn.Conv2d(out_ch, out_ch, 4, 2, 1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.bnorm1 = nn.BatchNorm2d(out_ch)
        self.bnorm2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.bnorm1(self.relu(self.conv1(x)))
        h = h + self.relu(self.time_mlp(temb))[:, :, None, None]  # >= 0; conv2 has both signs
        h = self.bnorm2(self.relu(self.conv2(h)))
        return self.transform(h)


class SimpleUNet(nn.Module):
    """The seed's U-Net: ``SimpleUNet()(x_t, t)`` with ``x_t`` ``[B, 1, H, W]``, H and W
    divisible by 32, and ``t`` long or float ``[B]`` (or a scalar).

    Args:
        image_channels: input and output channels (1).
        down_channels: ``conv0``'s output followed by the output of each down block; the up
            blocks retrace them in reverse. Default ``(32, 64, 128, 256, 512, 1024)``.
        time_emb_dim: size of the sinusoidal time embedding (32).
    """

    def __init__(
        self,
        *,
        image_channels: int = 1,
        down_channels: tuple[int, ...] = (32, 64, 128, 256, 512, 1024),
        time_emb_dim: int = 32,
    ):
        super().__init__()
        if len(down_channels) < 2:
            raise ValueError(f"down_channels needs at least 2 entries, got {down_channels!r}")
        up_channels = tuple(reversed(down_channels))
        self.image_channels = image_channels
        self.factor = 2 ** (len(down_channels) - 1)
        # The seed's embedding spaces frequencies as DDPM's code does (freq_shift=1).
        self.time_mlp = nn.Sequential(
            SinusoidalPosEmb(time_emb_dim, freq_shift=1),
            nn.Linear(time_emb_dim, time_emb_dim),
            nn.ReLU(),
        )
        self.conv0 = nn.Conv2d(image_channels, down_channels[0], 3, padding=1)
        self.downs = nn.ModuleList(
            Block(a, b, time_emb_dim) for a, b in pairwise(down_channels)
        )
        self.ups = nn.ModuleList(
            Block(a, b, time_emb_dim, up=True) for a, b in pairwise(up_channels)
        )
        self.output = nn.Conv2d(up_channels[-1], image_channels, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int | float) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.image_channels:
            raise ValueError(f"expected x of shape [B, {self.image_channels}, H, W], "
                             f"got {tuple(x.shape)}")
        if x.shape[-2] % self.factor or x.shape[-1] % self.factor:
            raise ValueError(f"SimpleUNet needs H and W divisible by {self.factor} "
                             f"({len(self.downs)} halvings), got {tuple(x.shape[-2:])}")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0 or t.shape == (1,):
            t = t.reshape(1).expand(x.shape[0])
        temb = self.time_mlp(t).to(x.dtype)
        h = self.conv0(x)
        skips = []
        for down in self.downs:
            h = down(h, temb)
            skips.append(h)
        for up in self.ups:
            h = up(torch.cat([h, skips.pop()], dim=1), temb)
        return self.output(h)
