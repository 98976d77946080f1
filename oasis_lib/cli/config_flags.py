"""The ``train`` / ``train-autoencoder`` flags, built from the config's own knobs.

Each config field made with :func:`oasis_lib.config_knobs.knob` and a ``flag`` becomes one
argparse argument: the type from the field's annotation (``int | None`` -> int, ``tuple[float,
float]`` -> two floats, ``bool`` -> a switch; ``--no-x`` sets False), the choices from the knob
(the names the config validates against), the help from the knob with the ``cpu`` preset's
value. :func:`config_overrides` maps parsed arguments back to config overrides (nested ones as
dicts, ``{"diffusion": {"timesteps": 500}}``), :func:`explicit_fields` names the fields given
(what a resume compares) and :func:`flag_names` the flag of each field (error messages name the
flag the user typed). No hand list: a new knob with a flag appears here by itself.
"""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import dataclass
from typing import Any

from ..config import AutoencoderTrainConfig, DecoderTrainConfig, RunConfig, TrainConfig
from ..config_knobs import Knob, knobs
from ..training.resume import resume_key

#: The config each training command builds, and the run kind its knobs' ``runs`` name.
COMMAND_CONFIGS: dict[str, type[RunConfig]] = {"train": TrainConfig,
                                               "train-autoencoder": AutoencoderTrainConfig,
                                               "train-decoder": DecoderTrainConfig}
CONFIG_RUN_KINDS = {TrainConfig: "diffusion", AutoencoderTrainConfig: "autoencoder",
                    DecoderTrainConfig: "decoder"}
DEFAULT_PRESET = "cpu"  # the preset whose values --help shows, and the default of --preset
#: The argument group of each config class's flags, in --help.
GROUPS = {
    "RunConfig": "every run: data, length, optimisation, speed, bookkeeping (default: the "
                 "preset's values; on --resume: the run's)",
    "TrainConfig": "the diffusion model: preset, latent space, warm start, condition",
    "DiffusionConfig": "the noise schedule and the training objective",
    "AutoencoderTrainConfig": "the autoencoder",
    "AutoencoderLossConfig": "the autoencoder's loss",
    "DecoderTrainConfig": "the light decoder and its teacher",
}


@dataclass(frozen=True)
class ConfigFlag:
    """One flag of a config field (``path``: ``lr``, ``diffusion.timesteps``,
    ``autoencoder_overrides.channel_mult`` for a key of a dict field)."""

    flag: str
    path: str
    knob: Knob
    value_type: Any  # the annotation, None stripped
    group: str

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    @property
    def switch(self) -> bool:
        return self.value_type is bool

    def switch_value(self) -> bool:
        """The value a given switch sets: ``--no-x`` False, ``--x`` True."""
        return not self.flag.startswith("--no-")


