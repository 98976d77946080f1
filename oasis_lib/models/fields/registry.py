"""The condition-field registry: every field by name, and condition specs parsed with it.

``CONDITION_FIELDS`` maps a field's name to its :class:`~.base.ConditionField`, in
registration order (the built-in ``mask`` and ``slice`` first); that order is the order of a
field's input channels and of condition dropout's columns. A condition spec is ``"none"`` or
field names joined by ``"+"`` (``"mask+slice"``), parsed by :func:`parse_condition`.
Adding a field: a ``ConditionField`` subclass and ``register_condition_field(MyField())``
(docs/INTERFACES.md, "Adding a condition field").
"""

from __future__ import annotations

from itertools import combinations

from .base import ConditionField
from .mask import MaskField
from .slice_level import SliceField

#: The library's fields, in registry order.
BUILTIN_FIELDS: tuple[ConditionField, ...] = (MaskField(), SliceField())

CONDITION_FIELDS: dict[str, ConditionField] = {}


def register_condition_field(field: ConditionField) -> ConditionField:
    """Add ``field`` (an instance) under its ``name``; its name, key and presence keyword
    must be new."""
    if not isinstance(field, ConditionField):
        raise TypeError(f"register_condition_field takes a ConditionField, got {field!r}")
    if CONDITION_FIELDS.get(field.name, field) is not field:
        raise ValueError(f"condition field {field.name!r} is already registered")
    taken = {k for f in CONDITION_FIELDS.values() if f is not field
             for k in (f.name, f.key, f.present_key)}
    clash = {field.key, field.present_key} & taken
    if clash:
        raise ValueError(f"condition field {field.name!r}: {sorted(clash)} already used")
    CONDITION_FIELDS[field.name] = field
    return field


def unregister_condition_field(name: str) -> None:
    """Remove a field added by :func:`register_condition_field` (not a built-in one)."""
    if any(f.name == name for f in BUILTIN_FIELDS):
        raise ValueError(f"{name!r} is a built-in condition field")
    get_condition_field(name)
    del CONDITION_FIELDS[name]


for _field in BUILTIN_FIELDS:
    register_condition_field(_field)


def get_condition_field(name: str) -> ConditionField:
    """The field called ``name``; ValueError listing the registered names otherwise."""
    if name not in CONDITION_FIELDS:
        raise ValueError(f"unknown condition field {name!r}; choose one of "
                         f"{tuple(CONDITION_FIELDS)}")
    return CONDITION_FIELDS[name]


def field_of_keyword(keyword: str) -> tuple[ConditionField, bool]:
    """``(field, is the presence flag)`` of a ``Condition`` keyword (``"slice_index"``,
    ``"mask_present"``); ValueError listing the keywords otherwise."""
    for field in CONDITION_FIELDS.values():
        if keyword in (field.key, field.present_key):
            return field, keyword == field.present_key
    valid = tuple(k for f in CONDITION_FIELDS.values() for k in (f.key, f.present_key))
    raise ValueError(f"unknown Condition keyword {keyword!r}; choose one of {valid}")


def condition_specs() -> tuple[str, ...]:
    """Every valid condition spec: ``"none"``, then each set of registered fields joined by
    ``"+"`` in registry order (the built-ins: none, mask, slice, mask+slice)."""
    names = tuple(CONDITION_FIELDS)
    return ("none", *("+".join(c) for r in range(1, len(names) + 1)
                      for c in combinations(names, r)))


def parse_condition(spec: str | None) -> tuple[ConditionField, ...]:
    """The fields of a condition spec, in registry order: ``None`` or ``"none"`` -> ``()``,
    ``"mask+slice"`` -> (mask, slice): split on ``"+"``, each name looked up in the registry.
    ValueError listing :func:`condition_specs` for anything else (an unknown name, a name
    twice, names out of registry order)."""
    if spec is None or spec == "none":
        return ()
    if not isinstance(spec, str) or spec not in condition_specs():
        raise ValueError(f"unknown condition {spec!r}; choose one of {condition_specs()}")
    return tuple(CONDITION_FIELDS[name] for name in spec.split("+"))


def condition_spec(fields) -> str:
    """The canonical spec of ``fields`` (names in registry order), ``"none"`` for none."""
    order = list(CONDITION_FIELDS)
    names = sorted((f if isinstance(f, str) else f.name for f in fields), key=order.index)
    return "+".join(names) or "none"
