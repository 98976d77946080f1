"""The condition-field room: one :class:`ConditionField` per thing a conditional model can be
given (the tissue mask, the slice level, ...), found by name in a registry. The map for adding
one: docs/INTERFACES.md ("Adding a condition field")."""

from ..._lazy import lazy_exports

#: Public name -> the module that defines it (imported when the name is first used).
_EXPORTS = {
    "ConditionField": ".base",
    "CONDITION_FIELDS": ".registry",
    "condition_spec": ".registry",
    "condition_specs": ".registry",
    "get_condition_field": ".registry",
    "parse_condition": ".registry",
    "register_condition_field": ".registry",
    "unregister_condition_field": ".registry",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
