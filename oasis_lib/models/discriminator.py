"""An optional PatchGAN discriminator and the hinge loss (off by default in this project).

LDM trains its autoencoders with an adversarial term from a PatchGAN discriminator (Isola et al.
2017, sec. 3.2: "it only penalises structure at the scale of patches"), which sharpens textures
that L1 blurs. On a 2-core CPU it roughly doubles the cost of a training step, so the loss config
leaves its weight at 0 (:class:`oasis_lib.training.ae_losses.AutoencoderLossConfig`).

Layout: conv 4x4 stride 2 + LeakyReLU(0.2), then ``num_layers - 1`` x [conv 4x4 stride 2 +
GroupNorm + LeakyReLU] doubling the channels (capped at 8x), a conv 4x4 stride 1 + GroupNorm +
LeakyReLU, and a conv 4x4 stride 1 to one logit per patch. GroupNorm replaces pix2pix's BatchNorm
so that a patch's logit does not depend on the other images of its batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchDiscriminator", "check_patch_size", "hinge_d_loss", "hinge_g_loss"]


def check_patch_size(side: int, num_layers: int) -> None:
    """ValueError unless a ``side`` x ``side`` image leaves D at least one logit: each of the
    ``num_layers`` stride-2 convs halves it and the two stride-1 4x4 convs take 1 pixel each,
    so ``side / 2**num_layers - 2 >= 1``."""
    if side < 3 * 2**num_layers:
        raise ValueError(f"the discriminator's {num_layers} stride-2 layers need crops of at "
                         f"least {3 * 2**num_layers} pixels, got {side}; lower disc_layers or "
                         "raise crop_size")


class PatchDiscriminator(nn.Module):
    """Images ``[B, in_channels, H, W]`` -> patch logits ``[B, 1, h, w]`` (real > 0 > fake).

    Args:
        in_channels: image channels (1).
        base_channels: channels of the first conv (64 in pix2pix; 32 here).
        num_layers: stride-2 convs; the receptive field of one logit grows with it
            (70x70 pixels for 3, the pix2pix default).
        norm_groups: GroupNorm groups; must divide ``base_channels``.
    """

    def __init__(self, in_channels: int = 1, base_channels: int = 32, num_layers: int = 3, *,
                 norm_groups: int = 8) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("base_channels", base_channels),
                            ("num_layers", num_layers), ("norm_groups", norm_groups)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if base_channels % norm_groups:
            valid = [g for g in range(1, base_channels + 1) if base_channels % g == 0]
            raise ValueError(f"norm_groups={norm_groups} must divide base_channels="
                             f"{base_channels}; choose one of {valid}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, 2, 1),
                                   nn.LeakyReLU(0.2)]
        ch = base_channels
        for i in range(1, num_layers + 1):
            out = base_channels * min(2**i, 8)
            stride = 2 if i < num_layers else 1
            layers += [nn.Conv2d(ch, out, 4, stride, 1), nn.GroupNorm(norm_groups, out),
                       nn.LeakyReLU(0.2)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss ``1/2 (E[relu(1 - D(x))] + E[relu(1 + D(x_hat))])`` (Lim & Ye
    2017, eq. 7; the form LDM uses). 0 once real logits are >= 1 and fake ones <= -1."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator (autoencoder) side of the hinge GAN: ``-E[D(x_hat)]``."""
    return -fake_logits.mean()
