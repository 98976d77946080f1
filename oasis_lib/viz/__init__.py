"""The viz room: every figure and widget of the project (matplotlib and ipywidgets are
imported here and nowhere else). ``style`` holds the one DPI, colour map and save helper."""

from .._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {})  # submodules on first use: evaluation.tissue
