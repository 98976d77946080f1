"""A small tissue segmenter for OASIS slices: the evaluation network of generated samples.

``TissueSegmenter`` maps an image ``[B, 1, H, W]`` in [-1, 1] to logits ``[B, 4, H, W]`` over
background, CSF, grey matter and white matter (the classes of the OASIS masks). It is a plain
U-Net (Ronneberger et al. 2015) without time input, with every convolution followed by GroupNorm
and SiLU::

    x -> enc 0: 2 x [conv3x3-GN-SiLU]   8 ch, 64x64   -> maxpool
         enc 1: 2 x [conv3x3-GN-SiLU]  16 ch, 32x32   -> maxpool
         enc 2: 2 x [conv3x3-GN-SiLU]  32 ch, 16x16   -> maxpool      (pooled into features)
         enc 3: 2 x [conv3x3-GN-SiLU] 128 ch,  8x8    (bottleneck)    (pooled into features)
         dec 2: upsample x2 (nearest), cat enc 2, 2 x [conv3x3-GN-SiLU]  32 ch
         dec 1: upsample x2 (nearest), cat enc 1, 2 x [conv3x3-GN-SiLU]  16 ch
         dec 0: upsample x2 (nearest), cat enc 0, 2 x [conv3x3-GN-SiLU]   8 ch -> conv1x1 -> 4

with the default :class:`SegmenterConfig` (channels 8-16-32-128, 270,540 parameters). The
high-resolution levels are kept narrow because that is where a U-Net's cost sits: 16-32-64-128
(488,468 parameters) trained about 3x slower on the project's shared 2-core CPU.

It serves two purposes in the evaluation of generated slices (issue 6):

* **a feature space** for the Fréchet distance and KID: :meth:`TissueSegmenter.features` is the
  global average of the bottleneck (128 channels) concatenated with the global average of the
  level above it (32 channels), a fixed ``float32 [B, 160]`` vector. A network trained on brain
  slices sees tissue layout and contrast, which Inception features of natural images do not;
* **tissue fractions**: :meth:`TissueSegmenter.predict` gives class masks, and
  :func:`tissue_fractions` the CSF/grey/white share of the brain in each.

The network has no dropout and no BatchNorm (GroupNorm normalises each image on its own), so
train and eval mode compute the same function and an image's features do not depend on the
other images of its batch. ``features`` and ``predict`` run under ``torch.no_grad``.

The shipped weights :data:`SEGMENTER_CHECKPOINT` were trained by :func:`train_segmenter` on the
offline demo dataset at 64x64 (``python -m oasis_lib train-segmenter``; see
``checkpoints/README.md`` for the command and the validate Dice).
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
from torch import nn

from ..checkpoint import CheckpointError, export_safetensors, load_safetensors, load_state_strict
from ..data.layout import CLASS_NAMES, TISSUE_NAMES
from ..device import get_device
from ..paths import SEGMENTER_CHECKPOINT
from .tissue import dice_counts, dice_from_counts, dice_per_class, tissue_fractions

__all__ = ["SEGMENTER_CHECKPOINT", "SEGMENTER_KIND", "TISSUE_NAMES", "SegmenterConfig",
           "TissueSegmenter", "dice_per_class", "evaluate_dice", "load_segmenter",
           "tissue_fractions", "train_segmenter"]

SEGMENTER_KIND = "tissue_segmenter"  # metadata "kind" of a segmenter weights file


@dataclass(frozen=True)
class SegmenterConfig:
    """Hyper-parameters of :class:`TissueSegmenter` (the defaults are the shipped network)."""

    # channels per level (level i at size / 2**i): narrow at 64x64 and 32x32, where the cost of a
    # U-Net sits, wide at the bottleneck, whose average is the evaluation feature vector
    channels: tuple[int, ...] = (8, 16, 32, 128)
    image_size: int = 64  # the size it is trained and evaluated at (the net is convolutional)
    in_channels: int = 1  # grey MRI
    num_classes: int = 4  # background, CSF, grey matter, white matter
    norm_groups: int = 4  # GroupNorm groups; must divide every channel count
    feature_levels: int = 2  # the deepest levels whose global averages make up `features`

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if len(self.channels) < 2:
            raise ValueError(f"channels must list at least 2 levels, got {self.channels!r}")
        if any(c % self.norm_groups for c in self.channels):
            raise ValueError(f"norm_groups={self.norm_groups} must divide every channel count "
                             f"{self.channels}")
        if not 1 <= self.feature_levels <= len(self.channels):
            raise ValueError(f"feature_levels must be in 1..{len(self.channels)}, "
                             f"got {self.feature_levels!r}")
        if self.image_size % self.factor:
            raise ValueError(f"image_size={self.image_size} must be divisible by {self.factor} "
                             f"= 2**(levels-1) for {len(self.channels)} levels")

    @property
    def factor(self) -> int:
        """Input sizes must be multiples of this (one 2x pooling between levels)."""
        return 2 ** (len(self.channels) - 1)

    @property
    def feature_dim(self) -> int:
        """Length D of :meth:`TissueSegmenter.features` (160 for the defaults: 128 + 32)."""
        return sum(self.channels[-self.feature_levels:])

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "channels": list(self.channels)}


class ConvBlock(nn.Sequential):
    """Two ``conv3x3 - GroupNorm - SiLU`` layers."""

    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(groups, cout),
                         nn.SiLU())


class TissueSegmenter(nn.Module):
    """U-Net tissue segmenter: ``[B, 1, H, W]`` in [-1, 1] -> logits ``[B, 4, H, W]``.

    Args:
        config: a :class:`SegmenterConfig`; None means the defaults. Keyword overrides
            (``TissueSegmenter(channels=(8, 16, 32, 64))``) replace single fields.

    H and W must be multiples of ``config.factor`` (8 for the defaults).
    """

    def __init__(self, config: SegmenterConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        config = dataclasses.replace(config or SegmenterConfig(), **overrides)
        self.config = config
        ch, g = config.channels, config.norm_groups
        self.down = nn.ModuleList(
            ConvBlock(cin, cout, g) for cin, cout in zip((config.in_channels, *ch[:-1]), ch,
                                                         strict=True))
        self.up = nn.ModuleList(ConvBlock(ch[i + 1] + ch[i], ch[i], g)
                                for i in reversed(range(len(ch) - 1)))
        self.head = nn.Conv2d(ch[0], config.num_classes, 1)

    def _check(self, x: torch.Tensor) -> None:
        c, f = self.config, self.config.factor
        if x.ndim != 4 or x.shape[1] != c.in_channels:
            raise ValueError(f"expected images [B, {c.in_channels}, H, W], got {tuple(x.shape)}")
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be a multiple of {f} "
                             f"({len(c.channels)} levels); resize to {c.image_size}x{c.image_size}")

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every encoder level, finest first (the last one is the bottleneck)."""
        self._check(x)
        levels = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            levels.append(x)
        return levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes, H, W]``."""
        *skips, h = self.encode(x)
        for block, skip in zip(self.up, reversed(skips), strict=True):
            h = block(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), skip], 1))
        return self.head(h)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The evaluation feature vector ``float32 [B, D]``, ``D = config.feature_dim`` (160).

        The global average over H and W of the bottleneck (128 channels at 8x8 for 64x64
        input) followed by that of the level above it (32 channels at 16x16): the last
        ``feature_levels`` encoder levels, deepest first. Feed images the size the network was
        trained at (``config.image_size``) and clamped to [-1, 1].
        """
        levels = self.encode(x)[-self.config.feature_levels:]
        return torch.cat([h.float().mean(dim=(2, 3)) for h in reversed(levels)], dim=1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class masks ``long [B, H, W]`` (argmax of the logits): 0 background .. 3 white."""
        return self(x).argmax(dim=1)


# ---------------------------------------------------------------- losses
def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """``1 - soft Dice`` of the softmax probabilities, averaged over the tissue classes 1..3."""
    probs = logits.float().softmax(1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (probs * onehot).sum((0, 2, 3))
    sizes = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1 - ((2 * inter + eps) / (sizes + eps)).mean()


@torch.no_grad()
def evaluate_dice(model: TissueSegmenter, dataset, *, batch_size: int = 64,
                  device: str | torch.device | None = None) -> torch.Tensor:
    """Dice per class (:func:`~oasis_lib.evaluation.tissue.dice_per_class`, pooled over every
    pixel) of ``model`` on a dataset of ``(image [1, H, W], mask [H, W])`` items."""
    dev = get_device(device) if device is not None else next(model.parameters()).device
    n = model.config.num_classes
    both, sizes = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        x = torch.stack([im for im, _ in items]).to(dev)
        target = torch.stack([m for _, m in items])
        b, s = dice_counts(model.predict(x).cpu(), target, n)
        both += b
        sizes += s
    return dice_from_counts(both, sizes)


# ---------------------------------------------------------------- training
def _command(root, image_size: int, epochs: int, batch_size: int, lr: float, seed: int,
             out, train_splits=("train",)) -> str:
    """The CLI command equivalent to a call (machine-independent: absolute paths shortened)."""
    parts = ["python", "-m", "oasis_lib", "train-segmenter"]
    if root is not None:
        parts += ["--data", str(root) if not Path(root).is_absolute() else Path(root).name]
    if tuple(train_splits) != ("train",):
        parts += ["--train-splits", ",".join(train_splits)]
    parts += ["--size", str(image_size), "--epochs", str(epochs), "--batch-size",
              str(batch_size), "--lr", str(lr), "--seed", str(seed)]
    if out is not None:
        parts += ["--out", str(out) if not Path(out).is_absolute() else Path(out).name]
    return shlex.join(parts)


def train_segmenter(root: str | os.PathLike | None = None, *, image_size: int = 64,
                    epochs: int = 20, batch_size: int = 32, lr: float = 2e-3,
                    weight_decay: float = 1e-4, dice_weight: float = 1.0, seed: int = 0,
                    out: str | os.PathLike | None = "runs/segmenter64.safetensors",
                    device: str | torch.device | None = None, progress: bool = True,
                    config: SegmenterConfig | None = None, train_set=None, val_set=None,
                    train_splits: tuple[str, ...] = ("train",),
                    command: str | None = None) -> dict[str, Any]:
    """Train a :class:`TissueSegmenter` and save its weights; returns the metrics.

    Loss: cross-entropy plus ``dice_weight`` times the soft Dice loss of the tissue classes
    (:func:`soft_dice_loss`; 0 turns it off). AdamW, linear warm-up over the first epoch then
    cosine decay to zero, batches of ``batch_size`` (last partial batch dropped), random
    horizontal flips (the data layer's joint image/mask transform). After the last epoch the
    weights are rounded to fp16 (the stored format), evaluated on the validate split and written
    to ``out`` (safetensors, with config, Dice per class and the command in the metadata;
    ``None`` writes nothing). The last weights are kept, not the best: the validate split is
    only measured, never used to choose, so its Dice is an honest estimate.

    Args:
        root: OASIS data root (default ``$OASIS_DATA``, else the demo dataset); trains on
            ``train_splits`` (:func:`oasis_lib.data.load_splits`; default ``("train",)``, so the
            test split stays unseen by the evaluation's instrument too; the shipped segmenter
            was trained so, its metadata says ``train_splits: ["train"]``), validates on
            validate. Ignored for the sets given as ``train_set`` / ``val_set``.
        train_set, val_set: datasets of ``(image [1, H, W] in [-1, 1], mask long [H, W])``
            to use instead of the data root (tests, other data).
        seed: seeds python, numpy and torch (initial weights, batch order, flips): a fixed seed
            gives the same weights on the same machine, CPU and thread count.
        command: the command recorded in the metadata (default: the CLI equivalent).

    Returns:
        ``{"dice": {class: Dice}, "history": [{"epoch", "loss", "dice"}...], "parameters",
        "train_seconds", "images_per_second", "out", "command", ...}``.
    """
    from .fitting import check_counts, fit_epochs, fp16_state

    check_counts(epochs=epochs, batch_size=batch_size)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the legacy global stream, as training.seed_everything)
    torch.manual_seed(seed)
    if train_set is None or val_set is None:
        from ..data.oasis import load_splits

        train_default, val_default = load_splits(root, image_size, with_masks=True, augment=True,
                                                 train_splits=train_splits)
        train_set = train_default if train_set is None else train_set
        val_set = val_default if val_set is None else val_set
    dev = get_device(device)
    config = dataclasses.replace(config or SegmenterConfig(), image_size=image_size)
    model = TissueSegmenter(config).to(dev)

    def loss(x, mask):
        logits = model(x)
        value = F.cross_entropy(logits, mask)
        return value + dice_weight * soft_dice_loss(logits, mask) if dice_weight else value

    def measure(net) -> dict[str, Any]:
        return {"dice": [round(float(d), 4) for d in evaluate_dice(net, val_set)]}

    history, seconds = fit_epochs(
        model, loss, train_set, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, seed=seed, device=dev, measure=measure, progress=progress,
        desc="segmenter epochs", batch_bar=True,
        postfix=lambda r: {"dice": "/".join(f"{d:.3f}" for d in r["dice"][1:])})
    steps_per_epoch = len(train_set) // batch_size
    state = fp16_state(model)  # the stored weights: measure exactly what load_segmenter gives
    dice = evaluate_dice(model.eval(), val_set)
    metrics: dict[str, Any] = {
        "dice": {n: round(float(d), 4) for n, d in zip(CLASS_NAMES, dice, strict=True)},
        "history": history, "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(seconds, 1),
        "images_per_second": round(epochs * steps_per_epoch * batch_size / seconds, 1),
        "train_slices": len(train_set), "validate_slices": len(val_set),
        "command": command or _command(root, image_size, epochs, batch_size, lr, seed, out,
                                       train_splits),
        "out": None if out is None else str(out),
    }
    if out is not None:
        meta = {"kind": SEGMENTER_KIND, "segmenter": config.to_dict(), "image_size": image_size,
                "classes": list(CLASS_NAMES), "validate_dice": metrics["dice"],
                "training": {"epochs": epochs, "batch_size": batch_size, "lr": lr,
                             "weight_decay": weight_decay, "dice_weight": dice_weight,
                             "seed": seed, "train_seconds": metrics["train_seconds"],
                             "train_slices": len(train_set),
                             "train_splits": list(train_splits),
                             "validate_slices": len(val_set)},
                "command": metrics["command"]}
        export_safetensors(state, out, config=meta)
    return metrics


# ---------------------------------------------------------------- loading
def load_segmenter(path: str | os.PathLike | None = None, *,
                   device: str | torch.device | None = None) -> TissueSegmenter:
    """The segmenter stored at ``path`` (None: the shipped :data:`SEGMENTER_CHECKPOINT`),
    in eval mode, fp32, on ``device`` (:func:`oasis_lib.device.get_device`).

    Raises :class:`oasis_lib.checkpoint.CheckpointError` naming the path when the file is
    missing, unreadable, not a segmenter written by :func:`train_segmenter` (e.g. a diffusion
    checkpoint), or does not match the architecture in its metadata. The metadata is kept as
    ``model.metadata``.
    """
    path = Path(path) if path is not None else SEGMENTER_CHECKPOINT
    if not path.is_file():
        hint = (" (the shipped weights; reinstall from a source checkout)"
                if path == SEGMENTER_CHECKPOINT else "")
        raise CheckpointError(f"segmenter weights not found: {path}{hint}; expected a "
                              "safetensors file written by `python -m oasis_lib "
                              "train-segmenter --out FILE`")
    state, meta = load_safetensors(path)
    if meta.get("kind") != SEGMENTER_KIND:
        found = "a diffusion model config" if "preset" in meta else f"keys {sorted(meta)}"
        raise CheckpointError(f"{path} is not a tissue segmenter: expected metadata with "
                              f"kind={SEGMENTER_KIND!r} (as written by train_segmenter), "
                              f"found {found}")
    try:
        config = SegmenterConfig(**meta["segmenter"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid segmenter config in the metadata ({err})") from err
    model = TissueSegmenter(config)
    load_state_strict(model, state, source=str(path))
    model.metadata = meta
    return model.to(get_device(device)).eval()
