"""Several processes, one training run: what the Trainer needs from ``torch.distributed``.

torchrun is the launcher (no home-made one here)::

    torchrun --standalone --nproc_per_node=2 -m oasis_lib train --preset cpu --out runs/ddp

torchrun starts one process per rank and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them, joins the process
group with the backend of the device (NCCL on CUDA, gloo otherwise) and a timeout, and returns a
:class:`DistContext`. Without those variables (a plain ``python`` run) it returns the single
process context and touches nothing, so every helper here is a no-op at world size 1.

A rank that dies or hangs must not leave the others waiting for ever: every collective has the
process group's timeout, and :func:`collective_guard` turns the backend's error (gloo:
"Connection reset by peer", "Timed out waiting ...ms") into a :class:`RankFailure` whose
message says what happened and what to do.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..device import get_device

DEFAULT_TIMEOUT_S = 1800.0  # torch's own default for gloo: 30 minutes
_PEER_ERROR = re.compile(r"gloo|nccl|timed out|timeout|connection (reset|closed|refused)|"
                         r"broken pipe|peer", re.IGNORECASE)


class RankFailure(RuntimeError):
    """Another rank died or stopped answering; this rank stopped instead of waiting."""

    #: The process group is broken: its C++ teardown at interpreter exit can abort the process
    #: (SIGABRT, "terminate called without an active exception") instead of exiting with the
    #: CLI's code, so the CLI ends the process at once after its line (``cli.errors.run``).
    broken_process_group = True


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the run (world size 1: a plain single-process run).

    Attributes:
        rank: global rank, 0..world_size-1.
        world_size: number of processes in the run.
        local_rank: rank on this node (chooses the GPU ``cuda:local_rank``).
        backend: ``"nccl"`` or ``"gloo"``; ``None`` without a process group.
        timeout_s: seconds a collective waits for the other ranks before failing.
        owns_group: True when :func:`init_distributed` created the group (so :func:`destroy`
            may end it); False when the caller had initialised one already.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, metrics, grids and samples."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_ranks(environ: dict[str, str] | None = None) -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the variables torchrun sets; ``(0, 1, 0)``
    when they are absent. Inconsistent values raise ``ValueError``."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise ValueError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers: {e}") from e
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world} "
                         f"LOCAL_RANK={local} (need 0 <= RANK < WORLD_SIZE, LOCAL_RANK >= 0)")
    return rank, world, local


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo for everything else (CPU, MPS)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def device_for(local_rank: int, prefer: str | None = None) -> torch.device:
    """The device of a local rank: ``cuda:local_rank`` when the choice is CUDA (made current
    with ``torch.cuda.set_device``), otherwise :func:`get_device`'s choice (shared by ranks)."""
    device = get_device(prefer)
    if device.type != "cuda":
        return device
    if device.index is not None and device.index != local_rank:
        raise ValueError(f"device {device} was asked for, but under torchrun each rank uses "
                         f"cuda:LOCAL_RANK (this is local rank {local_rank}); pass --device cuda")
    if local_rank >= torch.cuda.device_count():
        raise ValueError(f"local rank {local_rank} has no GPU: this node has "
                         f"{torch.cuda.device_count()} (lower --nproc_per_node)")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_distributed(prefer_device: str | None = None, *,
                     timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[DistContext, torch.device]:
    """Join the torchrun process group (if any) and pick this rank's device.

    Args:
        prefer_device: as for :func:`oasis_lib.device.get_device` (``None``/``"auto"``).
        timeout_s: seconds any collective (all-reduce, barrier, broadcast) waits for the other
            ranks; after it the waiting rank raises instead of hanging.

    Returns:
        ``(context, device)``. At world size 1 no process group is created.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    rank, world, local = env_ranks()
    device = device_for(local, prefer_device) if world > 1 else get_device(prefer_device)
    if world == 1:
        return DistContext(timeout_s=timeout_s), device
    if dist.is_initialized():  # the caller set it up: use it as it is
        if dist.get_world_size() != world or dist.get_rank() != rank:
            raise ValueError(f"an existing process group (rank {dist.get_rank()} of "
                             f"{dist.get_world_size()}) disagrees with RANK={rank} "
                             f"WORLD_SIZE={world}")
        return DistContext(rank, world, local, dist.get_backend(), timeout_s, False), device
    backend = backend_for(device)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                            device_id=device if device.type == "cuda" else None)
    return DistContext(rank, world, local, backend, timeout_s, True), device


@contextlib.contextmanager
def collective_guard(ctx: DistContext, what: str) -> Iterator[None]:
    """Turn a backend failure inside the block (a dead or stuck peer) into :class:`RankFailure`.

    Errors that do not come from the process group (a shape bug, a NaN check) pass unchanged.
    """
    if not ctx.enabled:
        yield
        return
    try:
        yield
    except RankFailure:
        raise
    except RuntimeError as e:
        dist_error = getattr(dist, "DistError", ())
        if not (isinstance(e, dist_error) or _PEER_ERROR.search(str(e))):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RankFailure(
            f"error: rank {ctx.rank} of {ctx.world_size}: {what} failed: another rank died or "
            f"did not answer within the {ctx.timeout_s:g} s timeout ({first[:300]}). Check the "
            "other ranks' logs, then rerun the same torchrun command with --resume to continue "
            "from the last checkpoint.") from e


def all_reduce_mean(value: torch.Tensor | float, ctx: DistContext) -> float:
    """The mean of a scalar over all ranks (the rank's own value at world size 1)."""
    if not ctx.enabled:
        return float(value)
    t = torch.as_tensor(value, dtype=torch.float64).detach().reshape(1)
    t = t.to(_comm_device(ctx))
    with collective_guard(ctx, "all-reduce of the loss"):
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / ctx.world_size


def barrier(ctx: DistContext, what: str = "barrier") -> None:
    """Wait until every rank gets here (nothing at world size 1)."""
    if ctx.enabled:
        with collective_guard(ctx, what):
            if ctx.backend == "nccl":
                dist.barrier(device_ids=[ctx.local_rank])
            else:
                dist.barrier()


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects)."""
    if not ctx.enabled:
        return obj
    box = [obj if ctx.rank == src else None]
    with collective_guard(ctx, f"broadcast from rank {src}"):
        dist.broadcast_object_list(box, src=src, device=_comm_device(ctx))
    return box[0]


def gather_to_main(obj: Any, ctx: DistContext) -> list[Any] | None:
    """Every rank's ``obj`` as a list indexed by rank on rank 0; ``None`` on the others."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size if ctx.is_main else None
    with collective_guard(ctx, "gather to rank 0"):
        if ctx.backend == "nccl":  # gather_object is not supported by NCCL everywhere
            everything = [None] * ctx.world_size
            dist.all_gather_object(everything, obj)
            return everything if ctx.is_main else None
        dist.gather_object(obj, out, dst=0)
    return out


# ---------------------------------------------------------------- what the Trainer hooks call
def rank_seed(seed: int, ctx: DistContext) -> int:
    """The seed of this rank's own streams (dropout, ``TrainingLoop.gen``): ``seed *
    world_size + rank`` (as DiT's train.py), so one seed gives distinct per-rank streams and
    rank 0 of a single-process run keeps ``seed`` itself. The per-image draws of a step (t,
    noise, flips, ...) do not use it: they are keyed by the image (``training.draws``)."""
    return seed * ctx.world_size + ctx.rank


def check_batch_split(batch_size: int, ctx: DistContext, grad_accum: int = 1) -> int:
    """The micro-batch of one rank, ``batch_size / (world_size * grad_accum)``; ``ValueError``
    when it does not divide (every rank must take an equal share, or the mean is biased)."""
    parts = ctx.world_size * grad_accum
    if batch_size % parts:
        raise ValueError(f"batch_size {batch_size} must be a multiple of world_size x grad_accum "
                         f"= {ctx.world_size} x {grad_accum} = {parts} (batch_size is the global "
                         "batch of one optimiser step, split across ranks and micro-steps)")
    return batch_size // parts


def shard_batches(batches: list[list[int]], ctx: DistContext) -> list[list[int]]:
    """This rank's share of every global batch: rank ``r`` takes the ``r``-th contiguous
    ``1 / world_size`` of each (all ranks see the same batches, so together they cover each
    global batch exactly once)."""
    if not ctx.enabled:
        return batches
    out = []
    for b in batches:
        share = len(b) // ctx.world_size
        out.append(b[ctx.rank * share:(ctx.rank + 1) * share])
    return out


def slot_offset(batch_size: int, ctx: DistContext, micro_batch: int, micro_step: int = 0) -> int:
    """The position in the global batch (its *slot*) of the first image of this rank's
    micro-step ``micro_step``: rank ``r`` holds slots ``r * batch_size / world_size`` onwards
    (:func:`shard_batches`), micro-step ``k`` the ``k``-th ``micro_batch`` of them. The keyed
    draws (``training.draws``) use it, so an image draws the same at any world size."""
    return ctx.rank * (batch_size // ctx.world_size) + micro_step * micro_batch


def wrap_ddp(model: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` at world size > 1 (the model itself otherwise).

    DDP broadcasts rank 0's weights and buffers at construction, then averages the gradients
    over ranks in ``backward`` (bucketed all-reduce).
    """
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    with collective_guard(ctx, "DistributedDataParallel set-up (weight broadcast)"):
        return DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)


def no_sync(model: torch.nn.Module, skip_sync: bool):
    """``model.no_sync()`` on an accumulation micro-step of a DDP model: gradients stay local
    and are all-reduced once, in the last micro-step's backward. A null context otherwise."""
    if skip_sync and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


def destroy(ctx: DistContext) -> None:
    """End the process group if :func:`init_distributed` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device(ctx: DistContext) -> torch.device:
    return torch.device("cuda", ctx.local_rank) if ctx.backend == "nccl" else torch.device("cpu")
