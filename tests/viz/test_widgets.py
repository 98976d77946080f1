"""The notebook sliders: for a given slider value, the frame holds what the library computes
directly (q_sample at that t with the fixed noise; the stored intermediate at that step; the
dataset's slice), figures have a fixed size and a title naming the value, and moving a slider
redraws with the new value."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from oasis_lib.data import OASISDataset, image_dir, mask_dir  # noqa: E402
from oasis_lib.diffusion.sampling import sample  # noqa: E402
from oasis_lib.diffusion.schedule import NoiseSchedule  # noqa: E402
from oasis_lib.viz import widgets  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def x0_noise():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand((1, 16, 16), generator=g) * 2 - 1
    return x0, torch.randn((1, 16, 16), generator=g)


@pytest.fixture(scope="module")
def chain():
    """A 10-step DDIM chain of 3 images with a fixed dummy model, every 3rd step recorded."""
    schedule = NoiseSchedule("cosine", 50)

    def model(x, t):
        return 0.1 * x + 1e-3 * t[:, None, None, None]

    result = sample(model, schedule, (3, 1, 8, 8), sampler="ddim", steps=10,
                    generator=torch.Generator().manual_seed(0), return_intermediates=True,
                    every=3, progress=False)
    return result


def _title(fig) -> str:
    return fig._suptitle.get_text()


# ---------------------------------------------------------------------------- forward
@pytest.mark.parametrize("kind", ["cosine", "linear"])
@pytest.mark.parametrize("t", [0, 1, 37, 99])
def test_forward_frame_is_q_sample_at_t(x0_noise, kind, t):
    x0, noise = x0_noise
    schedule = NoiseSchedule(kind, 100, warn=False)
    frame = widgets.forward_frame(x0, noise, schedule, t)
    expected = schedule.q_sample(x0[None], torch.tensor([t]), noise[None])[0]
    torch.testing.assert_close(frame["x_t"], expected, rtol=0, atol=0)
    assert frame["t"] == t
    assert frame["alpha_bar"] == schedule.alpha_bar_at(t)
    assert frame["signal"] == pytest.approx(schedule.alpha_bar_at(t) ** 0.5)
    assert frame["noise_scale"] == pytest.approx((1 - schedule.alpha_bar_at(t)) ** 0.5)
    torch.testing.assert_close(frame["noise"], noise)
    torch.testing.assert_close(frame["x0"], x0)


def test_forward_frame_accepts_2d_and_4d_images(x0_noise):
    x0, noise = x0_noise
    schedule = NoiseSchedule("cosine", 100)
    ref = widgets.forward_frame(x0, noise, schedule, 10)["x_t"]
    torch.testing.assert_close(widgets.forward_frame(x0[0], noise[0], schedule, 10)["x_t"], ref)
    torch.testing.assert_close(widgets.forward_frame(x0[None], noise[None], schedule, 10)["x_t"],
                               ref)


@pytest.mark.parametrize("t", [-1, 100])
def test_forward_frame_rejects_t_outside_schedule(x0_noise, t):
    with pytest.raises(ValueError, match=r"t must be in 0\.\.99"):
        widgets.forward_frame(*x0_noise, NoiseSchedule("cosine", 100), t)


def test_forward_frame_rejects_mismatched_noise(x0_noise):
    x0, _ = x0_noise
    with pytest.raises(ValueError, match="noise has shape"):
        widgets.forward_frame(x0, torch.zeros(1, 8, 8), NoiseSchedule("cosine", 100), 3)


def test_forward_figure_size_fixed_and_title_names_t(x0_noise):
    schedule = NoiseSchedule("cosine", 100)
    figs = [widgets.forward_figure(widgets.forward_frame(*x0_noise, schedule, t))
            for t in (0, 50, 99)]
    sizes = {tuple(f.get_size_inches()) for f in figs} | {f.dpi for f in figs}
    assert sizes == {widgets.FORWARD_FIGSIZE, widgets.DPI}
    for fig, t in zip(figs, (0, 50, 99), strict=True):
        assert _title(fig).startswith(f"t = {t}:")
        assert len(fig.axes) == 4


def test_forward_slider_redraws_at_the_chosen_t(x0_noise):
    schedule = NoiseSchedule("cosine", 100)
    w = widgets.forward_slider(*x0_noise, schedule, t=10)
    slider = w.children[0]
    assert (slider.min, slider.max, slider.value) == (0, 99, 10)
    assert slider.continuous_update is False
    assert _title(w.result).startswith("t = 10:")
    slider.value = 73
    assert _title(w.result).startswith("t = 73:")
    assert plt.get_fignums() == []  # each redraw closes its figure


# ---------------------------------------------------------------------------- reverse
def test_reverse_frame_is_the_stored_intermediate(chain):
    assert len(chain.timesteps) == 5  # steps 0, 3, 6, 9 of the loop, and the final image
    for k in range(len(chain.timesteps)):
        for index in range(3):
            frame = widgets.reverse_frame(chain, k, index=index)
            assert torch.equal(frame["x_t"], chain.xs[k, index])
            assert torch.equal(frame["x0_pred"], chain.x0s[k, index])
            assert frame["t"] == int(chain.timesteps[k])
            assert frame["k"] == k
            assert frame["num_records"] == 5
    final = widgets.reverse_frame(chain, 4, index=1)
    assert final["t"] == -1
    torch.testing.assert_close(final["x_t"], chain.images[1].cpu())


def test_reverse_frame_first_record_is_x_T_at_T_minus_1(chain):
    frame = widgets.reverse_frame(chain, 0)
    assert frame["t"] == 49


@pytest.mark.parametrize("k", [-1, 5])
def test_reverse_frame_rejects_k_outside_chain(chain, k):
    with pytest.raises(ValueError, match=r"k must be in 0\.\.4"):
        widgets.reverse_frame(chain, k)


def test_reverse_frame_rejects_bad_index(chain):
    with pytest.raises(ValueError, match="index must be"):
        widgets.reverse_frame(chain, 0, index=3)


def test_reverse_figure_title_names_step_and_t(chain):
    fig = widgets.reverse_figure(widgets.reverse_frame(chain, 1))
    assert _title(fig) == f"reverse step 1 of 4: t = {int(chain.timesteps[1])}"
    assert tuple(fig.get_size_inches()) == widgets.REVERSE_FIGSIZE
    fig = widgets.reverse_figure(widgets.reverse_frame(chain, 4))
    assert _title(fig) == "reverse step 4 of 4: final image (t = -1, clean)"
    assert tuple(fig.get_size_inches()) == widgets.REVERSE_FIGSIZE


def test_reverse_slider_redraws_at_the_chosen_step(chain):
    w = widgets.reverse_slider(chain, index=2)
    slider = w.children[0]
    assert (slider.min, slider.max, slider.value, slider.continuous_update) == (0, 4, 0, False)
    assert _title(w.result).startswith("reverse step 0 of 4: t = 49")
    slider.value = 3
    assert _title(w.result) == f"reverse step 3 of 4: t = {int(chain.timesteps[3])}"


# ---------------------------------------------------------------------------- data
@pytest.fixture
def fake_dataset(fake_root):
    return OASISDataset(image_dir(fake_root, "train"), mask_dir(fake_root, "train"))


def test_slice_frame_is_the_dataset_item(fake_dataset, item_ids):
    for case, slice_ in [(1, 0), (1, 2), (2, 1)]:
        frame = widgets.slice_frame(fake_dataset, case, slice_)
        image, mask = fake_dataset[frame["index"]]  # no transform: the item itself
        torch.testing.assert_close(frame["image"], image, rtol=0, atol=0)
        assert torch.equal(frame["mask"], mask)
        assert item_ids(frame["image"], frame["mask"]) == ((case, slice_), (case, slice_))
        assert (frame["case"], frame["slice"]) == (case, slice_)


def test_slice_frame_ignores_random_flips(fake_root):
    from oasis_lib.data import default_transform

    ds = OASISDataset(image_dir(fake_root, "train"), mask_dir(fake_root, "train"),
                      default_transform(augment=True))
    frame = widgets.slice_frame(ds, 2, 2)
    assert torch.equal(frame["image"], ds.raw(frame["index"])[0].float() / 127.5 - 1)


def test_slice_frame_unknown_case_names_the_cases(fake_dataset):
    with pytest.raises(ValueError, match=r"case 7 slice 0 is not in this dataset \(cases: 1, 2\)"):
        widgets.slice_frame(fake_dataset, 7, 0)


def test_slice_figure_and_slider(fake_dataset):
    fig = widgets.slice_figure(widgets.slice_frame(fake_dataset, 2, 1))
    assert _title(fig) == "case 002, slice 1"
    assert tuple(fig.get_size_inches()) == widgets.SLICE_FIGSIZE
    w = widgets.slice_slider(fake_dataset)
    case_w, slice_w = w.children[:2]
    assert list(case_w.options) == [1, 2]
    assert (slice_w.min, slice_w.max) == (0, 2)
    assert case_w.continuous_update is False
    assert slice_w.continuous_update is False
    assert _title(w.result) == "case 001, slice 1"
    case_w.value = 2
    slice_w.value = 2
    assert _title(w.result) == "case 002, slice 2"
