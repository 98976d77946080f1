"""The loss curve's smoothing (oasis_lib.viz.plotting.centred_mean) and the curve itself."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from oasis_lib.viz.plotting import centred_mean, plot_loss_curve  # noqa: E402


def falling_loss(n: int = 150, seed: int = 0) -> np.ndarray:
    """A training loss as the demo logs it: a fast fall, then noise of a factor ~2 per step."""
    rng = np.random.default_rng(seed)
    steps = np.arange(1, n + 1)
    return (0.05 + 0.9 * np.exp(-steps / 10)) * rng.lognormal(0.0, 0.5, n)


@pytest.mark.parametrize("width", [1, 2, 5, 10, 20, 21, 400])
def test_every_value_lies_within_the_range_of_its_window(width):
    v = falling_loss()
    m = centred_mean(v, width)
    for i in range(len(v)):
        h = min(width // 2, i, len(v) - 1 - i)
        window = v[i - h:i + h + 1]
        assert window.min() * (1 - 1e-12) <= m[i] <= window.max() * (1 + 1e-12), i


def test_closed_forms():
    line = 3.0 - 0.25 * np.arange(30)
    np.testing.assert_allclose(centred_mean(line, 10), line)  # ends included
    v = falling_loss(40)
    np.testing.assert_array_equal(centred_mean(v, 1), v)
    np.testing.assert_allclose(centred_mean(v, 4)[2], v[:5].mean())
    np.testing.assert_allclose(centred_mean(v, 4)[1], v[:3].mean())  # one on each side
    assert centred_mean(v, 4)[0] == v[0]


def test_the_first_values_never_enter_late_means():
    """Ten huge first losses, then a constant: from index 10 + width // 2 on, the mean is
    exactly the constant (a trailing mean of 20 stays above it until index 29)."""
    v = np.r_[np.full(10, 100.0), np.full(50, 0.1)]
    m = centred_mean(v, 20)
    np.testing.assert_allclose(m[20:], 0.1)
    trailing = np.convolve(v, np.ones(20) / 20, mode="valid")
    assert (trailing[:10] > 1.0).all()


@pytest.mark.parametrize("seed", range(4))
def test_the_smoothed_curve_runs_through_the_raw_points(seed):
    """The demo's defect: 30 losses logged every 10 steps, still falling; the trailing mean of
    20 lies above every raw point from step 200 on. The centred mean has raw points on both
    sides of it there."""
    rng = np.random.default_rng(seed)
    steps = 10 * np.arange(1, 31)
    v = (0.05 + 0.95 * np.exp(-steps / 40)) * rng.lognormal(0.0, 0.25, 30)
    late = v[19:]  # steps 200..300
    trailing = np.convolve(v, np.ones(20) / 20, mode="valid")  # the old curve, ends at 200..300
    assert (late > trailing).mean() <= 0.1
    assert 0.25 <= (late > centred_mean(v, 20)[19:]).mean() <= 0.75


def test_plot_loss_curve_draws_and_labels_the_centred_mean():
    v = falling_loss(60)
    records = [{"step": 2 * (k + 1), "loss": float(x)} for k, x in enumerate(v)]
    records.append({"step": 120, "val_loss": 0.1, "val_loss_ema": 0.09})
    fig = plot_loss_curve(records, smooth=10)
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    assert set(lines) == {"train loss, logged every 2 steps",
                          "train, centred mean of 11 points (±10 steps)",
                          "validation (live)", "validation (EMA)"}
    smoothed = lines["train, centred mean of 11 points (±10 steps)"]
    np.testing.assert_allclose(smoothed.get_ydata(), centred_mean(v, 10))
    np.testing.assert_array_equal(smoothed.get_xdata(), np.arange(2, 121, 2))
    plt.close(fig)
