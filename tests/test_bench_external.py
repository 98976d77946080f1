"""The benchmarks' other-library U-Nets (benchmarks/external_unets.py) and FLOP breakdown
(benchmarks/flop_breakdown.py); and that the library itself never imports those libraries."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from external_unets import external_unet, monai_unet  # noqa: E402
from flop_breakdown import flop_breakdown  # noqa: E402

from oasis_lib.models.unet import UNet, count_parameters  # noqa: E402

BENCH_ONLY = ("diffusers", "monai", "einops")  # the `bench` extra: never a library dependency


def attention_flops(tokens: int, channels: int) -> int:
    """One self-attention block over ``tokens`` pixels of ``channels``: the q, k, v and output
    projections (4 x 2 N C^2) and the two matmuls Q K^T and A V (2 x 2 N^2 C)."""
    return 8 * tokens * channels**2 + 4 * tokens**2 * channels


def test_library_never_imports_bench_only_packages():
    found = []
    for path in sorted((REPO / "oasis_lib").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(REPO)}: {n}" for n in names
                      if n.split(".")[0] in BENCH_ONLY]
    assert not found, f"oasis_lib imports a bench-only package: {found}"


def test_flop_breakdown_of_ours_has_the_closed_form_attention():
    """Our cpu preset: attention at 16x16 (64 channels) in 2 down + 3 up blocks, and the
    middle block's at 8x8 (128 channels); the parts add up to FlopCounterMode's total."""
    from bench_models import forward_flops

    model = UNet("cpu")
    parts = flop_breakdown(model, 64)
    assert parts[("attention", 16)] == 5 * attention_flops(16 * 16, 64)
    assert parts[("attention", 8)] == attention_flops(8 * 8, 128)
    assert sum(parts.values()) == forward_flops(model, 64)


def test_unknown_layout_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown layout 'monai'; choose one of .*monai-scaled"):
        external_unet("monai", 64)
    with pytest.raises(ValueError, match="unknown MONAI layout"):
        monai_unet("diffusers-example", 64)


def test_monai_scaled_maps_x_t_at_about_our_parameter_count():
    pytest.importorskip("monai")
    pytest.importorskip("einops")
    net = monai_unet("monai-scaled", 64)
    ours = count_parameters(UNet("cpu"))
    assert count_parameters(net) == 4_634_305  # the docstrings' number
    assert abs(count_parameters(net) / ours - 1) < 0.20
    torch.manual_seed(0)
    with torch.no_grad():  # MONAI zeroes its output convs (the net starts at 0): so t shows
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 1, 64, 64)
    early, late = torch.zeros(2, dtype=torch.long), torch.full((2,), 999)
    with torch.no_grad():
        out = net.eval()(x, early)
        assert out.shape == x.shape
        torch.testing.assert_close(out, net.net(x, timesteps=early))
        assert not torch.allclose(out, net(x, late))  # t reaches MONAI's timestep embedding


def test_monai_scaled_spends_its_flops_at_high_resolution():
    """MONAI's layout: attention over 32x32 (128 channels) in 1 down + 2 up blocks and over
    16x16 in 1 down, the middle and 2 up blocks: the closed forms; over 4x ours in total."""
    pytest.importorskip("monai")
    pytest.importorskip("einops")
    parts = flop_breakdown(monai_unet("monai-scaled", 64), 64)
    assert parts[("attention", 32)] == 3 * attention_flops(32 * 32, 128)
    assert parts[("attention", 16)] == 4 * attention_flops(16 * 16, 128)
    assert sum(parts.values()) > 4 * sum(flop_breakdown(UNet("cpu"), 64).values())
