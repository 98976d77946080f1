"""One place that seeds the global random streams, and makes the CPU generators we pass around.

Every random draw of the library takes an explicit ``torch.Generator`` on the CPU (so results
are identical on every device for a fixed seed); :func:`seed_everything` seeds only the global
streams that user code and third-party libraries draw from.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's legacy global stream and torch's default generator."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (seeds the legacy global stream for user code)
    torch.manual_seed(seed)


def cpu_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (draw on the CPU, then move to a device)."""
    return torch.Generator().manual_seed(int(seed))
