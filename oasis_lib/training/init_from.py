"""Warm start (``TrainConfig.init_from``, ``train --init-from FILE``): a fresh run's U-Net
begins at the weights of a trained model instead of a random initialisation.

The typical use (issue 12): a conditional model fine-tuned from an unconditional one. The
conditional U-Net differs from the unconditional one in two places only, and both are set so
that, right after the warm start, it computes *exactly* the unconditional model's output, for
every condition and for the null condition:

* ``conv_in.weight`` ``[O, C + K, 3, 3]``: the mask's K encoded channels are concatenated after
  the C data channels of x_t (:mod:`oasis_lib.models.condition_encoding`). The first C input
  channels are copied from FILE's ``[O, C, 3, 3]``; the K new ones are set to zero, so whatever
  mask is given it adds nothing to ``conv_in(x)`` until training moves those weights;
* the slice embedding (``slice_embed.*``), which FILE lacks: it is left as constructed, and its
  last layer is zero by construction (:class:`~oasis_lib.models.condition_encoding.
  SliceEmbedding`), so it adds a zero vector to the time embedding for every token. This is
  checked, not assumed.

This is the zero-initialised-branch idea of ControlNet (Zhang et al. 2023, sec. 3.1, "zero
convolution") applied to the input layer. Every other key must be present with the same shape;
anything else that differs raises :class:`InitFromError` naming the keys (another preset, a
pixel file for a latent run, ...).

A latent FILE (an export carrying ``autoencoder.*`` weights, or a latent run's ``.pt``) also
fixes the space the run trains in: its autoencoder and scale factor (Rombach et al. 2022,
sec. 4.3.2) are what its U-Net was trained on, so the run uses them. Without ``autoencoder``
the run takes FILE's (``config.autoencoder = FILE``); with one, it must hold the same weights;
without ``latent_scale_factor`` the run takes FILE's; with one, it must be the same number.

The weights are read once at a fresh start (:meth:`Trainer.build`) and loaded before the EMA
copy is made, so the EMA starts from them too. A resume never re-applies them: it continues
from the run's own ``last.pt``. ``init_from`` stays in the run's config, hence in every
checkpoint and export.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import CheckpointError, load_state_strict

logger = logging.getLogger(__name__)

__all__ = ["InitFromError", "InitSource", "read_init_source", "resolve_init_config",
           "warm_start_state"]

INPUT_CONV = "conv_in.weight"  # the layer whose extra input channels are zeroed
ZERO_MODULES = ("slice_embed.",)  # new modules whose output is zero by construction
RECIPE_FIELDS = ("schedule", "timesteps", "prediction_type", "zero_terminal_snr")


class InitFromError(CheckpointError):
    """``init_from`` names a file that does not fit the new run."""


@dataclass
class InitSource:
    """What a warm start reads from FILE: its U-Net weights (EMA for a ``.pt``), its run
    config, and for a latent model its autoencoder and scale factor."""

    path: Path
    state: dict[str, torch.Tensor]
    config: object  # the file's TrainConfig
    autoencoder: nn.Module | None
    scale_factor: float | None


def read_init_source(path) -> InitSource:
    """Read ``path`` (a ``.safetensors`` export or a training ``.pt``; the EMA weights) with
    :func:`oasis_lib.pretrained.load_model`, whose errors name the file."""
    from ..pretrained import load_model  # (pretrained reads files; imported when used)

    path = Path(path)
    if not path.is_file():
        raise InitFromError(f"init_from: no model file at {path}")
    pipe = load_model(path, device="cpu", use_ema=True)
    latent = pipe.autoencoder is not None
    return InitSource(path=path, state=pipe.model.state_dict(), config=pipe.config,
                      autoencoder=pipe.autoencoder if latent else None,
                      scale_factor=float(pipe.scale_factor) if latent else None)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    """The same autoencoder: one config, every tensor equal at fp16 (what exports store)."""
    if a.config.to_dict() != b.config.to_dict():
        return False
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        torch.equal(sa[k].half(), sb[k].half()) for k in sa if k != "scale_factor")


def resolve_init_config(config, source: InitSource) -> None:
    """Give a latent run FILE's autoencoder and scale factor (in place), or refuse a conflict
    (module docstring); refuse a pixel FILE for a latent run and warn when the diffusion
    recipe (schedule, T, prediction type) differs, since the weights then predict another
    quantity."""
    from ..pretrained_autoencoder import load_autoencoder

    path = source.path
    size = source.config.image_size
    if source.autoencoder is not None and config.image_size != size:
        raise InitFromError(f"--init-from {path} is a latent model of {size}x{size} slices, but "
                            f"the run's image size is {config.image_size} (--image-size or the "
                            f"preset's); pass --image-size {size}, or a model file trained at "
                            f"{config.image_size}")
    if source.autoencoder is None:
        if config.autoencoder is not None:
            raise InitFromError(f"init_from {path} is a pixel-space model, but the run is latent "
                                f"(autoencoder {config.autoencoder}); give a latent model file "
                                "or drop --autoencoder")
    elif config.autoencoder is None:
        # a run's .pt names its autoencoder; an export carries it (load_autoencoder reads it)
        config.autoencoder = source.config.autoencoder or str(path)
    elif not _same_weights(load_autoencoder(config.autoencoder, device="cpu"),
                           source.autoencoder):
        raise InitFromError(f"init_from {path} was trained on another autoencoder than the "
                            f"run's ({config.autoencoder}); drop --autoencoder to use the "
                            "file's, or give the file's own autoencoder")
    if source.scale_factor is not None:
        if config.latent_scale_factor is None:
            config.latent_scale_factor = source.scale_factor
        elif not math.isclose(config.latent_scale_factor, source.scale_factor, rel_tol=1e-6):
            raise InitFromError(
                f"init_from {path} has latent scale factor {source.scale_factor:.6g}, the "
                f"run {config.latent_scale_factor:.6g}; leave latent_scale_factor unset to "
                "take the file's")
    check_init_fits(config, source)
    mine, theirs = config.diffusion, source.config.diffusion
    differ = [f"{f} {getattr(theirs, f)!r} -> {getattr(mine, f)!r}" for f in RECIPE_FIELDS
              if getattr(mine, f) != getattr(theirs, f)]
    if differ and (str(path), tuple(differ)) not in _WARNED:  # (resolved twice: CLI, Trainer)
        _WARNED.add((str(path), tuple(differ)))
        logger.warning("init_from %s: the diffusion recipe differs (%s); the warm start "
                       "predicts another target at first", path, ", ".join(differ))


_WARNED: set[tuple[str, tuple[str, ...]]] = set()  # recipe warnings already given
#: The run fields that decide the U-Net's layout, with the flag that sets each.
LAYOUT_FLAGS = {"arch": "--arch", "preset": "--preset", "image_size": "--image-size"}


def check_init_fits(config, source: InitSource) -> None:
    """Refuse, in one short line, a FILE whose U-Net cannot start the run's: a conditional
    FILE for a run without its condition ("add --condition ..."), or another layout (the
    differing preset / arch / size named, with the counts of the keys that differ)."""
    from ..models.conditioning import parse_condition
    from ..models.factory import build_model

    path, theirs = source.path, source.config
    if {f.name for f in parse_condition(theirs.condition)} - {
            f.name for f in parse_condition(config.condition)}:
        raise InitFromError(
            f"init_from {path} is a conditional model (condition {theirs.condition!r}) and the "
            + ("run is not conditional" if config.condition == "none"
               else f"run's condition is {config.condition!r}")
            + f": add --condition {theirs.condition} to fine-tune it, or give an unconditional "
            "model file")
    if config.arch == "external":
        return  # the caller's network: warm_start_state compares it with the file
    shape = None if source.autoencoder is None else source.autoencoder.config.latent_shape(
        config.image_size)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        own = {k: tuple(v.shape) for k, v in build_model(config, latent_shape=shape)
               .state_dict().items()}
    state = {k: tuple(v.shape) for k, v in source.state.items()}
    missing = [k for k in own if k not in state and not k.startswith(ZERO_MODULES)]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and own[k] != state[k] and not (
        k == INPUT_CONV and own[k][0] == state[k][0] and own[k][1] > state[k][1])]
    if not (missing or unexpected or shapes):
        return
    counts = ", ".join(f"{len(keys)} {what}" for what, keys in (
        ("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)) if keys)
    first = (missing or unexpected or shapes)[0]
    differ = [f for f in LAYOUT_FLAGS if getattr(config, f) != getattr(theirs, f)]
    if theirs.unet_overrides != config.unet_overrides:
        differ.append("unet_overrides")
    said = "; ".join(f"{f}: file {getattr(theirs, f)!r}, run {getattr(config, f)!r}"
                     for f in differ)
    hint = " ".join(f"{LAYOUT_FLAGS[f]} {getattr(theirs, f)}" for f in differ
                    if f in LAYOUT_FLAGS)
    raise InitFromError(
        f"init_from {path} does not fit the run's U-Net ({counts} of {len(own)} tensors, e.g. "
        f"{first})" + (f": {said}" if said else "")
        + (f"; pass {hint} to start from it, or choose another file" if hint
           else "; choose a file of the run's layout"))


def warm_start_state(model: nn.Module, state: dict[str, torch.Tensor], *, source: str
                     ) -> dict[str, torch.Tensor]:
    """``state`` (an unconditional or conditional U-Net's) fitted to ``model``: the input
    convolution widened with zero weights for the condition channels, the zero-output modules
    ``model`` has and ``state`` lacks filled with ``model``'s own (constructed) values; then
    loaded into ``model``. Any other difference (another preset, another number of data
    channels) raises :class:`InitFromError` naming every missing, unexpected and mis-shaped
    key."""
    own = model.state_dict()
    fitted = dict(state)
    w, target = state.get(INPUT_CONV), own.get(INPUT_CONV)
    c = getattr(getattr(model, "config", None), "in_channels", None)
    if (w is not None and target is not None and w.shape != target.shape and w.ndim == 4
            and w.shape[1] == c and target.shape[1] > c
            and (w.shape[0], *w.shape[2:]) == (target.shape[0], *target.shape[2:])):
        wide = torch.zeros_like(target)  # the condition channels: zero
        wide[:, :c] = w.to(target.dtype)  # the data channels of x_t: copied
        fitted[INPUT_CONV] = wide
    added = [k for k in own if k not in state and k.startswith(ZERO_MODULES)]
    for k in added:
        fitted[k] = own[k]
    if added:
        _check_zero_output(model)
    try:
        load_state_strict(model, fitted, source=f"init_from {source}")
    except CheckpointError as err:
        raise InitFromError(str(err)) from None
    return fitted


def _check_zero_output(model: nn.Module) -> None:
    """The added slice embedding must add nothing yet: zero for every token, null included."""
    embed = getattr(model, "slice_embed", None)
    if embed is None:
        return
    from ..models.conditioning import NULL_SLICE

    with torch.no_grad():
        out = embed(torch.arange(NULL_SLICE + 1))
    if out.abs().max() > 0:
        raise InitFromError("init_from: the new model's slice embedding is not zero (it was "
                            "trained or re-initialised); a warm start needs a freshly built "
                            "model")
