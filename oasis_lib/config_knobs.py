"""A config field that describes itself: its help, its command-line flag, its resume rule.

:func:`knob` is :func:`dataclasses.field` with a :class:`Knob` in its metadata::

    lr: float = knob(2e-4, flag=True, help="peak learning rate")

The ``train`` / ``train-autoencoder`` flags are built from these (:mod:`oasis_lib.cli.config_flags`:
the type from the annotation, the choices from the knob) and so is what a resumed run may change
(:mod:`oasis_lib.training.resume`). A field without a knob has no flag and must match on resume.
Adding a config knob with a flag is one field: its default, its help, ``flag=True``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass
from typing import Any

#: What a resumed run may do with a field (:func:`oasis_lib.training.resume.merge_for_resume`):
#: ``fixed`` must match the checkpoint (the maths of the run); ``safe`` may differ only when the
#: user names it (``--override``: changes no number, but a difference may be a mistake);
#: ``free`` is taken from the caller (speed, display); ``length`` is free, but taken from the
#: checkpoint unless given (a resume may lengthen a run); ``derived`` is computed by the run
#: when None (a resume that leaves it None keeps the checkpoint's).
RESUME_RULES = ("fixed", "safe", "free", "length", "derived")
#: The kinds of run a flag can belong to (:func:`oasis_lib.file_layout.run_kind`).
RUN_KINDS = ("diffusion", "autoencoder", "decoder")
DIFFUSION_ONLY = ("diffusion",)


@dataclass(frozen=True)
class Knob:
    """What a config field says about itself (the metadata :func:`knob` stores)."""

    help: str = ""  # one line for --help (the field's comment may say more)
    flag: str | bool | None = None  # "--name"; True: "--" + the field name with dashes
    choices: tuple | None = None  # the names the config validates against (its registry)
    resume: str = "fixed"  # one of RESUME_RULES
    metavar: str | tuple[str, ...] | None = None
    runs: tuple[str, ...] = RUN_KINDS  # the runs whose command has the flag
    parse: Callable[[str], Any] | None = None  # text -> value; None: the annotation's type
    nargs: int | str | None = None  # for a dict entry's list of values ("+")
    required: bool = False  # the flag must be given (--out)
    entries: dict[str, Knob] | None = None  # a dict field: its keys with their own flags

    def __post_init__(self) -> None:
        if self.resume not in RESUME_RULES:
            raise ValueError(f"unknown resume rule {self.resume!r}; choose one of {RESUME_RULES}")
        bad = sorted(set(self.runs) - set(RUN_KINDS))
        if bad:
            raise ValueError(f"unknown run kinds {bad}; choose from {RUN_KINDS}")
        if isinstance(self.flag, str) and not self.flag.startswith("--"):
            raise ValueError(f"a flag starts with '--', got {self.flag!r}")

    def flag_name(self, name: str) -> str | None:
        """The flag of field ``name`` (None: it has none)."""
        if self.flag is True:
            return "--" + name.replace("_", "-")
        return self.flag or None


NO_KNOB = Knob()


def knob(default: Any = MISSING, *, default_factory: Any = MISSING, help: str = "",
         flag: str | bool | None = None, choices: tuple | None = None, resume: str = "fixed",
         metavar: str | tuple[str, ...] | None = None, runs: tuple[str, ...] = RUN_KINDS,
         parse: Callable[[str], Any] | None = None, required: bool = False,
         entries: dict[str, Knob] | None = None) -> Any:
    """A dataclass field with its default and a :class:`Knob` (help, flag, choices, resume
    rule) in its metadata."""
    meta = Knob(help=help, flag=flag, choices=None if choices is None else tuple(choices),
                resume=resume, metavar=metavar, runs=tuple(runs), parse=parse,
                required=required, entries=entries)
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"knob": meta})


def knob_of(f: dataclasses.Field) -> Knob:
    """The :class:`Knob` of a dataclass field (a plain field: no flag, fixed on resume)."""
    return f.metadata.get("knob", NO_KNOB)


def nested_config(f: dataclasses.Field) -> type | None:
    """The dataclass a field holds (``diffusion``, ``loss``), or None."""
    if f.default_factory is MISSING:
        return None
    value = f.default_factory()
    return type(value) if dataclasses.is_dataclass(value) else None


def knobs(cls: type, prefix: str = "") -> Iterator[tuple[str, type, dataclasses.Field, Knob]]:
    """``(path, declaring class, field, knob)`` of every field of ``cls`` in declaration order,
    nested configs included (``diffusion.timesteps``)."""
    for f in dataclasses.fields(cls):
        nested = nested_config(f)
        if nested is not None:
            yield from knobs(nested, f"{prefix}{f.name}.")
        else:
            owner = next(c for c in reversed(cls.__mro__)
                         if f.name in getattr(c, "__dataclass_fields__", {}))
            yield f"{prefix}{f.name}", owner, f, knob_of(f)


def resume_fields(classes: tuple[type, ...], rule: str) -> tuple[str, ...]:
    """The fields (paths) of ``classes`` whose knob says ``resume=rule``, each once."""
    if rule not in RESUME_RULES:
        raise ValueError(f"unknown resume rule {rule!r}; choose one of {RESUME_RULES}")
    out: dict[str, None] = {}
    for cls in classes:
        out.update((path, None) for path, _, _, k in knobs(cls) if k.resume == rule)
    return tuple(out)
