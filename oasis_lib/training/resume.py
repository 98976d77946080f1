"""Resume a run only with the recipe it was trained with (issue 15, point 4).

A checkpoint stores the whole :class:`~oasis_lib.config.TrainConfig`. On resume the fields fall
in three groups, which each field's knob declares (``resume=`` of
:func:`oasis_lib.config_knobs.knob`; a field without one is fixed):

* :data:`FREE` -- speed and display knobs that do not change the maths (device, compile,
  progress bars, ...) and the run's *length* (``epochs``, ``max_steps``, ``max_minutes``):
  taken from the caller, so a resumed run can be made longer (``resume="free"`` and
  ``"length"``);
* :data:`SAFE_OVERRIDES` -- fields that change no number of the optimisation but can only be
  told apart from a mistake by the user: ``data_root`` (the folder was moved) and the
  bookkeeping intervals. A differing value is refused unless the caller names the field in
  ``allow`` (the CLI's ``--override data_root``; ``resume="safe"``);
* everything else (``lr``, ``batch_size``, ``image_size``, the schedule, ...) must match; a
  difference raises :class:`ResumeMismatchError` naming every differing field with both
  values (``resume="fixed"``, the default).

:func:`finished` says whether a run already reached its stored length, so a resumed finished
run reports that instead of training on.
"""

from __future__ import annotations

import warnings
from typing import Any

from ..config import AutoencoderTrainConfig, TrainConfig
from ..config_knobs import resume_fields
from ..run_config import with_legacy_defaults

#: The configs a checkpoint stores (their knobs declare the rules below).
RUN_CONFIGS = (TrainConfig, AutoencoderTrainConfig)
#: The run's length (``resume="length"``): taken from the checkpoint unless given.
LENGTH = resume_fields(RUN_CONFIGS, "length")
#: Taken from the caller: ``resume="free"`` and the length.
FREE = (*LENGTH, *resume_fields(RUN_CONFIGS, "free"))
# Fields the run computes when they are None (latent diffusion's scale factor, from the cached
# training latents; its autoencoder's hash): a resume that leaves them None takes the
# checkpoint's value (``resume="derived"``).
DERIVED = resume_fields(RUN_CONFIGS, "derived")
# A None in the caller's config keeps the checkpoint's value for these too: the progress
# grids' sampler, None meaning the noise process's default ("ddim" for VP, which runs saved
# before the default became None recorded).
NONE_KEEPS_SAVED = (*DERIVED, "sampler")
#: May differ when the user names them (``resume="safe"``, ``--override``).
SAFE_OVERRIDES = resume_fields(RUN_CONFIGS, "safe")
#: Nested configs compared field by field (``diffusion.timesteps``); others (``loss``) whole.
COMPARED_BY_FIELD = ("diffusion",)


class ResumeMismatchError(ValueError):
    """A resumed run was given a recipe that differs from its checkpoint's."""


def resume_key(path: str) -> str:
    """The name a resume compares field ``path`` under: ``diffusion.timesteps`` stays,
    ``loss.adversarial`` is part of ``loss``."""
    top = path.split(".", 1)[0]
    return path if top in COMPARED_BY_FIELD else top


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in d.items():
        if isinstance(value, dict) and key in COMPARED_BY_FIELD:
            flat.update(_flatten(value, f"{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(saved: dict, new: dict, *, fields: set[str] | None = None) -> dict[str, tuple]:
    """``{field: (saved, new)}`` for differing config fields (``diffusion.x`` for nested ones),
    restricted to ``fields`` if given; the :data:`FREE` fields are never reported."""
    a, b = _flatten(saved), _flatten(new)
    keys = sorted(set(a) | set(b))
    if fields is not None:
        keys = [k for k in keys if k in fields]
    return {k: (a.get(k), b.get(k)) for k in keys if k not in FREE and a.get(k) != b.get(k)
            and not (k in NONE_KEEPS_SAVED and b.get(k) is None)}


def merge_for_resume(saved: dict, new: dict, *, checkpoint: str, explicit: set[str] | None = None,
                     allow: tuple[str, ...] = (), check_data_root: bool = True) -> dict:
    """The config dict a resumed run uses: ``saved`` with the free fields (and the allowed
    overrides) from ``new``; any other difference raises :class:`ResumeMismatchError`.

    Args:
        saved / new: ``TrainConfig.to_dict()`` of the checkpoint and of the caller.
        checkpoint: path named in the error.
        explicit: only these fields were given by the user (the CLI's flags); the others take
            the checkpoint's values, including the run's length. ``None``: every field of
            ``new`` counts (library callers pass a whole config).
        allow: :data:`SAFE_OVERRIDES` fields the user allows to change (``--override``).
        check_data_root: False when the caller passes datasets, so data_root is not read.
    """
    saved, new = _normalised(saved), _normalised(new)
    bad = sorted(set(allow) - set(SAFE_OVERRIDES))
    if bad:
        raise ResumeMismatchError(f"cannot override {bad} on resume; only {SAFE_OVERRIDES} "
                                  "can change without changing the maths of the run")
    fields = None if explicit is None else set(explicit)
    diff = differences(saved, new, fields=fields)
    if not check_data_root:
        diff.pop("data_root", None)
    moved = saved.get("autoencoder_sha256") is not None and new.get("autoencoder") is not None
    if moved:  # the autoencoder's new place: accepted by content when loaded (run_autoencoder)
        diff.pop("autoencoder", None)
    refused = {k: v for k, v in diff.items() if k not in allow}
    if refused:
        shown = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in refused.items())
        safe = [k for k in refused if k in SAFE_OVERRIDES]
        hint = (f" (to change {', '.join(safe)} on purpose, add "
                + " ".join(f"--override {k}" for k in safe) + ")") if safe else ""
        raise ResumeMismatchError(
            f"cannot resume {checkpoint} with a different recipe: {shown}. Keep the "
            f"checkpoint's values (drop these flags) to continue the run{hint}, or start a new "
            "run in another folder (--out)")
    for key in sorted(set(diff) & set(allow)):
        warnings.warn(f"resuming {checkpoint} with {key} {diff[key][1]!r} instead of its "
                      f"{diff[key][0]!r}", UserWarning, stacklevel=3)
    merged = dict(saved)
    take = FREE if explicit is None else [k for k in FREE if k in explicit or k not in LENGTH]
    for key in (*take, *allow, *(("autoencoder",) if moved else ())):
        if key in new:
            merged[key] = new[key]
    return merged


def _normalised(d: dict) -> dict:
    """A config dict with the fields added since older checkpoints filled in as those were
    trained (:data:`~oasis_lib.run_config.LEGACY_DEFAULTS`), sequences as tuples."""
    d = with_legacy_defaults(d)
    for key in ("train_splits", "adam_betas"):
        if isinstance(d.get(key), list):
            d[key] = tuple(d[key])
    return d


def finished(ckpt: dict, config: dict) -> str | None:
    """Why a run at checkpoint ``ckpt`` is already complete under ``config``, or None."""
    step, epoch = int(ckpt.get("step", 0)), int(ckpt.get("epoch", 0))
    if config.get("max_steps") is not None and step >= config["max_steps"]:
        return f"it reached max_steps={config['max_steps']} (step {step})"
    minutes = config.get("max_minutes")
    if minutes is not None and float(ckpt.get("train_seconds", 0.0)) >= 60 * minutes:
        return f"it used its time budget of max_minutes={minutes:g}"
    if epoch >= config.get("epochs", 0) and int(ckpt.get("batch_in_epoch", 0)) == 0:
        return f"it ran all epochs={config['epochs']} (step {step})"
    return None
