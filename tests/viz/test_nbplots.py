"""The notebook figures: each draws, at the fixed size nbval compares, with the expected panels."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from oasis_lib.diffusion.schedule import NoiseSchedule  # noqa: E402
from oasis_lib.viz import nbplots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _size(fig) -> tuple[int, int]:
    w, h = fig.get_size_inches() * fig.dpi
    return round(w), round(h)


def test_intensity_histogram():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 8, 8), generator=g, dtype=torch.uint8)
    masks = torch.randint(0, 4, (3, 8, 8), generator=g)
    fig = nbplots.intensity_histogram(images, masks)
    assert _size(fig) == (1100, 360)
    assert len(fig.axes) == 2
    heights = [p.get_height() for p in fig.axes[1].patches]
    assert heights == pytest.approx((torch.bincount(masks.reshape(-1), minlength=4) / 192).tolist())


def test_forward_strip_titles_and_size():
    s = NoiseSchedule("cosine", 100)
    x0, noise = torch.zeros(1, 8, 8), torch.randn(1, 8, 8)
    fig = nbplots.forward_strip(x0, noise, s, [0, 50, 99])
    assert _size(fig) == (1200, 290)
    assert len(fig.axes) == 3
    assert fig.axes[1].get_title().startswith("t = 50\nalpha_bar = ")


def test_schedule_curves_handles_zero_terminal_snr():
    schedules = {"cosine": NoiseSchedule("cosine", 100),
                 "zero SNR": NoiseSchedule("linear", 100, zero_terminal_snr=True)}
    fig = nbplots.schedule_curves(schedules)
    assert _size(fig) == (1100, 380)
    assert len(fig.axes) == 2
    # The left panel draws alpha_bar itself, and the legend carries alpha_bar_T.
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), schedules["cosine"].alpha_bar.double().numpy())
    assert f"{schedules['cosine'].alpha_bar_T:.3g}" in line.get_label()
    assert len(fig.axes[1].lines[1].get_xdata()) == 99  # log-SNR = -inf at t = T is left out


def test_terminal_comparison():
    fig = nbplots.terminal_comparison(torch.zeros(1, 16, 16), torch.randn(1, 16, 16),
                                      NoiseSchedule("quadratic", 50, warn=False), sigma=2)
    assert _size(fig) == (1100, 360)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "x_T at the last training step\n(quadratic, T = 50)\ngrey scale -2.5 to 2.5"
    assert titles[3].endswith("grey scale -0.25 to 0.25")  # blurred: 10x narrower
    assert "sigma = 2 px" in titles[2]
    # x0 = 0 everywhere: x_T is sqrt(1 - alpha_bar_T) * noise, shown as the first panel.
    s = NoiseSchedule("quadratic", 50, warn=False)
    shown = np.asarray(fig.axes[0].images[0].get_array())
    assert float(shown.std()) == pytest.approx((1 - s.alpha_bar_T) ** 0.5, rel=0.15)


def test_gaussian_blur_keeps_constants_and_shrinks_noise():
    x = torch.full((1, 1, 32, 32), 0.7)
    torch.testing.assert_close(nbplots.gaussian_blur(x, 3.0), x)
    noise = torch.randn((1, 1, 64, 64), generator=torch.Generator().manual_seed(0))
    std = float(nbplots.gaussian_blur(noise, 4.0)[..., 16:-16, 16:-16].std())
    assert std == pytest.approx(1 / (2 * math.pi**0.5 * 4.0), rel=0.25)


def test_embedding_heatmap():
    from oasis_lib.models.embeddings import sinusoidal_embedding

    fig = nbplots.embedding_heatmap(50, 8)
    assert _size(fig) == (1100, 380)
    assert len(fig.axes) == 4  # two panels and their colour bars
    heat = np.asarray(fig.axes[0].images[0].get_array())
    expected = sinusoidal_embedding(torch.arange(50), 8).double().T.numpy()
    np.testing.assert_allclose(heat, expected, rtol=1e-6)
    sim = np.asarray(fig.axes[1].images[0].get_array())
    np.testing.assert_allclose(sim.diagonal(), 1.0, rtol=1e-6)  # E(t) is nearest to itself


def test_parameter_bars():
    fig = nbplots.parameter_bars({"a": 10, "b": 1_000})
    assert _size(fig) == (800, 300)
    assert [t.get_text() for t in fig.axes[0].texts] == [" 10", " 1,000"]


def test_show_pngs(tmp_path):
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"g{i}.png")
        Image.new("L", (10, 10), color=i * 40).save(paths[-1])
    fig = nbplots.show_pngs(paths, [f"epoch {i}" for i in range(6)], ncols=4)
    assert _size(fig) == (1200, 360)
    assert [ax.get_title() for ax in fig.axes] == ["epoch 0", "epoch 2", "epoch 3", "epoch 5"]
    with pytest.raises(ValueError, match="no PNG"):
        nbplots.show_pngs([])


def test_sampler_rows_leaves_missing_cells_blank():
    rows = {"ddim": torch.zeros(4, 1, 8, 8), "ddpm": torch.zeros(1, 1, 8, 8)}
    fig = nbplots.sampler_rows(rows, ncols=4)
    assert _size(fig) == (800, 340)
    assert len(fig.axes) == 8
    assert [len(ax.images) for ax in fig.axes] == [1, 1, 1, 1, 1, 0, 0, 0]


@pytest.mark.parametrize(("n", "shape"), [(1, (1, 1)), (4, (2, 2)), (5, (2, 3)), (16, (4, 4))])
def test_grid_shape(n, shape):
    assert nbplots.grid_shape(n) == shape
