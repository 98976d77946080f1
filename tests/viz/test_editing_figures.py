"""The editing figures: each frame is the library's own SDEdit / DDIM inversion, figures have
a fixed layout, and the SDEdit slider redraws at the chosen t0."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from oasis_lib.diffusion.editing import ddim_invert, sdedit  # noqa: E402
from oasis_lib.models.conditioning import Condition  # noqa: E402
from oasis_lib.viz import editing as ev  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "diffusion"))
from test_conditional_pipeline import SIZE, conditional_pipeline, mask_condition  # noqa: E402, I001


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def pipe():
    return conditional_pipeline()


@pytest.fixture(scope="module")
def image():
    return torch.rand((1, SIZE, SIZE), generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_sdedit_frame_is_the_library_sdedit(pipe, image):
    cond = mask_condition()
    frame = ev.sdedit_frame(pipe, image, 0.5, n=2, steps=4, seed=3, condition=cond, scale=2.0)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn((2, 1, SIZE, SIZE), generator=g)
    net = pipe.denoiser(condition=cond, guidance_scale=2.0, batch_size=2)
    want = sdedit(net, pipe.schedule, image[None].expand(2, -1, -1, -1), 0.5, steps=4,
                  generator=g, noise=noise, prediction_type=pipe.prediction_type)
    assert torch.allclose(frame["edited"], want)
    assert frame["rms"].shape == (2,)
    assert frame["dice"] is None  # no segmenter
    assert torch.equal(ev.sdedit_frame(pipe, image, 0.0, n=1)["edited"][0], image)
    fig = ev.sdedit_figure([frame, frame])
    assert len(fig.axes) == 2 * 4
    assert "t0 = 0.50" in fig._suptitle.get_text()


def test_sdedit_frame_rms_over_the_unchanged_pixels(pipe, image):
    unchanged = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    unchanged[: SIZE // 2] = True  # the top half
    frame = ev.sdedit_frame(pipe, image, 0.5, n=2, steps=3, unchanged=unchanged)
    top = (frame["edited"] - image)[:, 0, : SIZE // 2]
    assert torch.allclose(frame["rms_unchanged"], top.pow(2).flatten(1).mean(1).sqrt())
    everywhere = ev.sdedit_frame(pipe, image, 0.5, n=2, steps=3,
                                 unchanged=torch.ones(SIZE, SIZE, dtype=torch.bool))
    assert torch.allclose(everywhere["rms_unchanged"], everywhere["rms"])
    assert ev.sdedit_frame(pipe, image, 0.5, n=1, steps=1)["rms_unchanged"] is None
    fig = ev.sdedit_figure(frame)
    assert f"({float(frame['rms_unchanged'][0]):.2f})" in fig.axes[2].get_title()


def test_sdedit_slider_redraws_at_the_chosen_t0(pipe, image, monkeypatch):
    seen = []
    monkeypatch.setattr(ev, "_show", lambda fig: seen.append(fig._suptitle.get_text()))
    w = ev.sdedit_slider(pipe, image, n=1, steps=2)
    w.children[0].value = 0.3
    assert "t0 = 0.30" in seen[-1]


def test_inversion_frame_round_trip(pipe, image):
    cond = mask_condition()
    frame = ev.inversion_frame(pipe, image, 5, condition=cond)
    net = pipe.denoiser(condition=cond, batch_size=1)
    want = ddim_invert(net, pipe.schedule, image[None], steps=5,
                       prediction_type=pipe.prediction_type)
    assert torch.allclose(frame["x_T"], want[0])
    decoded = pipe.sample(1, steps=5, x_T=want, clip_x0=False, condition=cond,
                          progress=False).clamp(-1, 1)
    assert torch.allclose(frame["decoded"], decoded[0])
    assert frame["rms"] == pytest.approx(float((decoded[0] - image).pow(2).mean().sqrt()),
                                         rel=1e-5)
    other = ev.inversion_frame(pipe, image, 5, condition=cond, decode_condition=Condition())
    assert torch.equal(other["x_T"], frame["x_T"])
    assert not torch.equal(other["decoded"], frame["decoded"])
    fig = ev.inversion_figure([frame, other], labels=["own", "null"])
    assert len(fig.axes) == 8
    assert fig.axes[0].get_title() == "input (own)"
