"""Real slices as the reference of every sample metric, with their segmenter outputs.

Two sets: *train*, the slices the diffusion model learned from (its ``train_splits``), and the
*held-out* slices, of subjects it never trained on: the test split when the model did not
train on it (never used for training or for choosing the checkpoint), else the validate split
(which chose ``best.pt``, so numbers against it are not fully held out). For historical
reasons the held-out set's fields are named ``validate*``; :attr:`RealReference.held_out`
names the split they hold.

The reference is computed once per (data root, image size, segmenter) and cached, so that a
notebook or a benchmark scoring several sample sets segments the real slices once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..data import (
    SEED_TRAIN_SPLITS,
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
    validate: Tensor  # float32 [V, 1, H, W]: held-out subjects (the split named by held_out)
    validate_masks: Tensor  # long [V, H, W]: ground truth
    train_out: dict  # features [N, D] float64, masks [N, H, W] predicted, fractions [N, 3]
    validate_out: dict
    dice: list[float]  # segmenter Dice per class on validate (background, CSF, grey, white)
    segmenter: object  # the segmenter these outputs came from (the cache checks identity)
    train_splits: tuple[str, ...] = ("train", "test")  # the splits in `train`
    held_out: str = "validate"  # the split in `validate`: "test" unless the model trained on it


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


def real_reference(segmenter, image_size: int, *, data_root=None,
                   train_splits=SEED_TRAIN_SPLITS, batch_size: int = 64,
                   progress: bool = False) -> RealReference:
    """The training slices (``train_splits``, those the diffusion model learned from) and the
    held-out slices (:func:`~oasis_lib.data.layout.held_out_split`: test unless the model
    trained on it, else validate) at ``image_size``, with their segmenter outputs; cached per
    (data root, image size, train splits, segmenter object). The default ``train_splits``, the
    seed's train + test, never holds out a split the model trained on, whatever the model."""
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
    validate, val_masks = _stack([load_split(held_out, root, image_size, with_masks=True,
                                             augment=False)])

    def label(split: str) -> str | None:  # progress-bar label; None: no bar
        return f"segmenting {split} slices" if progress else None

    train_out = segment(segmenter, train, batch_size=batch_size, desc=label("train"))
    val_out = segment(segmenter, validate, batch_size=batch_size, desc=label(held_out))
    dice = dice_per_class(val_out["masks"], val_masks).tolist()
    ref = RealReference(train, validate, val_masks, train_out, val_out, dice, segmenter,
                        train_splits, held_out)
    while len(_REFERENCES) >= _CACHE_SIZE:  # drop the oldest (dicts keep insertion order)
        _REFERENCES.pop(next(iter(_REFERENCES)))
    _REFERENCES[key] = ref
    return ref
