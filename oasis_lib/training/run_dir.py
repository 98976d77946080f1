"""A run folder owned by one process at a time, and left tidy for the next one.

Two ``train`` processes writing into the same ``--out`` would interleave ``metrics.jsonl`` and
take ``last.pt`` from one and ``best.pt`` from the other. :class:`RunLock` prevents that with a
lock file ``OUT/.lock`` holding the holder's pid, host and start time:

* it is created atomically with its content (written to a temporary file, then ``os.link``-ed
  to ``.lock``, which fails if the lock exists), so a crash never leaves a half-written lock;
* a lock whose pid is no longer running on this host is *stale* (a killed run): it is taken
  over with a warning that says whose it was; a lock held by a live process, or by a process
  on another host (which we cannot check), is refused with both named and what to do;
* the same process may take its own lock again (a notebook cell run twice);
* :meth:`RunLock.release` removes it only if it is still ours; it also runs at exit.

:func:`tidy_run_dir` removes what a crashed run leaves behind that would confuse the next one:
the temporary files of interrupted atomic writes, and -- for a fresh run in a folder that holds
no ``last.pt`` -- the metrics and ``best.pt`` of a run that died before its first checkpoint,
which are moved (never deleted) into ``OUT/orphaned-<time>/``.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import socket
import time
import warnings
from pathlib import Path

LOCK_NAME = ".lock"
#: Temporary files of atomic writes (``checkpoint.atomic_save``, ``export_safetensors``,
#: ``write_text_atomic``): dot, name, anything, ``.tmp``.
TMP_GLOB = ".*.tmp"
ORPHANS = ("metrics.jsonl", "best.pt", "loss_curve.png")


class RunLockedError(RuntimeError):
    """Another live process (or one on another host) holds the run folder's lock."""


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (signal 0 probes without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM  # exists, owned by another user
    return True


def _read_lock(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: cannot be a lock we wrote (those are written whole)


class RunLock:
    """``OUT/.lock`` for the lifetime of a run; see the module docstring."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out = Path(out_dir)
        self.path = self.out / LOCK_NAME
        self.me = {"pid": os.getpid(), "host": socket.gethostname()}
        self.held = False

    def _describe(self, info: dict) -> str:
        since = info.get("since")
        when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if since else ""
        return f"pid {info.get('pid')} on host {info.get('host')}{when}"

    def acquire(self) -> RunLock:
        self.out.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._try_create():
                break
            info = _read_lock(self.path)
            if info is None:
                continue  # released between our two calls: try again
            if info.get("pid") == self.me["pid"] and info.get("host") == self.me["host"]:
                break  # our own lock (a second Trainer in this process)
            if info and info.get("host") != self.me["host"]:
                raise RunLockedError(
                    f"run folder {self.out} is locked by {self._describe(info)} ({self.path}); "
                    "another machine may be training into it. If that run is over, delete "
                    f"{self.path} and run again, or choose another --out")
            if info and pid_alive(int(info.get("pid", -1))):
                raise RunLockedError(
                    f"run folder {self.out} is in use by {self._describe(info)} (lock "
                    f"{self.path}); wait for that run to end, stop it, or choose another --out")
            # Stale: its process is gone (killed, crashed, machine rebooted). Take it over.
            stale = self.path.with_name(f"{LOCK_NAME}.stale.{self.me['pid']}")
            try:
                os.replace(self.path, stale)
            except FileNotFoundError:
                continue
            owner = self._describe(info) if info else "an unreadable lock file"
            if self._try_create():
                stale.unlink(missing_ok=True)
                warnings.warn(f"{self.path} was left by {owner}, which is no longer running "
                              "(the run was killed or crashed); took the run folder over",
                              UserWarning, stacklevel=3)
                break
        else:
            raise RunLockedError(f"could not lock run folder {self.out} ({self.path}): it keeps "
                                 "changing hands; is another run starting in it?")
        mine = _read_lock(self.path)
        if not mine or mine.get("pid") != self.me["pid"]:
            raise RunLockedError(f"run folder {self.out} was locked by "
                                 f"{self._describe(mine or {})} at the same moment; "
                                 "choose another --out")
        self.held = True
        atexit.register(self.release)
        return self

    def acquire_on_main(self, ctx) -> None:
        """Rank 0 of ``ctx`` (a :class:`~oasis_lib.training.distributed.DistContext`) takes
        the lock, and every rank learns whether it could: if not, all raise rank 0's
        :class:`RunLockedError` (``all_ranks``: the command line says it once), instead of the
        other ranks waiting for rank 0 at the next collective until the timeout."""
        from .distributed import broadcast_object

        refused = None
        if ctx.is_main:
            try:
                self.acquire()
            except RunLockedError as err:
                refused = str(err)
        refused = broadcast_object(refused, ctx)
        if refused is not None:
            err = RunLockedError(refused)
            err.all_ranks = True
            raise err

    def _try_create(self) -> bool:
        tmp = self.path.with_name(f".{LOCK_NAME}.{self.me['pid']}.tmp")
        tmp.write_text(json.dumps({**self.me, "since": time.time()}))
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        if not self.held:
            return
        info = _read_lock(self.path)
        if info and info.get("pid") == self.me["pid"] and info.get("host") == self.me["host"]:
            self.path.unlink(missing_ok=True)
        self.held = False
        atexit.unregister(self.release)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def tidy_run_dir(out_dir: str | os.PathLike, *, fresh: bool) -> list[Path]:
    """Clean what a crashed run left in ``out_dir`` (call while holding the lock).

    Removes the temporary files of interrupted atomic writes. With ``fresh`` (a new run, no
    ``last.pt``), moves an earlier run's ``metrics.jsonl``/``best.pt``/``loss_curve.png`` into
    ``orphaned-<time>/`` so the new run's log and best checkpoint are its own. Returns what
    was moved or removed.
    """
    out = Path(out_dir)
    touched: list[Path] = []
    if not out.is_dir():
        return touched
    for tmp in out.glob(TMP_GLOB):
        if tmp.is_file() and not tmp.name.startswith(f".{LOCK_NAME}."):
            tmp.unlink(missing_ok=True)
            touched.append(tmp)
    if fresh and not (out / "last.pt").exists():
        leftovers = [out / n for n in ORPHANS if (out / n).exists()]
        if leftovers:
            dest = out / time.strftime("orphaned-%Y%m%d-%H%M%S")
            dest.mkdir(exist_ok=True)
            for f in leftovers:
                os.replace(f, dest / f.name)
                touched.append(dest / f.name)
            warnings.warn(f"{out} held {', '.join(f.name for f in leftovers)} of an earlier run "
                          f"that has no last.pt (it stopped before its first checkpoint); moved "
                          f"them to {dest} so this run starts clean", UserWarning, stacklevel=2)
    return touched


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Replace a text file atomically (temporary file, fsync, rename): never half-written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines log, skipping a torn (half-written) line from a crash."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the last line of a run killed mid-write
        if isinstance(record, dict):
            records.append(record)
    return records


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one record as one line; a torn previous line is ended first, so one crash never
    corrupts the next record."""
    path = Path(path)
    line = json.dumps(record) + "\n"
    with open(path, "a+b") as f:
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode())
