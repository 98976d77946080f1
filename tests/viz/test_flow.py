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


def test_the_slider_draws_one_row_per_model_from_the_same_noise(pipe):
    x_T = torch.randn(2, *pipe.sample_shape, generator=torch.Generator().manual_seed(1))
    frames = [flow.few_step_frame(pipe, x_T, 2, label=name) for name in ("a", "b")]
    torch.testing.assert_close(frames[0]["images"], frames[1]["images"])
    fig = flow.few_step_figure(frames)
    assert fig.axes[0].get_ylabel() == "a\n2 steps"
    assert fig.axes[2].get_ylabel() == "b\n2 steps"
    pytest.importorskip("ipywidgets")
    w = flow.few_step_slider({"a": pipe, "b": pipe}, x_T, hi=3)
    assert w.children[0].max == 3


def test_straightness_curves_are_the_library_measure_of_the_pipelines_path(pipe):
    x_T = torch.randn(2, *pipe.sample_shape, generator=torch.Generator().manual_seed(2))
    curves = flow.straightness_curves({"m": pipe}, x_T, steps=4)
    np.testing.assert_allclose(curves["m"]["t"], [0.875, 0.625, 0.375, 0.125])  # trailing grid
    res = pipe.sample(2, sampler="flow-euler", steps=4, spacing="trailing", x_T=x_T,
                      return_intermediates=True, progress=False)
    xs = res.xs.double()
    c = (xs[-1] - xs[0]) / (0.0 - 1.0)  # the chord's velocity, t from 1 to 0
    v0 = (xs[1] - xs[0]) / (0.75 - 1.0)  # the first step's
    expected = float((v0 - c).pow(2).mean() / c.pow(2).mean())
    assert curves["m"]["bend"][0] == pytest.approx(expected, rel=1e-9)
    assert curves["m"]["total"] == pytest.approx(0.25 * curves["m"]["bend"].sum(), rel=1e-9)
    fig = flow.straightness_figure(curves)
    assert "weighted sum" in fig.axes[0].get_legend().get_texts()[0].get_text()


def test_few_step_table_reads_the_benchmark_json(tmp_path):
    row = {"model": "teacher", "reference": True, "steps": 20, "spacing": "linspace",
           "frechet": 0.25, "frechet_ratio": 1.0, "kid": 0.002, "rms_to_reference": 0.0,
           "seconds_fp32": 6.5, "seconds_bf16": 3.1, "frechet_floor": 0.2, "kid_floor": 0.001}
    student = {**row, "model": "student", "reference": False, "steps": 2, "spacing": "trailing",
               "frechet": 0.27, "frechet_ratio": 1.08, "rms_to_reference": 0.1,
               "seconds_bf16": 0.9}
    path = tmp_path / "few.json"
    path.write_text(json.dumps({"n": 128, "rows": [row, student]}))
    lines = flow.few_step_table(path).splitlines()
    assert lines[1].split("|")[1:4] == ["    20 ", " linspace ", " 0.250 (1.00x)   "]
    assert len(lines[0]) == len(lines[1].rsplit("|", 1)[0]) + len("| s / 16")
    assert lines[2].startswith("student")
    assert "0.270 (1.08x)" in lines[2]
    assert lines[2].endswith("0.90")
    assert lines[-1] == ("floor (real vs real): Fréchet 0.200, KID x1e3 1.00; n = 128 per row; "
                         "times in bf16")
