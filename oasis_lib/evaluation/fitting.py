"""The supervised loop of the evaluation's own networks: the tissue segmenter
(:func:`~oasis_lib.evaluation.segmenter.train_segmenter`) and the slice regressor
(:func:`~oasis_lib.evaluation.slice_level.train_slice_regressor`).

Both are small instruments trained once and shipped as fp16 files, so they need none of the
diffusion loop's machinery (EMA, checkpoints, resume, DDP: :mod:`oasis_lib.training.loop`,
which the evaluation room may not import: training imports the segmenter). The recipe they
share: AdamW, linear warm-up over the first epoch then cosine decay to 0 (per step), shuffled
batches from one seeded generator (last partial batch dropped), a measurement of the eval-mode
network after each epoch, the last weights kept; then the weights rounded to fp16, the stored
format, so that what is measured is what a loader gets.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..checkpoint import load_state_strict

__all__ = ["check_counts", "fit_epochs", "fp16_state", "warmup_cosine"]


def check_counts(**counts: Any) -> None:
    """ValueError unless every count (``epochs=``, ``batch_size=``) is an int >= 1."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def warmup_cosine(per_epoch: int, total: int) -> Callable[[int], float]:
    """The learning-rate factor of optimiser step ``s``: ``(s + 1) / W`` for s < W (W = one
    epoch of steps), then ``(1 + cos(pi (s - W) / (total - W))) / 2`` down to 0."""
    def factor(step: int) -> float:
        if step < per_epoch:
            return (step + 1) / per_epoch
        return 0.5 * (1 + math.cos(math.pi * (step - per_epoch) / max(1, total - per_epoch)))
    return factor


def fit_epochs(model: nn.Module, loss: Callable[..., Tensor], train_set, *, epochs: int,
               batch_size: int, lr: float, weight_decay: float, seed: int,
               device: torch.device, measure: Callable[[nn.Module], dict[str, Any]],
               progress: bool = True, desc: str = "epochs",
               postfix: Callable[[dict], dict[str, str]] | None = None,
               batch_bar: bool = False) -> tuple[list[dict[str, Any]], float]:
    """Train ``model`` in place for ``epochs`` on ``train_set`` (items: tuples of tensors, moved
    to ``device`` and passed to ``loss(*batch)``, which returns the scalar loss).

    After each epoch ``measure(model.eval())`` gives the epoch's record besides ``epoch`` (from
    1) and ``loss`` (the epoch's mean); ``postfix(record)`` what the bar shows. Returns
    ``(history, seconds of training)``. The shuffle generator is seeded with ``seed``; the
    caller seeds torch (initial weights) before building the model.

    ``batch_bar``: a per-batch bar too (the segmenter's). It changes the batches: the
    ``tqdm.auto`` bar opens an iterator of the loader when it is made and the loop opens
    another, and each draws a base seed from the shuffle generator, so the epoch's permutation
    comes one draw later (shown or not). It is part of the segmenter's recorded recipe, so the
    shipped files' commands still reproduce them bit for bit.
    """
    if len(train_set) < batch_size:
        raise ValueError(f"batch_size={batch_size} is larger than the training set "
                         f"({len(train_set)} slices)")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    per_epoch = len(train_set) // batch_size
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(per_epoch, epochs * per_epoch))
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    bar = tqdm(range(epochs), desc=desc, disable=not progress)
    for epoch in bar:
        model.train()
        running = 0.0
        batches = tqdm(loader, desc=f"epoch {epoch + 1}", leave=False,
                       disable=not progress) if batch_bar else loader
        for batch in batches:
            value = loss(*(b.to(device) for b in batch))
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            sched.step()
            running += float(value.detach())
        record = {"epoch": epoch + 1, "loss": round(running / per_epoch, 5)}
        record |= measure(model.eval())
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", **(postfix(record) if postfix else {}))
    return history, time.perf_counter() - t0


def fp16_state(model: nn.Module) -> dict[str, Tensor]:
    """The model's weights rounded to fp16 (the stored format, CPU), loaded back into
    ``model`` as fp32 so that it computes exactly what the saved file will."""
    state = {k: v.detach().cpu().half() for k, v in model.state_dict().items()}
    load_state_strict(model, {k: v.float() for k, v in state.items()}, source="fp16 weights")
    return state
