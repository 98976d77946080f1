"""Flow-matching figures (notebook 11): frames hold what the library computes (the pipeline's own
samples, the process's own draws, the exact toy field), figures have the panels they name, the
benchmark's JSON reads back as its table."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from oasis_lib.config import TrainConfig  # noqa: E402
from oasis_lib.diffusion.flow_matching import flow_forward  # noqa: E402
from oasis_lib.diffusion.schedule import NoiseSchedule  # noqa: E402
from oasis_lib.models.factory import build_pipeline  # noqa: E402
from oasis_lib.viz import flow  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():  # the figure tests' usual guard (tests/viz/test_latent.py)
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    cfg = TrainConfig.from_preset("tiny", image_size=16, precision="fp32", diffusion={
        "noise_process": "rectified-flow", "prediction_type": "velocity", "min_snr_gamma": None})
    return build_pipeline(cfg, warn=False).eval()


def test_paths_figure_puts_the_library_path_in_its_panels():
    sched = NoiseSchedule("cosine", 1000)
    x0, noise = torch.rand(1, 8, 8) * 2 - 1, torch.randn(1, 8, 8)
    fig = flow.paths_figure(x0, noise, sched, (0.0, 0.5, 1.0))
    axes = fig.axes
    assert len(axes) == 6
    want = flow_forward(x0[None], torch.tensor([0.5]), noise[None])[0]
    shown = axes[1].images[0].get_array()
    np.testing.assert_allclose(shown, ((want[0].clamp(-1, 1) + 1) / 2).numpy(), atol=1e-6)
    assert axes[4].get_title() == "VP, timestep 500"  # round(0.5 * 999)


def test_coefficients_and_time_figures_draw():
    assert len(flow.coefficients_figure(NoiseSchedule("cosine", 100)).axes) == 2
    draws = {"uniform": torch.rand(500), "ln": torch.sigmoid(torch.randn(500))}
    fig = flow.time_sampling_figure(draws, {"ln": flow.logit_normal()}, shifts=(1.0, 3.0))
    assert len(fig.axes[1].lines) == 3  # two shifts and the diagonal


def test_few_step_frame_is_the_pipelines_own_sample(pipe):
    x_T = torch.randn(2, *pipe.sample_shape, generator=torch.Generator().manual_seed(0))
    frame = flow.few_step_frame(pipe, x_T, 3)
    want = pipe.sample(2, sampler="flow-euler", steps=3, x_T=x_T, progress=False).clamp(-1, 1)
    torch.testing.assert_close(frame["images"], want)
    fig = flow.few_step_figure([frame, flow.few_step_frame(pipe, x_T, 1)])
    assert len(fig.axes) == 4
    assert fig.axes[2].get_ylabel() == "1 step"


def test_few_step_slider_redraws(pipe):
    pytest.importorskip("ipywidgets")
    x_T = torch.randn(1, *pipe.sample_shape)
    slider = flow.few_step_slider(pipe, x_T, hi=4)
    assert slider.children[0].max == 4
    assert slider.children[0].value == 1


def test_toy_trajectories_start_at_the_starts_and_one_step_ends_on_the_mean():
    points = torch.tensor([[-2.0, -1.0], [2.0, 3.0]])
    starts = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    xs = flow.toy_trajectories(points, starts, 1, std=0.3)
    assert xs.shape == (2, 5, 2)
    torch.testing.assert_close(xs[0], starts.double())
    torch.testing.assert_close(xs[-1], points.double().mean(0).expand(5, 2))
    fig = flow.toy_flow_figure(points, starts, (20, 1), std=0.3)
    assert [ax.get_title() for ax in fig.axes] == ["20 Euler steps", "1 Euler step"]


def test_nfe_table_reads_the_benchmark_json(tmp_path):
    rows = [{"label": lab, "budget": b, "calls": b - (lab == "heun"), "frechet": 0.5 + b / 100,
             "kid": 0.004, "frechet_floor": 0.2, "kid_floor": 0.0008}
            for lab in ("euler", "heun") for b in (4, 8)]
    path = tmp_path / "nfe.json"
    path.write_text(json.dumps({"argv": {"n": 128}, "results": rows}))
    table = flow.nfe_table(path).splitlines()
    assert table[0].split("|")[1].strip() == "NFE 4"
    assert table[2].startswith("heun")
    assert "0.580 /  4.00 ( 7)" in table[2]
    assert table[-1].endswith("n = 128 per cell")
