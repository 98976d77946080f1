"""The shipped conditional checkpoints sample exactly as before the condition fields became a
registry (issue 22, item 3): a few pixels and the sum of a short guided DDIM run, computed on
main before the change."""

from __future__ import annotations

import pytest
import torch

from oasis_lib import load_model
from oasis_lib.data.conditional import slice_indices
from oasis_lib.data.oasis import load_split
from oasis_lib.models.conditioning import Condition
from oasis_lib.paths import shipped_checkpoint

REFERENCE = {  # name: (size, pixels at POINTS, sum)
    "demo_cond64_ema.safetensors": (64, [-0.240566, -0.577658, -0.012929, -0.634099],
                                    -4103.6434),
    "demo_ldm256_cond_ema.safetensors": (256, [-0.175658, -0.180659, -0.095877, -0.683291],
                                         -66741.3953),
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_shipped_conditional_samples_unchanged(name):
    size, pixels, total = REFERENCE[name]
    pipe = load_model(shipped_checkpoint(name), device="cpu")
    assert pipe.condition == "mask+slice"
    val = load_split("validate", None, size, with_masks=True, augment=False)
    idx = torch.tensor([3, 40])
    cond = Condition(mask=val.masks[idx].long(), slice_index=slice_indices(val)[idx])
    x = pipe.sample(2, sampler="ddim", steps=4, generator=torch.Generator().manual_seed(0),
                    condition=cond, guidance_scale=2.0, progress=False)
    h = x.shape[-1]
    points = [(0, h // 2, h // 2), (0, h // 3, h // 4), (1, h // 2, h // 3),
              (1, 2 * h // 3, h // 2)]
    got = [float(x[b, 0, i, j]) for b, i, j in points]
    assert got == pytest.approx(pixels, abs=2e-5)
    assert float(x.double().sum()) == pytest.approx(total, abs=0.05)
