"""Lazy package attributes (PEP 562): a package lists what it exports and the module each
name lives in; that module is imported on first use. So ``import oasis_lib.paths`` loads
``paths`` (and what it imports), not the whole library, while ``from oasis_lib import UNet``
and ``oasis_lib.sampling``-style attribute access work as before.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable, Callable]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``: ``exports`` maps a public
    name to the module that defines it, relative to the package (``".pipeline"``). Any other
    attribute is looked up as a submodule (``oasis_lib.evaluation.tissue``)."""

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(exports[name], package), name)
        elif name.startswith("__"):
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        else:
            try:
                value = importlib.import_module(f".{name}", package)
            except ModuleNotFoundError as err:
                if err.name != f"{package}.{name}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        setattr(sys.modules[package], name, value)  # the next access is a plain lookup
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
