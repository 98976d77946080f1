"""Teaching helpers for the notebooks: library source rendered in place, checked exercises."""

from .exercises import EXERCISES, CheckResult, check, solution
from .source import show_source, source_text

__all__ = ["EXERCISES", "CheckResult", "check", "show_source", "solution", "source_text"]
