"""Random draws keyed by the image, not by the process: a run's weights do not depend on how
many ranks made it.

Every per-image random draw of a training step (the flip, the timestep t, the noise eps, a
conditional run's mask ablation and condition dropout, the autoencoder's crop and posterior
noise) is a function of ``(seed, step, slot, stream)`` only:

* ``step``: the optimiser step being taken (0 for the first);
* ``slot``: the image's position in the step's *global* batch, ``0 .. batch_size - 1``. The
  global batch is the same list of images for 1 process and for N ranks (the loop's epoch
  permutation; rank ``r`` takes the ``r``-th contiguous share of it,
  :func:`~oasis_lib.training.distributed.shard_batches`, and micro-step ``k`` the ``k``-th
  part of that share), so an image has the same slot however the batch is split;
* ``stream``: which draw (``STREAMS``), so turning flips off does not change the noise.

One process with batch B and N ranks with B / N each (or grad_accum micro-batches) therefore
draw exactly the same numbers for the same image, and a resumed run draws what the
uninterrupted one would (nothing to save: the key is recomputed from the step).

The key is mixed with SplitMix64 (Steele, Lea & Flood 2014, "Fast splittable pseudorandom
number generators"): scalar draws (a flip, t, a crop offset) use the 64-bit hash itself as a
uniform number; tensor draws (noise) seed a CPU ``torch.Generator`` with it. That generator
(mt19937) keeps only 32 bits of its seed, so two images of a long run may share their noise
now and then (about N^2 / 2^33 pairs among N keyed draws): harmless for training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_MASK = (1 << 64) - 1
STREAMS = {"flip": 1, "timestep": 2, "noise": 3, "condition": 4, "crop_top": 5, "crop_left": 6,
           "posterior": 7}


def _splitmix(z: int) -> int:
    """One SplitMix64 output for state ``z`` (the finaliser of Steele et al. 2014)."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def draw_key(seed: int, step: int, slot: int, stream: str) -> int:
    """The 64-bit key of one image's draw: SplitMix64 chained over (seed, step, slot, stream)."""
    z = 0
    for v in (seed, step, slot, STREAMS[stream]):
        z = _splitmix(z ^ (int(v) & _MASK))
    return z


class StepDraws:
    """The keyed draws of the images in slots ``first_slot, first_slot + 1, ...`` of one step.

    A rank's micro-batch of ``n`` images asks for ``n`` draws; image ``i`` of it is slot
    ``first_slot + i`` of the global batch.
    """

    def __init__(self, seed: int, step: int, first_slot: int = 0):
        self.seed, self.step, self.first_slot = int(seed), int(step), int(first_slot)

    def keys(self, n: int, stream: str) -> list[int]:
        return [draw_key(self.seed, self.step, self.first_slot + i, stream) for i in range(n)]

    def uniform(self, n: int, stream: str) -> torch.Tensor:
        """float64 ``[n]`` in [0, 1): the top 53 bits of each image's key."""
        return torch.tensor([(k >> 11) * 2.0 ** -53 for k in self.keys(n, stream)],
                            dtype=torch.float64)

    def integers(self, n: int, high: int, stream: str) -> torch.Tensor:
        """long ``[n]`` uniform in ``{0, .., high - 1}`` (``floor(u * high)``)."""
        return (self.uniform(n, stream) * high).long().clamp(max=high - 1)

    def generators(self, n: int, stream: str) -> list[torch.Generator]:
        """One CPU generator per image, seeded by its key (for tensor draws)."""
        return [torch.Generator().manual_seed((k & 0xFFFFFFFF) ^ (k >> 32))
                for k in self.keys(n, stream)]

    def normal(self, shape: Sequence[int], stream: str = "noise") -> torch.Tensor:
        """float32 ``shape`` (``[n, ...]``) of N(0, 1), each image's from its own generator."""
        n, *rest = shape
        if n == 0:
            return torch.empty(tuple(shape))
        return torch.stack([torch.randn(rest, generator=g, dtype=torch.float32)
                            for g in self.generators(n, stream)])

    def flips(self, n: int) -> torch.Tensor:
        """bool ``[n]``: which images are flipped left-right (probability 1/2)."""
        return self.uniform(n, "flip") < 0.5

    def timesteps(self, n: int, T: int) -> torch.Tensor:
        """long ``[n]``: t ~ U{0, .., T - 1} (Ho et al. 2020, Algorithm 1)."""
        return self.integers(n, T, "timestep")


def flip_images(parts: Sequence[torch.Tensor], flip: torch.Tensor) -> list[torch.Tensor]:
    """Flip left-right the images (and their >= 3-d companions, e.g. masks) where ``flip``;
    1-d and 2-d companions (e.g. slice indices) pass unchanged."""
    return [p if p.ndim < 3 else torch.where(flip.view(-1, *[1] * (p.ndim - 1)), p.flip(-1), p)
            for p in parts]


def keyed_crops(x: torch.Tensor, size: int | None, draws: StepDraws) -> torch.Tensor:
    """A ``size x size`` crop of each image of ``x [B, C, H, W]`` at its own offset, drawn
    from ``draws`` (streams ``crop_top`` and ``crop_left``: keyed per image, so a resumed or
    multi-rank run crops the same); ``x`` itself when ``size`` is None or not smaller."""
    if size is None or size >= x.shape[-1]:
        return x
    n, span = x.shape[0], x.shape[-1] - size + 1
    tops = draws.integers(n, span, "crop_top").tolist()
    lefts = draws.integers(n, span, "crop_left").tolist()
    return torch.stack([x[i, ..., top:top + size, left:left + size]
                        for i, (top, left) in enumerate(zip(tops, lefts, strict=True))])
