"""Slice-level faithfulness (issue 12): is a slice generated "at level 20" at level 20?

A small CNN reads a 64x64 slice and predicts its slice index (0..31, the ``N`` of
``case_XXX_slice_N``: the position in the OASIS stack). Generated slices conditioned on an
index are scored by the **mean absolute error in slices** between the predicted and the
requested index. The predictor is not perfect, so real slices do not score 0 either: the
**floor** is the same error for real validate slices against their true index. A model that
reaches the floor obeys its slice condition as well as real anatomy tells its own level.

Two heads were measured on the demo data (``checkpoints/README.md``): ``"classification"``
(32 logits, cross-entropy, read by the median of the softmax: the point estimate of least
expected absolute error) and ``"regression"`` (one output, the index scaled to [-1, 1], L1
loss). At the same cost (8 epochs, ~45 CPU-seconds) the classifier reached a validate MAE of
0.75 slices and the regressor 0.88, with a noisier curve over epochs: the classifier is the
default and the shipped head.

Network (:class:`SliceRegressor`, default :class:`SliceRegressorConfig`)::

    x [B, 1, 64, 64] -> 4 x [conv3x3-GN-SiLU, maxpool 2]  16-32-64-64 ch  -> [B, 64, 4, 4]
      -> flatten (1024) -> linear 64 -> SiLU -> linear (1 | 32)

The spatial map is flattened, not averaged: the extent and position of the brain in the frame
are what tell the level. No BatchNorm and no dropout, so train and eval mode agree and a
slice's prediction does not depend on its batch.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import CheckpointError, export_safetensors, load_safetensors, load_state_strict
from ..data.layout import SLICES_PER_CASE
from ..device import get_device
from ..paths import CHECKPOINTS_DIR

__all__ = ["SLICE_HEADS", "SLICE_REGRESSOR_CHECKPOINT", "SLICE_REGRESSOR_KIND", "SliceRegressor",
           "SliceRegressorConfig", "evaluate_slice_mae", "load_slice_regressor",
           "slice_faithfulness", "train_slice_regressor"]

SLICE_REGRESSOR_KIND = "slice_regressor"  # metadata "kind" of a weights file
SLICE_REGRESSOR_CHECKPOINT = CHECKPOINTS_DIR / "slice_regressor64.safetensors"
SLICE_HEADS = ("regression", "classification")


@dataclass(frozen=True)
class SliceRegressorConfig:
    """Hyper-parameters of :class:`SliceRegressor` (the defaults are the shipped network)."""

    channels: tuple[int, ...] = (16, 32, 64, 64)  # one 2x pooling after each level
    image_size: int = 64  # the input size (the head flattens the last map)
    head: str = "classification"  # one of SLICE_HEADS (measured: checkpoints/README.md)
    hidden: int = 64  # width of the hidden linear layer
    num_slices: int = SLICES_PER_CASE  # indices 0..num_slices-1
    norm_groups: int = 4  # GroupNorm groups; must divide every channel count

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.head not in SLICE_HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {SLICE_HEADS}")
        if not self.channels or any(c % self.norm_groups for c in self.channels):
            raise ValueError(f"norm_groups={self.norm_groups} must divide every channel count "
                             f"{self.channels}")
        if self.image_size % 2 ** len(self.channels):
            raise ValueError(f"image_size={self.image_size} must be divisible by "
                             f"{2 ** len(self.channels)} = 2**levels")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "channels": list(self.channels)}


class SliceRegressor(nn.Module):
    """Slice [B, 1, S, S] in [-1, 1] -> predicted slice index (see the module docstring)."""

    def __init__(self, config: SliceRegressorConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        config = dataclasses.replace(config or SliceRegressorConfig(), **overrides)
        self.config = config
        layers: list[nn.Module] = []
        for cin, cout in zip((1, *config.channels[:-1]), config.channels, strict=True):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(config.norm_groups, cout),
                       nn.SiLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        side = config.image_size // 2 ** len(config.channels)
        out = 1 if config.head == "regression" else config.num_slices
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(config.channels[-1] * side * side,
                                                          config.hidden),
                                  nn.SiLU(), nn.Linear(config.hidden, out))

    def forward(self, x: Tensor) -> Tensor:
        """Raw outputs: [B, 1] (regression: the index scaled to [-1, 1]) or [B, 32] logits."""
        s = self.config.image_size
        if x.ndim != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != (s, s):
            raise ValueError(f"expected slices [B, 1, {s}, {s}], got {tuple(x.shape)}")
        return self.head(self.features(x))

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Predicted slice index, float [B] in [0, num_slices - 1]. Regression: the output
        scaled back (continuous). Classification: the **median** of the softmax distribution
        (the first k with P(index <= k) >= 1/2), the point estimate that minimises the expected
        absolute error, which is the metric (the argmax minimises the 0-1 loss instead)."""
        out = self(x)
        top = self.config.num_slices - 1
        if self.config.head == "classification":
            cdf = out.float().softmax(1).cumsum(1)
            return (cdf < 0.5).sum(1).clamp(max=top).float()
        return ((out[:, 0].float() + 1) * top / 2).clamp(0, top)

    def loss(self, x: Tensor, slice_index: Tensor) -> Tensor:
        """Regression: L1 of the scaled index (MAE / 15.5 slices); classification: CE."""
        out = self(x)
        if self.config.head == "classification":
            return F.cross_entropy(out, slice_index.long())
        target = slice_index.float() * 2 / (self.config.num_slices - 1) - 1
        return F.l1_loss(out[:, 0], target)


