"""Show a library function's or class's own source in a notebook (one copy, never pasted).

``show_source(oasis_lib.sampling.ddim_step)`` renders the code that actually runs, read with
:func:`inspect.getsource`, as a highlighted Python block in Jupyter (an IPython ``Markdown``
display of a fenced block, which JupyterLab, nbviewer and GitHub all highlight) and as plain
text elsewhere (a script, a terminal, a test). The first line names the file and the object
(``# oasis_lib/diffusion/schedule.py: NoiseSchedule.q_step``), so the reader can find it, and
an edit elsewhere in the file leaves the shown text unchanged (no absolute line numbers). A
decorated function (``@torch.no_grad()``, ``functools.wraps``) is
unwrapped first (:func:`inspect.unwrap`), so the header names the library's file, not the
decorator's.
"""

from __future__ import annotations

import inspect
from pathlib import Path

__all__ = ["show_source", "source_text"]


def _in_jupyter() -> bool:
    """True inside a Jupyter kernel (the ZMQ shell), False in a terminal IPython or a script."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with Jupyter
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _where(obj) -> str:
    """The path of ``obj``'s file relative to the oasis_lib package's parent."""
    path = Path(inspect.getsourcefile(obj) or "?").resolve()
    for parent in path.parents:
        if parent.name == "oasis_lib":
            return path.relative_to(parent.parent).as_posix()
    return path.name


def source_text(obj, *, lines: tuple[int, int] | None = None) -> str:
    """The source of ``obj`` with a header comment naming its file and its qualified name:
    ``# oasis_lib/x.py: Class.method`` (``# oasis_lib/x.py: Class.method, lines a-b`` for a
    part, a and b counted within the object).

    Args:
        obj: a function, class or method (anything :func:`inspect.getsource` accepts).
        lines (tuple (start, stop) or None, default None): 1-based, inclusive line numbers
            *within* the object's source, to show a part of a long function (e.g. ``(1, 12)``
            for its signature and docstring). None shows it all.

    Raises:
        TypeError: if ``obj`` has no Python source (a builtin, an instance).
        ValueError: if ``lines`` is not a (start, stop) pair inside the source.
    """
    obj = inspect.unwrap(obj)  # a decorated function: its own source file, not the decorator's
    try:
        src = inspect.getsource(obj)
    except (TypeError, OSError) as err:
        raise TypeError(f"no Python source for {obj!r}: pass a function, class or method") from err
    body = src.rstrip("\n").splitlines()
    name = f"{_where(obj)}: {getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"
    start, stop = 1, len(body)
    if lines is not None:
        if (not isinstance(lines, tuple) or len(lines) != 2
                or not all(isinstance(n, int) for n in lines)):
            raise ValueError(f"lines must be a (start, stop) tuple of ints, got {lines!r}")
        start, stop = lines
        if not 1 <= start <= stop <= len(body):
            raise ValueError(f"lines {lines!r} outside 1..{len(body)}, the lines of "
                             f"{getattr(obj, '__qualname__', obj)!r}")
    shown = body[start - 1:stop]
    header = f"# {name}" if lines is None else f"# {name}, lines {start}-{stop}"
    return "\n".join([header, *shown])


def show_source(obj, *, lines: tuple[int, int] | None = None) -> None:
    """Display :func:`source_text` of ``obj``: highlighted in Jupyter, printed elsewhere.

    Returns None, so a notebook cell ending in ``show_source(...)`` shows the code once.
    """
    text = source_text(obj, lines=lines)
    if _in_jupyter():
        from IPython.display import Markdown, display

        display(Markdown(f"```python\n{text}\n```"))
    else:
        print(text)