def _strip_none(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def run_kind(cls: type[RunConfig]) -> str:
    """``diffusion``, ``autoencoder`` or ``decoder``: the run kind of a config class (or of
    its base)."""
    for base, kind in CONFIG_RUN_KINDS.items():
        if issubclass(cls, base):
            return kind
    raise ValueError(f"unknown config class {cls.__name__!r}; choose a subclass of one of "
                     f"{[c.__name__ for c in CONFIG_RUN_KINDS]}")


def config_flags(cls: type[RunConfig]) -> list[ConfigFlag]:
    """The flags of ``cls``'s command, in field order (its knobs with a flag and a ``runs``
    naming the command's run kind)."""
    kind, out = run_kind(cls), []
    for path, owner, f, k in knobs(cls):
        if kind not in k.runs:
            continue
        if k.entries:  # a dict field: each key with its own flag
            for key, entry in k.entries.items():
                if entry.flag_name(key):
                    out.append(ConfigFlag(entry.flag_name(key), f"{path}.{key}", entry,
                                          entry.parse, GROUPS.get(owner.__name__, "")))
        elif k.flag_name(f.name):
            hint = _strip_none(typing.get_type_hints(owner)[f.name])
            out.append(ConfigFlag(k.flag_name(f.name), path, k, hint,
                                  GROUPS.get(owner.__name__, owner.__name__)))
    return out


def _argparse_type(parse):
    """``parse`` for argparse: its ValueError message shown as the flag's error."""
    if parse in (int, float, str):
        return parse

    def convert(text: str):
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _type_options(flag: ConfigFlag) -> dict[str, Any]:
    k, hint = flag.knob, flag.value_type
    if flag.switch:
        return {"action": "store_true"}
    if k.parse is not None:
        opts = {"type": _argparse_type(k.parse)}
        return {**opts, "nargs": k.nargs} if k.nargs else opts
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": args[0], "nargs": "+"}
        return {"type": args[0], "nargs": len(args)}
    if hint in (int, float, str):
        return {"type": hint}
    raise TypeError(f"config field {flag.path} ({hint}) needs parse= in its knob to have a flag")


def _preset_value(cls: type[RunConfig], path: str) -> Any:
    value: Any = cls.presets()[DEFAULT_PRESET]
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
    return value


def _help(cls: type[RunConfig], flag: ConfigFlag) -> str | None:
    text = flag.knob.help
    value = _preset_value(cls, flag.path)
    shown = " ".join(map(str, value)) if isinstance(value, tuple) else value
    if not (flag.switch or flag.knob.required or flag.path == "preset" or value is None
            or "default" in text):
        text = f"{text}{'; ' if text else ''}{DEFAULT_PRESET} preset: {shown}"
    return text.replace("%", "%%") or None


def add_config_flags(parser: argparse.ArgumentParser, cls: type[RunConfig]) -> None:
    """Add the flags of ``cls``'s knobs to ``parser``, one argument group per config class.
    A flag not given parses as None (or False for a switch): the preset's value is kept."""
    groups: dict[str, Any] = {}
    for flag in config_flags(cls):
        group = groups.get(flag.group)
        if group is None:
            group = groups[flag.group] = parser.add_argument_group(flag.group or None)
        opts = _type_options(flag)
        if not flag.switch:
            opts["default"] = None
            if flag.knob.choices is not None:
                opts["choices"] = flag.knob.choices
            if flag.knob.metavar is not None:
                opts["metavar"] = flag.knob.metavar
            if flag.knob.required:
                opts["required"] = True
        group.add_argument(flag.flag, help=_help(cls, flag), **opts)


def _given(flag: ConfigFlag, args: argparse.Namespace) -> bool:
    value = getattr(args, flag.dest, None)
    return bool(value) if flag.switch else value is not None


def config_overrides(cls: type[RunConfig], args: argparse.Namespace) -> dict[str, Any]:
    """``{field: value}`` of the flags given (nested fields and dict keys as dicts); ``preset``
    is not among them (it names the preset the overrides apply to)."""
    over: dict[str, Any] = {}
    for flag in config_flags(cls):
        if flag.path == "preset" or not _given(flag, args):
            continue
        value = getattr(args, flag.dest)
        value = flag.switch_value() if flag.switch else value
        value = tuple(value) if isinstance(value, list) else value
        *parents, name = flag.path.split(".")
        node = over
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = value
    return over


def explicit_fields(cls: type[RunConfig], args: argparse.Namespace) -> set[str]:
    """The config fields set on the command line, as the resume compares them
    (:func:`oasis_lib.training.resume.resume_key`: ``diffusion.timesteps``, ``loss``)."""
    return {resume_key(flag.path) for flag in config_flags(cls) if _given(flag, args)}


def flag_names(cls: type[RunConfig]) -> dict[str, str]:
    """``{field: flag}`` (each field by its path and by its last part, ``timesteps`` of
    ``diffusion.timesteps``) for :func:`~oasis_lib.cli.errors.usage_phase` messages."""
    out: dict[str, str] = {}
    for flag in config_flags(cls):
        if not flag.switch:
            out[flag.path] = out[flag.path.rsplit(".", 1)[-1]] = flag.flag
    return out


def config_from_args(cls: type[RunConfig], args: argparse.Namespace) -> RunConfig:
    """``cls.from_preset(--preset, **the flags given)``, validated."""
    return cls.from_preset(getattr(args, "preset", None) or DEFAULT_PRESET,
                           **config_overrides(cls, args))


def field_of_flag(cls: type[RunConfig]) -> dict[str, str]:
    """``{flag: config field path}`` of every flag of ``cls``'s command."""
    return {flag.flag: flag.path for flag in config_flags(cls)}
