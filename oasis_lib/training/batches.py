"""What one training step reads: the epoch's batches, this rank's share, its micro-batches.

* :func:`epoch_batches`: the data order of an epoch, a permutation seeded by (seed, epoch), cut
  into global batches of ``batch_size`` (the last partial batch dropped). It needs no state, so
  a resumed run finds the same order and skips the batches it has done.
* :func:`epoch_loader`: a ``DataLoader`` over given index batches (this rank's share of each
  global batch, ``distributed.shard_batches``).
* :func:`micro_batches`: a step's input split into the ``grad_accum`` micro-batches of gradient
  accumulation (the whole input when ``grad_accum == 1``).
* :func:`images`: the images of a loader batch (a dataset item may be ``(image, *extras)``).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset


def images(batch):
    """The images of a loader batch: ``batch[0]`` of a list or tuple, else the batch."""
    return batch[0] if isinstance(batch, list | tuple) else batch


def epoch_batches(seed: int, epoch: int, n: int, batch_size: int) -> list[list[int]]:
    """The indices of epoch ``epoch``'s global batches over ``n`` items: a permutation seeded
    by ``seed * 1_000_003 + epoch``, the last partial batch dropped."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    return [perm[i:i + batch_size] for i in range(0, len(perm) - batch_size + 1, batch_size)]


def epoch_loader(dataset: Dataset, batches: list[list[int]], *, epoch: int, num_workers: int,
                 device: torch.device) -> DataLoader:
    """A loader yielding ``batches`` in order (pinned memory on CUDA: asynchronous copies)."""
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                      pin_memory=device.type == "cuda",
                      generator=torch.Generator().manual_seed(epoch))


def micro_batches(x0, grad_accum: int, micro_batch: int) -> list[tuple[torch.Tensor, ...]]:
    """``x0`` (a tensor, or a tuple of a step's inputs: images and extras) as a list of
    ``grad_accum`` tuples, each the next ``micro_batch`` rows of every part."""
    parts = tuple(x0) if isinstance(x0, list | tuple) else (x0,)
    if grad_accum == 1:
        return [parts]
    return list(zip(*(p.split(micro_batch) for p in parts), strict=True))
