"""The spectra figure: one curve per image set, its data the library's spectrum, the ratio
panel exactly 1 for the reference set."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from oasis_lib.evaluation.texture import radial_power_spectrum  # noqa: E402
from oasis_lib.viz.texture import plot_radial_spectra  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_the_spectra_figure_draws_the_librarys_spectra_and_their_ratio(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 32, 32, generator=g) * 2 - 1
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    mask = torch.ones(3, 32, 32, dtype=torch.long)
    fig = plot_radial_spectra({"real": x, "blurred": blurred}, mask, title="t")
    ax, ax_ratio = fig.axes[:2]
    curves = [line for line in ax.get_lines() if len(line.get_xdata()) > 2]
    assert [c.get_label().split(" (")[0] for c in curves] == ["real", "blurred"]
    freqs, power = radial_power_spectrum(blurred, mask, average=True)
    np.testing.assert_allclose(curves[1].get_xdata(), freqs.numpy())
    np.testing.assert_allclose(curves[1].get_ydata(), power.numpy())
    ratios = [line for line in ax_ratio.get_lines() if len(line.get_xdata()) > 2]
    np.testing.assert_allclose(ratios[0].get_ydata(), 1.0)
    assert ratios[1].get_ydata()[-4:].max() < 0.5  # the blur loses the top of the spectrum
    # the 0.25 cycles/pixel line on both panels
    for a in (ax, ax_ratio):
        assert any(list(line.get_xdata()) == [0.25, 0.25] for line in a.get_lines())
    out = plot_radial_spectra({"real": x}, save_to=tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 0
    assert not plt.fignum_exists(out.number)  # saved and closed


def test_the_spectra_figure_needs_a_set():
    with pytest.raises(ValueError, match="at least one set"):
        plot_radial_spectra({})
