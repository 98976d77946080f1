"""Teaching helpers for the notebooks: library source rendered in place, checked exercises."""

from .._lazy import lazy_exports

#: Public name -> the module that defines it (imported when the name is first used).
_EXPORTS = {
    "EXERCISES": ".exercises",
    "CheckResult": ".exercises",
    "check": ".exercises",
    "solution": ".exercises",
    "show_source": ".source",
    "source_text": ".source",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
