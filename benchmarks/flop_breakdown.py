"""Where a U-Net's forward FLOPs go: by feature-map size, convolutions apart from attention.

:func:`flop_breakdown` runs one image through a network under a dispatch mode that prices
every aten op with torch's own FLOP formulas (``torch.utils.flop_counter.flop_registry``, the
ones ``FlopCounterMode`` uses: one multiply-add = 2 FLOP) and files the count under

* ``("attention", s)``: any op inside an attention block (a module whose class name contains
  "Attention": ours, diffusers' and MONAI's), ``s`` the side of the block's input feature map
  (its ``s * s`` pixels are the tokens): the q/k/v/out projections and the two matmuls;
* ``("conv", s)``: a convolution outside attention, ``s`` the side of its *input* (an
  up-sampling conv counts at the size it runs at, after the interpolation);
* ``("other", None)``: the rest (the time-embedding MLP, the per-block FiLM projections,
  GroupNorm has no formula: all together a few MFLOP).

Attention runs through the math kernel so that its matmuls are visible (as in
``bench_models.forward_flops``, whose total this reproduces).
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

KINDS = ("conv", "attention", "other")


class _Attribute(TorchDispatchMode):
    """Adds each op's FLOPs to ``totals[(kind, side)]``; ``where`` is the module stack's top."""

    def __init__(self, where: list, totals: dict):
        super().__init__()
        self.where, self.totals = where, totals

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            flops = formula(*args, **kwargs, out_val=out)
            in_attention, side = self.where[-1] if self.where else (False, None)
            if in_attention:
                kind = "attention"
            elif func._overloadpacket is torch.ops.aten.convolution:
                kind, side = "conv", args[0].shape[-1]
            else:
                kind, side = "other", None
            self.totals[(kind, side)] += flops
        return out


def flop_breakdown(model: torch.nn.Module, size: int) -> dict[tuple[str, int | None], int]:
    """Forward FLOPs of one ``size x size`` single-channel image, ``{(kind, side): FLOP}``
    (module docstring); their sum is the forward's total."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    where: list[tuple[bool, int | None]] = []  # (inside attention?, feature-map side)

    def enter(module, args):
        outer = where[-1] if where else (False, None)
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if outer[0]:  # a block inside an attention block keeps that block's size
            where.append(outer)
            return
        side = x.shape[-1] if x is not None and x.dim() == 4 else outer[1]
        where.append(("Attention" in type(module).__name__, side))

    def leave(module, args, output):
        where.pop()

    totals: dict[tuple[str, int | None], int] = defaultdict(int)
    x, t = torch.randn(1, 1, size, size), torch.randint(0, 1000, (1,))
    handles = (torch.nn.modules.module.register_module_forward_pre_hook(enter),
               torch.nn.modules.module.register_module_forward_hook(leave))
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), _Attribute(where, totals):
            model.eval()(x, t)
    finally:
        for handle in handles:
            handle.remove()
    return dict(totals)


def breakdown_columns(breakdowns: dict[str, dict]) -> list[tuple[str, int | None]]:
    """The ``(kind, side)`` keys of several breakdowns: by kind, then from large to small."""
    keys = {k for b in breakdowns.values() for k in b}
    return sorted(keys, key=lambda k: (KINDS.index(k[0]), -(k[1] or 0)))


def breakdown_table(breakdowns: dict[str, dict]) -> str:
    """A Markdown table, one row per model: GFLOP per image in each ``(kind, side)`` column."""
    cols = breakdown_columns(breakdowns)
    head = [f"{kind} {s}x{s}" if s else kind for kind, s in cols]
    lines = ["| model | total | " + " | ".join(head) + " |",
             "|---|---|" + "---|" * len(cols)]
    for name, b in breakdowns.items():
        cells = [f"{b.get(k, 0) / 1e9:.2f}" if b.get(k) else "" for k in cols]
        lines.append(f"| {name} | {sum(b.values()) / 1e9:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
