"""The command line, ``python -m oasis_lib COMMAND --help``."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
