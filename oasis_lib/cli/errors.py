"""One-line errors for the command line (STYLE.md 16: pip, git and cargo do the same).

:func:`run` calls a command's ``main`` and turns the library's exceptions into one line on
stderr, ``error: <what happened, which path, what to do>``, with a conventional exit code:

=====  ==============================================================================
code   meaning
=====  ==============================================================================
0      success (also: a finished run asked to resume says so and exits 0)
1      a failure: bad data, an unreadable checkpoint, a diverged run, a full disk ...
2      bad usage: a flag, a combination of flags or an output path refused before any
       compute (:class:`UsageError`; argparse itself also exits 2)
130    stopped by SIGINT (Ctrl-C), 143 by SIGTERM, after saving (the message says where)
=====  ==============================================================================

``--debug`` anywhere on the command line, or ``OASIS_DEBUG=1`` in the environment, prints the
full traceback as well. Under torchrun, an error every rank shares (bad usage, a locked run
folder) is said once, by rank 0 (:func:`other_rank`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence

DEBUG_FLAG = "--debug"
DEBUG_ENV = "OASIS_DEBUG"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
QUIET_RANK_GRACE_S = 5.0  # under torchrun, a rank > 0 waits this long before exiting silently
# The library's errors that mean a flag is wrong.
USAGE_ERRORS = ("ResumeMismatchError", "BatchSizeError", "InitFromError")
# The library's own failures: their message already says what, where and what to do.
KNOWN_FAILURES = ("DataError", "CheckpointError", "RunLockedError", "DivergenceError",
                  "NonFiniteLossError", "NonFiniteWeightsError", "DiskFullError")


class UsageError(ValueError):
    """A flag, a combination of flags or an output path is refused before any compute."""


class Stopped(Exception):  # noqa: N818 (not an error: the user or the scheduler asked to stop)
    """A command stopped on a signal after saving; ``str()`` says what was saved where."""

    def __init__(self, message: str, *, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)


@contextlib.contextmanager
def usage_phase(flags: dict[str, str] | None = None) -> Iterator[None]:
    """Within this block a ``ValueError`` (e.g. from ``TrainConfig.validate``) is bad usage.

    ``flags`` maps config field names to the flags that set them (``{"latent_channels":
    "--latent-channels"}``): the message then names the flag the user typed, not the field.
    """
    try:
        yield
    except UsageError:
        raise
    except ValueError as err:
        if type(err).__name__ in ("DataError", "CheckpointError"):
            raise  # those are failures of an input file, not of the flags
        raise UsageError(name_flags(str(err), flags or {})) from err


def name_flags(text: str, flags: dict[str, str]) -> str:
    """``text`` with each whole-word config field of ``flags`` replaced by its flag."""
    if not flags:
        return text
    words = "|".join(sorted(map(re.escape, flags), key=len, reverse=True))
    return re.sub(rf"(?<![\w.-])({words})(?![\w-])", lambda m: flags[m.group(1)], text)


def debug_requested(argv: Sequence[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def one_line(text: str) -> str:
    """Collapse a (possibly multi-line) message to one line."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def describe(err: BaseException) -> tuple[str, int]:
    """(one-line message, exit code) for an exception the library raises."""
    name = type(err).__name__
    if isinstance(getattr(err, "signum", None), int):  # Stopped, training's TrainingStopped
        return one_line(err), 128 + err.signum
    if isinstance(err, KeyboardInterrupt):
        return "interrupted (Ctrl-C) before anything was saved", 128 + signal.SIGINT
    if isinstance(err, UsageError) or name in USAGE_ERRORS:
        return one_line(err), EXIT_USAGE
    if isinstance(err, FileExistsError) and not err.filename:
        return one_line(err), EXIT_USAGE  # e.g. "runs/x already holds a run; pass --resume"
    if name in KNOWN_FAILURES:  # (DiskFullError is an OSError whose text says it all)
        return one_line(err) or name, EXIT_FAILURE
    if isinstance(err, OSError) and err.strerror:
        where = f" {err.filename}" if err.filename else ""
        hint = ""
        if err.errno == errno.ENOSPC:
            hint = "; free some space and run again (completed checkpoints were kept)"
        elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            hint = "; choose a folder you can write to"
        elif err.errno == errno.ENOENT:
            hint = "; check the path"
        return f"{err.strerror.lower()}:{where}{hint}", EXIT_FAILURE
    if isinstance(err, MemoryError):
        return ("out of memory; use a smaller --batch-size, --n or --image-size",
                EXIT_FAILURE)
    text = one_line(err) or name
    if name in KNOWN_FAILURES:
        return text, EXIT_FAILURE
    # Not one of ours: an unexpected failure, so the type and the way to the traceback help.
    return f"{text} ({name}; rerun with {DEBUG_FLAG} for the traceback)", EXIT_FAILURE


def run(main: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` (without ``--debug``) and map exceptions to one line and a code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        return int(main(argv) or 0)
    except SystemExit:
        raise  # argparse: usage text already printed, exit code 2 (or 0 for --help)
    except (Exception, KeyboardInterrupt) as err:
        message, code = describe(err)
        if debug:
            traceback.print_exc()
        prefix = "stopped" if isinstance(getattr(err, "signum", None), int) else "error"
        if other_rank() and (code == EXIT_USAGE or getattr(err, "all_ranks", False)):
            # Said by rank 0; wait so that it exits first: torchrun stops the other ranks when
            # one ends, and would otherwise stop rank 0 before it prints.
            time.sleep(QUIET_RANK_GRACE_S)
            _exit_if_in_process_group(code)
            return code
        print(f"{prefix}: {message}", file=sys.stderr, flush=True)
        if getattr(err, "broken_process_group", False):
            sys.stdout.flush()
            os._exit(code)
        _exit_if_in_process_group(code)
        return code


def _exit_if_in_process_group(code: int) -> None:
    """Under torchrun, exit at once with ``code`` once the error is said: a process group
    whose peers stop too (or have stopped, distributed.RankFailure) may abort in its C++
    teardown (SIGABRT) instead of exiting with our code. Everything was saved before."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def other_rank() -> bool:
    """Under torchrun, a rank other than 0. Every rank parses the same flags, so a usage error
    (or an error rank 0 shared with all ranks, ``err.all_ranks``) is said once, by rank 0."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) > 0
    except ValueError:
        return False
