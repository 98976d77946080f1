"""FLOP counting: a convolution's count in closed form; the U-Net's cost scales with pixels."""

import pytest
import torch
from torch import nn

from oasis_lib.teaching.cost import diffusion_cost_rows, forward_gflop


def test_forward_gflop_of_a_convolution_is_two_flop_per_multiply_add():
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=False)
    x = torch.zeros(2, 3, 8, 8)
    # every output element: 3 * 3 * 3 multiply-adds; 2 x 5 x 8 x 8 outputs
    assert forward_gflop(conv, x) == pytest.approx(2 * (2 * 5 * 8 * 8) * 27 / 1e9)


def test_cost_rows_scale_with_the_number_of_positions():
    rows = diffusion_cost_rows(32, factors=(1, 2, 4), preset="tiny", n=2, steps=3,
                               decode_gflop={2: 0.5})
    assert [r["shape"] for r in rows] == [(1, 32, 32), (4, 16, 16), (4, 8, 8)]
    # conv cost is proportional to positions (attention grows faster): f=2 has 4x fewer
    assert rows[0]["gflop"] / rows[1]["gflop"] == pytest.approx(4.0, rel=0.25)
    assert rows[1]["total_gflop"] == pytest.approx(2 * (3 * rows[1]["gflop"] + 0.5))
    with pytest.raises(ValueError, match="not divisible"):
        diffusion_cost_rows(30, factors=(4,), preset="tiny")
