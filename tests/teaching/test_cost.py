"""FLOP counting: a convolution and attention in closed form; U-Net cost grows with pixels."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from oasis_lib import UNet
from oasis_lib.teaching.cost import by_resolution, diffusion_cost_rows, forward_gflop


def test_forward_gflop_of_a_convolution_is_two_flop_per_multiply_add():
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=False)
    x = torch.zeros(2, 3, 8, 8)
    # every output element: 3 * 3 * 3 multiply-adds; 2 x 5 x 8 x 8 outputs
    assert forward_gflop(conv, x) == pytest.approx(2 * (2 * 5 * 8 * 8) * 27 / 1e9)


def test_forward_gflop_counts_both_products_of_cpu_attention():
    q, k, v = torch.zeros(1, 2, 16, 8), torch.zeros(1, 2, 24, 8), torch.zeros(1, 2, 24, 8)
    # Q K^T: 2 heads x 16 x 24 dot products of length 8; then as many multiply-adds with V
    expected = 2 * (2 * 16 * 24 * 8) * 2
    assert forward_gflop(F.scaled_dot_product_attention, q, k, v) == pytest.approx(expected / 1e9)


def test_cost_rows_scale_with_the_number_of_positions():
    rows = diffusion_cost_rows(32, factors=(1, 2, 4), preset="tiny", n=2, steps=3,
                               decode_gflop={2: 0.5})
    assert [r["shape"] for r in rows] == [(1, 32, 32), (4, 16, 16), (4, 8, 8)]
    # the tiny preset: attention on its last level (8x8 at 32x32 input) and in the middle
    assert [r["attention"] for r in rows] == [(8, 8), (4, 4), (2, 2)]
    # conv cost is proportional to positions (attention grows faster): f=2 has 4x fewer
    assert rows[0]["gflop"] / rows[1]["gflop"] == pytest.approx(4.0, rel=0.25)
    assert rows[1]["total_gflop"] == pytest.approx(2 * (3 * rows[1]["gflop"] + 0.5))
    with pytest.raises(ValueError, match="not divisible"):
        diffusion_cost_rows(30, factors=(4,), preset="tiny")


def test_by_resolution_puts_each_layer_at_the_side_of_its_output():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False),           # 8x8 out
                        nn.Conv2d(4, 4, 4, stride=2, padding=1, bias=False))  # 4x4 out
    x = torch.zeros(1, 1, 8, 8)
    assert by_resolution(net, x) == {
        8: (36, pytest.approx(2 * 4 * 64 * 9 / 1e9)),
        4: (256, pytest.approx(2 * 4 * 16 * 64 / 1e9)), None: (0, 0.0)}


def test_by_resolution_sums_to_the_whole_unet():
    unet = UNet("tiny").eval()
    x, t = torch.zeros(1, 1, 32, 32), torch.zeros(1, dtype=torch.long)
    rows = by_resolution(unet, x, t)
    assert sum(p for p, _ in rows.values()) == sum(p.numel() for p in unet.parameters())
    assert sum(g for _, g in rows.values()) == pytest.approx(forward_gflop(unet, x, t))
    assert set(rows) == {None, 32, 16, 8}  # the time MLP alone has no feature map
