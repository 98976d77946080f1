"""Real slices as the reference of every sample metric, with their segmenter outputs.

Two sets, decided by the splits the diffusion model trained on (its config's
``train_splits``; there is no default, so no caller scores a model against a split it learned
from by accident):

- *train*: the slices of ``train_splits``, what the model learned from;
- *held out*: the slices of subjects it never trained on. That is the test split when the model
  did not train on it (never used for training or for choosing the checkpoint), else the
  validate split (never trained on, but it chose ``best.pt``).
  :attr:`RealReference.held_out_split` names it.

The sample metrics (:mod:`~oasis_lib.evaluation.sample_metrics`) score the samples against
the held-out slices, and their floor is the same metric for as many train slices.

The reference is computed once per (data root, image size, train splits, segmenter) and cached,
so that a notebook or a benchmark scoring several sample sets segments the real slices once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..data import (
    check_train_splits,
    held_out_split,
    load_split,
    load_splits,
    resolve_data_root,
)
from .tissue import dice_per_class, tissue_fractions


@dataclass
class RealReference:
    """Real slices at one image size with their segmenter outputs (cached between calls)."""

    train: Tensor  # float32 [N, 1, H, W] in [-1, 1]: what the diffusion model learned from
    held_out: Tensor  # float32 [V, 1, H, W]: subjects it never trained on (held_out_split)
    held_out_masks: Tensor  # long [V, H, W]: ground truth
    train_out: dict  # features [N, D] float64, masks [N, H, W] predicted, fractions [N, 3]
    held_out_out: dict
    dice: list[float]  # segmenter Dice per class on held_out (background, CSF, grey, white)
    segmenter: object  # the segmenter these outputs came from (the cache checks identity)
    train_splits: tuple[str, ...]  # the splits in `train`
    held_out_split: str  # the split in `held_out`: "test" unless the model trained on it


_REFERENCES: dict[tuple, RealReference] = {}
_CACHE_SIZE = 2


@torch.no_grad()
def segment(segmenter, images: Tensor, *, batch_size: int = 64, desc: str | None = None) -> dict:
    """Segmenter features (float64 [N, D]), predicted masks (long [N, H, W]) and tissue
    fractions (float64 [N, 3]) of images [N, 1, H, W]; images are resized to the segmenter's
    training size when it differs and the masks resized back (nearest). ``desc``: show a
    progress bar with this label."""
    device = next(segmenter.parameters()).device
    size = getattr(getattr(segmenter, "config", None), "image_size", None)
    feats, masks = [], []
    for k in tqdm(range(0, len(images), batch_size), desc=desc, disable=desc is None,
                  leave=False):
        x = images[k:k + batch_size].float().clamp(-1, 1).to(device)
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        feats.append(segmenter.features(x).double().cpu())
        m = segmenter.predict(x).cpu()
        if m.shape[-2:] != images.shape[-2:]:
            m = F.interpolate(m[:, None].float(), size=images.shape[-2:], mode="nearest")[:, 0]
        masks.append(m.long())
    masks_t = torch.cat(masks)
    return {"features": torch.cat(feats).numpy(), "masks": masks_t,
            "fractions": tissue_fractions(masks_t).double().numpy()}


def _stack(datasets) -> tuple[Tensor, Tensor]:
    images = torch.cat([d.images for d in datasets]).float()[:, None] / 127.5 - 1.0
    return images, torch.cat([d.masks for d in datasets]).long()


def real_reference(segmenter, image_size: int, *, train_splits, data_root=None,
                   batch_size: int = 64, progress: bool = False) -> RealReference:
    """The training slices and the held-out slices at ``image_size``, with their segmenter
    outputs; cached per (data root, image size, train splits, segmenter object).

    Args:
        train_splits: the splits the diffusion model trained on, e.g. ``("train",)``; pass the
            model's own ``pipe.config.train_splits``. They form ``train``; the held-out split
            is :func:`~oasis_lib.data.layout.held_out_split` of them: test unless the model
            trained on it, else validate.
        data_root: the OASIS folders (None: ``$OASIS_DATA`` or the demo data).
        progress: show a progress bar while segmenting."""
    train_splits = check_train_splits(train_splits)
    held_out = held_out_split(train_splits)
    root = resolve_data_root(data_root)
    key = (str(Path(root).resolve()), int(image_size), train_splits, id(segmenter))
    ref = _REFERENCES.get(key)
    if ref is not None and ref.segmenter is segmenter:
        return ref
    train_set, _ = load_splits(root, image_size, with_masks=True, augment=False,
                               train_splits=train_splits)
    train, _ = _stack(train_set.datasets)
    held, held_masks = _stack([load_split(held_out, root, image_size, with_masks=True,
                                          augment=False)])

    def label(split: str) -> str | None:  # progress-bar label; None: no bar
        return f"segmenting {split} slices" if progress else None

    train_out = segment(segmenter, train, batch_size=batch_size, desc=label("train"))
    held_out_out = segment(segmenter, held, batch_size=batch_size, desc=label(held_out))
    dice = dice_per_class(held_out_out["masks"], held_masks).tolist()
    ref = RealReference(train, held, held_masks, train_out, held_out_out, dice, segmenter,
                        train_splits, held_out)
    while len(_REFERENCES) >= _CACHE_SIZE:  # drop the oldest (dicts keep insertion order)
        _REFERENCES.pop(next(iter(_REFERENCES)))
    _REFERENCES[key] = ref
    return ref
