"""pytest settings for the notebooks under nbval (``make test-notebooks``).

nbval (0.11) waits at most ``IPyNbCell.output_timeout`` = 5 s, a constant set in its
``__init__``, for each output message of a cell after the kernel has replied that the cell
finished. On a loaded machine (8 processes on 2 cores) the kernel's output thread can lag more
than that behind, and nbval then fails with "Timeout of 5 seconds exceeded waiting for output"
although the cell ran fine. ``--nbval-output-timeout`` (default 120 s) replaces that constant on
every collected cell. It changes only how long nbval waits, never what it compares; a cell that
really hangs is still stopped by ``--nbval-cell-timeout``.

The stored outputs come from ``make notebooks`` (``tools/notebooks.py execute``): the CI-size
settings (``OASIS_CI=1``) and one torch thread. :func:`pytest_configure` gives nbval's kernels the
same two settings unless they are set already, so that a plain
``pytest --nbval --nbval-sanitize-with notebooks/sanitize.cfg notebooks/`` passes on a machine
with any number of cores, not only through ``make test-notebooks``.
"""

from __future__ import annotations

import os

OUTPUT_TIMEOUT = 120.0  # seconds; nbval's own value is 5


def pytest_addoption(parser):
    parser.addoption(
        "--nbval-output-timeout", type=float, default=OUTPUT_TIMEOUT,
        help=f"seconds nbval waits for each output message of a cell (nbval's fixed value is 5; "
             f"default here {OUTPUT_TIMEOUT:g})")


#: What the stored outputs were computed with (tools/notebooks.py sets the same).
KERNEL_ENV = {"OASIS_CI": "1", "OMP_NUM_THREADS": "1"}


def pytest_configure(config):
    for key, value in KERNEL_ENV.items():  # inherited by the kernels nbval starts
        os.environ.setdefault(key, value)


def pytest_collection_modifyitems(config, items):
    timeout = config.getoption("nbval_output_timeout")
    if timeout <= 0:
        raise ValueError(f"--nbval-output-timeout must be > 0 seconds, got {timeout!r}")
    for item in items:
        if type(item).__name__ == "IPyNbCell" and hasattr(item, "output_timeout"):
            item.output_timeout = timeout
