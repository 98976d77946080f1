"""Other libraries' diffusion U-Nets as ``(x, t) -> tensor`` networks, like ours (bench only).

``bench_models.py`` times them next to our ``cpu`` preset and ``bench_recipes.py`` trains them
through our Trainer as ``arch="external"`` networks. Their libraries are optional, bench-only
dependencies (``pip install oasis_lib[bench]``); oasis_lib never imports them. Each builder
raises ImportError with the pip line when its library is absent.

* diffusers' ``UNet2DModel`` (:func:`diffusers_unet`, layouts :data:`DIFFUSERS_LAYOUTS`; their
  provenance in ``bench_models.py``'s docstring).
* MONAI's ``DiffusionModelUNet`` (:func:`monai_unet`, layouts :data:`MONAI_LAYOUTS`), from
  Project-MONAI/tutorials ``generation/2d_ddpm``:

  - ``monai-tutorial``: ``2d_ddpm_tutorial.ipynb``'s network, channels (128, 256, 256),
    attention at levels 2 and 3 (``attention_levels=(False, True, True)``), one ResBlock per
    level, heads of 256 channels (one head per attention layer): 18,500,993 parameters.
  - ``monai-scaled``: the same layout at half the width, channels (64, 128, 128), heads of 128
    (one head), as MONAI's own ``2d_ddpm_compare_schedulers.ipynb`` uses it: 4,634,305
    parameters, +14.3% on our ``cpu`` preset's 4,056,193 (MONAI's GroupNorm has 32 groups, so
    the channels must be multiples of 32; (32, 64, 64) would be 1.2M).

  MONAI's layout keeps its widest levels at high resolution: 64 channels at 64x64, 128 at
  32x32 with attention over 1,024 pixels, and only two down-samplings; ours has 32 channels at
  64x64 and 32x32 and attention at 16x16 and 8x8 only. That is why its forward pass costs
  about 4x our FLOPs at a similar parameter count (``bench_models.py --vs-monai`` prints where
  the FLOPs go).
"""

from __future__ import annotations

import torch

DIFFUSERS_LAYOUTS = {
    "diffusers-default": {"block_out_channels": (28, 56, 84, 112), "norm_num_groups": 4,
                          "attention_head_dim": 4},
    "diffusers-example": {
        "block_out_channels": (24, 24, 48, 48, 96, 96), "norm_num_groups": 6,
        "down_block_types": ("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4},
}
MONAI_LAYOUTS = {
    "monai-tutorial": {"channels": (128, 256, 256), "num_head_channels": 256},
    "monai-scaled": {"channels": (64, 128, 128), "num_head_channels": 128},
}


class _Sample(torch.nn.Module):
    """diffusers' UNet2DModel as a ``(x, t) -> tensor`` network, like ours."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x, t):
        return self.net(x, t).sample


class _Timesteps(torch.nn.Module):
    """MONAI's DiffusionModelUNet as a ``(x, t) -> tensor`` network, like ours (MONAI names the
    second argument ``timesteps`` and takes ``context`` and ``class_labels`` too)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x, t):
        return self.net(x, timesteps=t)


def diffusers_unet(layout: str, size: int) -> torch.nn.Module:
    """diffusers' UNet2DModel in ``DIFFUSERS_LAYOUTS[layout]``, 1 channel in and out, as an
    ``(x, t)`` network (bench_recipes.py trains the example's); ImportError saying how to get
    diffusers when it is absent."""
    if layout not in DIFFUSERS_LAYOUTS:
        raise ValueError(f"unknown diffusers layout {layout!r}; choose one of "
                         f"{tuple(DIFFUSERS_LAYOUTS)}")
    try:
        from diffusers import UNet2DModel
    except ImportError as err:
        raise ImportError("diffusers is not installed: pip install diffusers (a bench-only "
                          "dependency; oasis_lib never needs it)") from err
    return _Sample(UNet2DModel(sample_size=size, in_channels=1, out_channels=1,
                               layers_per_block=2, **DIFFUSERS_LAYOUTS[layout]))


def monai_unet(layout: str, size: int) -> torch.nn.Module:
    """MONAI's 2D DiffusionModelUNet in ``MONAI_LAYOUTS[layout]`` (the 2D DDPM tutorial's
    attention levels and one ResBlock per level), 1 channel in and out, as an ``(x, t)``
    network. ``size`` is unused (MONAI's network does not store it; kept for a signature like
    :func:`diffusers_unet`). ImportError saying how to get MONAI when it is absent."""
    del size
    if layout not in MONAI_LAYOUTS:
        raise ValueError(f"unknown MONAI layout {layout!r}; choose one of {tuple(MONAI_LAYOUTS)}")
    try:
        import einops  # noqa: F401  (MONAI's attention blocks need it; MONAI imports it lazily)
        from monai.networks.nets import DiffusionModelUNet
    except ImportError as err:
        raise ImportError("MONAI is not installed: pip install 'monai[einops]' (a bench-only "
                          "dependency; oasis_lib never needs it)") from err
    return _Timesteps(DiffusionModelUNet(
        spatial_dims=2, in_channels=1, out_channels=1, attention_levels=(False, True, True),
        num_res_blocks=1, **MONAI_LAYOUTS[layout]))


#: Every external layout and the builder that makes it.
EXTERNAL_UNETS = {**dict.fromkeys(DIFFUSERS_LAYOUTS, diffusers_unet),
                  **dict.fromkeys(MONAI_LAYOUTS, monai_unet)}


def external_unet(layout: str, size: int) -> torch.nn.Module:
    """The network of any layout in :data:`EXTERNAL_UNETS` (``size``: the image size)."""
    if layout not in EXTERNAL_UNETS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {tuple(EXTERNAL_UNETS)}")
    return EXTERNAL_UNETS[layout](layout, size)
