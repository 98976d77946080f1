"""A throwaway JupyterLab server for the browser tests (``tests/test_browser.py``).

:func:`running_lab` starts ``python -m jupyter lab`` on 127.0.0.1 with a free port and a random
token, in its own process group, with every Jupyter folder (config, data, runtime, IPython,
lab settings, workspaces) in a temporary directory, so that nothing of the user's set-up leaks
in and nothing of the test leaks out. It serves a *copy* of the notebooks with their outputs
cleared (:func:`copy_notebooks`): JupyterLab's autosave never touches the committed notebooks,
and every output the browser shows afterwards comes from the run under test, not from the
stored outputs. On exit it shuts the kernels down and stops the server by its own process id
(terminate, wait, kill), then kills whatever is left in its process group (its kernels).

:class:`KernelProbe` asks a running notebook kernel for the value of expressions
(``user_expressions`` of a silent execute request over the kernel's connection file): the tests
use it to read the title and the PNG of the figure a slider has just drawn, nothing the browser
shows is produced by it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat

STARTUP_TIMEOUT = 90.0  # seconds until /api/status answers (a busy 2-core machine is slow)

# JupyterLab settings for a quiet, deterministic test session. Keys: the settings file under
# the user settings directory (<package>/<plugin>.jupyterlab-settings).
LAB_SETTINGS = {
    # Render every cell: with windowing, cells out of view are not in the DOM and the checks
    # ("every cell has an execution count", "no traceback") would miss them.
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    # No news or update checks (no network here) and no pop-up asking about them.
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                    "checkForUpdates": False},
    # The served files are temporary copies; no autosave in the middle of a measurement.
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_notebooks(src: Path, dest: Path, names: list[str]) -> list[Path]:
    """Copy ``names`` from ``src`` to ``dest`` with outputs, execution counts and stored widget
    state removed, as a reader who clears the outputs before running everything would see
    them. Returns the copies."""
    dest.mkdir(parents=True, exist_ok=True)
    copies = []
    for name in names:
        nb = nbformat.read(src / name, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = []
                cell.execution_count = None
        nb.metadata.pop("widgets", None)
        nbformat.write(nb, dest / name)
        copies.append(dest / name)
    return copies


@dataclass
class LabServer:
    """A running JupyterLab server: its address, token, folders and process."""

    base_url: str
    token: str
    root_dir: Path
    runtime_dir: Path
    process: subprocess.Popen
    log_path: Path

    def lab_url(self, notebook: str, workspace: str | None = None) -> str:
        """The address a reader opens to see ``notebook`` in JupyterLab. With ``workspace``,
        in a fresh workspace of that name (``?reset``): only this notebook is open, none of
        the tabs an earlier page left in the default workspace."""
        where = f"workspaces/{workspace}/tree" if workspace else "tree"
        reset = "reset&" if workspace else ""
        return f"{self.base_url}/lab/{where}/{notebook}?{reset}token={self.token}"

    def api(self, path: str, method: str = "GET", timeout: float = 10.0):
        """Call the REST API (``/api/...``) with the token; the decoded JSON, or None."""
        request = urllib.request.Request(f"{self.base_url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def kernels(self) -> list[dict]:
        """The running kernels (id, name, execution_state, ...)."""
        return self.api("/api/kernels")

    def shutdown_kernels(self) -> None:
        """Shut every kernel down (frees the CPU and memory between notebooks)."""
        for kernel in self.kernels():
            with contextlib.suppress(urllib.error.URLError, OSError):
                self.api(f"/api/kernels/{kernel['id']}", method="DELETE", timeout=30.0)

    def connection_file(self, kernel_id: str) -> Path:
        """The kernel's ZMQ connection file (kernels of this server write it to runtime_dir)."""
        return self.runtime_dir / f"kernel-{kernel_id}.json"

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _write_lab_settings(settings_dir: Path) -> None:
    for key, values in LAB_SETTINGS.items():
        path = settings_dir / f"{key}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values, indent=2))