# ---------------------------------------------------------------- scoring
def _fit(images: Tensor, size: int) -> Tensor:
    x = images.detach().float().clamp(-1, 1)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return x


@torch.no_grad()
def predict_slices(model: SliceRegressor, images: Tensor, *, batch_size: int = 256) -> Tensor:
    """Predicted indices (float [N], CPU) of images [N, 1, H, W], resized to the model's size
    (antialiased bilinear, as the data layer resizes slices) when they differ."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected images [N, 1, H, W], got {tuple(images.shape)}")
    dev = next(model.parameters()).device
    out = [model.predict(_fit(images[k:k + batch_size], model.config.image_size).to(dev)).cpu()
           for k in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


def _mae(model, images: Tensor, slice_index: Tensor, batch_size: int) -> float:
    slice_index = torch.as_tensor(slice_index).long().cpu()
    if slice_index.shape != (len(images),):
        raise ValueError(f"slice_index must be [N] = [{len(images)}], got "
                         f"{tuple(slice_index.shape)}")
    pred = predict_slices(model, images, batch_size=batch_size)
    return float((pred - slice_index.float()).abs().mean())


def _validate_slices(root, image_size: int) -> tuple[Tensor, Tensor]:
    from ..data.conditional import slice_indices
    from ..data.oasis import load_split

    val = load_split("validate", root, image_size)
    images = val.images.float()[:, None] / 127.5 - 1.0 if getattr(val, "images", None) is not None \
        else torch.stack([val[i] for i in range(len(val))])
    return images, slice_indices(val)


def slice_faithfulness(images: Tensor, slice_index: Tensor, model: SliceRegressor, *,
                       real_images: Tensor | None = None, real_slice_index: Tensor | None = None,
                       data_root=None, batch_size: int = 256) -> dict:
    """Mean absolute error, in slices, between the indices ``model`` reads off ``images``
    (float [N, 1, H, W] in [-1, 1]) and the requested ``slice_index`` (long [N]), and its floor.

    The floor is the same error for ``real_images`` against their true ``real_slice_index``
    (default: every validate slice of ``data_root``, at the model's size). Returns
    ``{"generated": MAE, "real": floor MAE, "gap": generated - real, "n", "n_real"}``.
    """
    if (real_images is None) != (real_slice_index is None):
        raise ValueError("pass both real_images and real_slice_index (the floor), or neither")
    generated = _mae(model, images, slice_index, batch_size)
    if real_images is None:
        real_images, real_slice_index = _validate_slices(data_root, model.config.image_size)
    real = _mae(model, real_images, real_slice_index, batch_size)
    return {"generated": round(generated, 6), "real": round(real, 6),
            "gap": round(generated - real, 6), "n": len(images), "n_real": len(real_images)}


@torch.no_grad()
def evaluate_slice_mae(model: SliceRegressor, dataset, *, batch_size: int = 256) -> float:
    """MAE in slices of ``model`` on a dataset of ``(image [1, H, W], slice index)`` items."""
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([im for im, _ in items])
    return _mae(model, images, torch.stack([torch.as_tensor(s) for _, s in items]), batch_size)


# ---------------------------------------------------------------- training
class _WithSlices(torch.utils.data.Dataset):
    """(image, slice index) items of an OASISDataset (or ConcatDataset) of images."""

    def __init__(self, dataset) -> None:
        from ..data.conditional import slice_indices

        self.dataset, self.slices = dataset, slice_indices(dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        item = self.dataset[i]
        return (item[0] if isinstance(item, tuple | list) else item), self.slices[i]


def _command(root, image_size, epochs, batch_size, lr, head, seed, out,
             train_splits=("train",)) -> str:
    parts = ["python", "-m", "oasis_lib", "train-slice-regressor"]
    if root is not None:
        parts += ["--data", str(root) if not Path(root).is_absolute() else Path(root).name]
    parts += ["--size", str(image_size), "--epochs", str(epochs), "--batch-size",
              str(batch_size), "--lr", str(lr), "--head", head, "--seed", str(seed)]
    if tuple(train_splits) != ("train",):
        parts += ["--train-splits", ",".join(train_splits)]
    if out is not None:
        parts += ["--out", str(out) if not Path(out).is_absolute() else Path(out).name]
    return shlex.join(parts)


def train_slice_regressor(root: str | os.PathLike | None = None, *, image_size: int = 64,
                          head: str = "classification", epochs: int = 12, batch_size: int = 32,
                          lr: float = 2e-3, weight_decay: float = 1e-4, seed: int = 0,
                          out: str | os.PathLike | None = "runs/slice_regressor64.safetensors",
                          device: str | torch.device | None = None, progress: bool = True,
                          config: SliceRegressorConfig | None = None, train_set=None,
                          val_set=None, command: str | None = None,
                          train_splits: tuple[str, ...] = ("train",)) -> dict[str, Any]:
    """Train a :class:`SliceRegressor` and save its weights (fp16 safetensors); returns metrics.

    Data: the ``train_splits`` of ``root`` (:func:`oasis_lib.data.load_splits`; default the
    train split, so test stays untouched) with random horizontal flips (a flip keeps the
    level); validate is only measured. ``train_set`` / ``val_set``: datasets of ``(image [1, H,
    W], slice index)`` items used instead (tests). AdamW, one epoch of linear warm-up then
    cosine decay to 0, last partial batch dropped; the last weights are kept. The validate MAE
    is measured on the stored fp16 weights. ``seed`` seeds python, numpy and torch.

    Returns ``{"validate_mae", "history": [{"epoch", "loss", "validate_mae"}], "parameters",
    "train_seconds", "images_per_second", "command", "out", ...}``.
    """
    from .fitting import check_counts, fit_epochs, fp16_state

    check_counts(epochs=epochs, batch_size=batch_size)
    config = dataclasses.replace(config or SliceRegressorConfig(), image_size=image_size,
                                 head=head)  # ValueError for an unknown head
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the legacy global stream, as the segmenter)
    torch.manual_seed(seed)
    if train_set is None or val_set is None:
        from ..data.oasis import load_split, load_splits

        if train_set is None:
            train_set = _WithSlices(load_splits(root, image_size, augment=True,
                                                train_splits=train_splits)[0])
        if val_set is None:
            val_set = _WithSlices(load_split("validate", root, image_size))
    dev = get_device(device)
    model = SliceRegressor(config).to(dev)
    history, seconds = fit_epochs(
        model, model.loss, train_set, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, seed=seed, device=dev, progress=progress,
        desc="slice regressor epochs",
        measure=lambda net: {"validate_mae": round(evaluate_slice_mae(net, val_set), 4)},
        postfix=lambda r: {"mae": f"{r['validate_mae']:.2f}"})
    total = epochs * (len(train_set) // batch_size)
    state = fp16_state(model)  # the stored weights: measure exactly what the loader gives
    mae = round(evaluate_slice_mae(model.eval(), val_set), 4)
    metrics: dict[str, Any] = {
        "validate_mae": mae, "head": head, "history": history,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(seconds, 1),
        "images_per_second": round(total * batch_size / seconds, 1),
        "train_slices": len(train_set), "validate_slices": len(val_set),
        "command": command or _command(root, image_size, epochs, batch_size, lr, head, seed, out,
                                       train_splits),
        "out": None if out is None else str(out)}
    if out is not None:
        meta = {"kind": SLICE_REGRESSOR_KIND, "slice_regressor": config.to_dict(),
                "image_size": image_size, "validate_mae": mae,
                "training": {"epochs": epochs, "batch_size": batch_size, "lr": lr,
                             "weight_decay": weight_decay, "seed": seed,
                             "train_seconds": metrics["train_seconds"],
                             "train_splits": list(train_splits),
                             "train_slices": len(train_set), "validate_slices": len(val_set)},
                "command": metrics["command"]}
        export_safetensors(state, out, config=meta)
    return metrics


def load_slice_regressor(path: str | os.PathLike | None = None, *,
                         device: str | torch.device | None = None) -> SliceRegressor:
    """The slice regressor at ``path`` (None: the shipped :data:`SLICE_REGRESSOR_CHECKPOINT`),
    fp32, eval mode, on ``device``; ``model.metadata`` keeps the file's metadata. A missing
    file, another kind of weights or a config that does not match raise CheckpointError."""
    path = Path(path) if path is not None else SLICE_REGRESSOR_CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"slice regressor weights not found: {path}; expected a "
                              "safetensors file written by `python -m oasis_lib "
                              "train-slice-regressor --out FILE`")
    state, meta = load_safetensors(path)
    if meta.get("kind") != SLICE_REGRESSOR_KIND:
        raise CheckpointError(f"{path} is not a slice regressor: expected metadata with "
                              f"kind={SLICE_REGRESSOR_KIND!r} (as written by "
                              f"train_slice_regressor), found kind={meta.get('kind')!r}")
    try:
        config = SliceRegressorConfig(**meta["slice_regressor"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid slice regressor config ({err})") from err
    model = SliceRegressor(config)
    load_state_strict(model, state, source=str(path))
    model.metadata = meta
    return model.to(get_device(device)).eval()
