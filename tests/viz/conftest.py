"""The figure tests draw off-screen (Agg) and close every figure after each test."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _close_all_figures():
    yield
    plt.close("all")