def _stop(process: subprocess.Popen, grace: float = 20.0) -> None:
    """Stop the server by its own pid (SIGTERM, wait, SIGKILL), then kill what is left of its
    process group: the server was started in a new session, so the group holds only the
    server and the kernels it started."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)
    # Leftover kernels: their group id is the server's pid (start_new_session), which Linux does
    # not hand out again while any member of the group lives.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def running_lab(root_dir: Path, work_dir: Path, log_path: Path, *,
                env: dict[str, str] | None = None) -> Iterator[LabServer]:
    """Start JupyterLab serving ``root_dir``, with its private folders under ``work_dir``,
    its output in ``log_path``; yield a :class:`LabServer` once ``/api/status`` answers; stop
    it whatever happens."""
    dirs = {name: work_dir / name for name in
            ("config", "data", "runtime", "ipython", "lab-settings", "lab-workspaces")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    _write_lab_settings(dirs["lab-settings"])

    server_env = dict(os.environ)
    # The kernel is a reader's kernel: the notebooks say `%matplotlib inline` themselves, and a
    # forced Agg backend (as `make test` exports for the unit tests) has no place here.
    server_env.pop("MPLBACKEND", None)
    server_env.update({
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "JUPYTER_PLATFORM_DIRS": "1",
        "IPYTHONDIR": str(dirs["ipython"]),
        # The kernel runs this interpreter (jupyter_client replaces the spec's "python").
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{server_env.get('PATH', '')}",
    })
    server_env.update(env or {})

    token = secrets.token_hex(24)
    port = free_port()
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root_dir}",
        f"--IdentityProvider.token={token}",
        "--ServerApp.terminals_enabled=False",
        f"--LabApp.user_settings_dir={dirs['lab-settings']}",
        f"--LabApp.workspaces_dir={dirs['lab-workspaces']}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",  # the "pypi" manager would query PyPI
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI containers run as root
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=root_dir, env=server_env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    server = LabServer(f"http://127.0.0.1:{port}", token, root_dir, dirs["runtime"], process,
                       log_path)
    try:
        _wait_until_up(server)
        yield server
    finally:
        if process.poll() is None:
            with contextlib.suppress(urllib.error.URLError, OSError):
                server.shutdown_kernels()
        _stop(process)


def _wait_until_up(server: LabServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with code {server.process.returncode}:\n"
                               f"{server.log_tail()}")
        try:
            server.api("/api/status", timeout=2.0)
            return
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.5)
    raise RuntimeError(f"jupyter lab did not answer /api/status within {STARTUP_TIMEOUT:.0f} s:"
                       f"\n{server.log_tail()}")


class KernelProbe:
    """A second client of a notebook's kernel that evaluates expressions silently.

    ``silent=True`` and ``store_history=False``: nothing is added to the notebook, ``In`` /
    ``Out`` or the execution count, and JupyterLab ignores replies to requests it did not send.
    """

    def __init__(self, connection_file: Path):
        from jupyter_client import BlockingKernelClient

        self.client = BlockingKernelClient(connection_file=str(connection_file))
        self.client.load_connection_file()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=30)

    def evaluate(self, **expressions: str) -> dict[str, str]:
        """``{name: repr-free text}`` of each expression's value (``str`` of the result: write
        expressions that return strings). Raises AssertionError on an evaluation error."""
        reply = self.client.execute_interactive("", silent=True, store_history=False,
                                                user_expressions=expressions, timeout=60)
        values = {}
        for name, result in reply["content"]["user_expressions"].items():
            if result["status"] != "ok":
                raise AssertionError(f"{name}: {result.get('ename')}: {result.get('evalue')}")
            text = result["data"]["text/plain"]
            values[name] = _unquote(text)
        return values

    def close(self) -> None:
        self.client.stop_channels()


def _unquote(text: str) -> str:
    """The string behind the repr IPython returns for a str value."""
    import ast

    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, str) else text


def chromium_path() -> str | None:
    """Debian's Chromium (apt-get install chromium), if installed."""
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")
