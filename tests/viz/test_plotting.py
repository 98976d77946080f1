"""The loss curve's smoothing (oasis_lib.viz.plotting.centred_mean) and the curve itself."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from oasis_lib.viz.plotting import centred_mean, plot_loss_curve  # noqa: E402


def demo_like_loss(every: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 300-step run's loss, still falling, logged every ``every`` steps with noise of ~25%
    per step: (steps, losses)."""
    rng = np.random.default_rng(seed)
    steps = np.arange(every, 301, every)
    return steps, (0.05 + 0.95 * np.exp(-steps / 40)) * rng.lognormal(0.0, 0.25, len(steps))


@pytest.mark.parametrize("width", [1, 2, 5, 10, 20, 21])
def test_each_mean_lies_within_the_range_of_its_window(width):
    _, v = demo_like_loss(every=2)
    h = width // 2
    m = centred_mean(v, width)
    assert len(m) == len(v) - 2 * h
    for i, mean in enumerate(m, start=h):  # value i is the middle of its window
        window = v[i - h:i + h + 1]
        assert window.min() * (1 - 1e-12) <= mean <= window.max() * (1 + 1e-12), i


def test_closed_forms():
    line = 3.0 - 0.25 * np.arange(30)
    np.testing.assert_allclose(centred_mean(line, 10), line[5:-5])
    _, v = demo_like_loss()
    np.testing.assert_array_equal(centred_mean(v, 1), v)
    np.testing.assert_allclose(centred_mean(v, 4)[0], v[:5].mean())
    np.testing.assert_allclose(centred_mean(v, 4)[-1], v[-5:].mean())
    assert len(centred_mean(v[:4], 4)) == 0  # fewer values than one window


def test_the_first_values_never_enter_late_means():
    """Ten huge first losses, then a constant: from value 10 + width // 2 on, the mean is
    exactly the constant (a trailing mean of 20 stays above it until value 29)."""
    v = np.r_[np.full(10, 100.0), np.full(50, 0.1)]
    m = centred_mean(v, 20)  # m[k] is the mean around value k + 10
    np.testing.assert_allclose(m[10:], 0.1)
    trailing = np.convolve(v, np.ones(20) / 20, mode="valid")
    assert (trailing[:10] > 1.0).all()


@pytest.mark.parametrize("seed", range(4))
def test_the_demos_curve_runs_through_the_raw_points(seed):
    """The demo's defect: its loss logged every 10 steps and a trailing mean of 20 values, which
    lies above (nearly) every raw point from step 200 on. Now: logged every 2 steps, a centred
    mean of 21 values (±20 steps) has raw points on both sides of it from step 200 on."""
    _, v = demo_like_loss(every=10, seed=seed)
    trailing = np.convolve(v, np.ones(20) / 20, mode="valid")  # the old curve, at steps 200..300
    assert (v[19:] > trailing).mean() <= 0.1
    steps, v = demo_like_loss(every=2, seed=seed)
    late = steps[10:-10] >= 200  # the centred mean is drawn at steps 22..280
    above = (v[10:-10] > centred_mean(v, 20))[late]
    assert 0.25 <= above.mean() <= 0.75


def test_plot_loss_curve_draws_and_labels_the_centred_mean():
    steps, v = demo_like_loss(every=2)
    records = [{"step": int(k), "loss": float(x)} for k, x in zip(steps, v, strict=True)]
    records.append({"step": 120, "val_loss": 0.1, "val_loss_ema": 0.09})
    fig = plot_loss_curve(records, smooth=10)
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    assert set(lines) == {"train loss, logged every 2 steps",
                          "train, centred mean of 11 points (±10 steps)",
                          "validation (live)", "validation (EMA)"}
    smoothed = lines["train, centred mean of 11 points (±10 steps)"]
    np.testing.assert_allclose(smoothed.get_ydata(), centred_mean(v, 10))
    np.testing.assert_array_equal(smoothed.get_xdata(), np.arange(12, 291, 2))  # middles
    plt.close(fig)
