"""Latent diffusion data: the training and validate slices as cached, scaled latents.

A latent run (``TrainConfig.autoencoder`` set) trains on ``z = scale_factor * E(x)`` instead of
the slices. The autoencoder is frozen, so each slice's latent is computed once
(:func:`oasis_lib.data.latent_cache.cached_latents`: the posterior mean, on disk, keyed by the
autoencoder's content hash and the data manifest) and the run reads tensors from then on.

The scale factor (LDM's ``scale_by_std``, Rombach et al. 2022 sec. 4.3.2 and appendix D.1) is
``1 / std`` of the training latents. Without it every intermediate SNR of the schedule, made for
unit-variance data, would be multiplied by ``Var(z)`` (``x_T`` is noise either way, since
``sqrt(alpha_bar_T)`` is tiny). It is computed once and stored in the run's config
(``latent_scale_factor``), so a resumed run and an exported model use the very same number.
Horizontal flips are not applied to latents (a flipped latent is not the latent of the flipped
slice); the run's ``hflip`` is ignored in latent space.

Under torchrun rank 0 encodes and writes the cache while the other ranks wait, then they read
it (:func:`rank_zero_latents`).
"""

from __future__ import annotations

from torch.utils.data import TensorDataset

from ..data.latent_cache import cached_latents
from .distributed import DistContext, barrier


def latent_datasets(pipeline, config, train_set, val_set, *, progress: bool = False):
    """``(train, validate)`` as :class:`TensorDataset` of model-space latents (scaled), and
    the scale factor; sets ``config.latent_scale_factor`` and ``pipeline.scale_factor``."""
    ae = pipeline.autoencoder
    train = cached_latents(ae, train_set, config.latent_cache_dir, progress=progress).latents
    val = cached_latents(ae, val_set, config.latent_cache_dir, progress=progress).latents
    if config.latent_scale_factor is None:
        config.latent_scale_factor = float(1.0 / train.double().std())
    pipeline.scale_factor = config.latent_scale_factor
    s = config.latent_scale_factor
    return TensorDataset(train * s), TensorDataset(val * s), s


def rank_zero_latents(pipeline, config, train_set, val_set, dist: DistContext, *,
                      progress: bool = False):
    """:func:`latent_datasets` under torchrun: rank 0 encodes and writes the latent cache, the
    other ranks wait at a barrier, then read it (every rank: ``(train, validate)``)."""
    if not dist.is_main:
        barrier(dist, "waiting for rank 0's latent cache")
    train, val, _ = latent_datasets(pipeline, config, train_set, val_set,
                                    progress=progress and dist.is_main)
    if dist.is_main:
        barrier(dist, "latent cache written")
    return train, val
