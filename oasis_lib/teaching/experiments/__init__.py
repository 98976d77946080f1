"""Experiment exercises: the reader changes one setting, runs a small experiment and a checker
tests the *direction* of the effect (not a formula). One module per topic; each exports the
reference run of its experiment (shown by ``exercises.reveal(fn)``) and a ``check_<name>``.
"""

from ..._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {})  # submodules on first use
