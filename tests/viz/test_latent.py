"""Latent-diffusion figures: frames hold exactly what the library computes (the posterior-mean
reconstruction and its in-brain metrics; the decoded x0 of a chain), figures name the values,
sliders redraw."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from oasis_lib.config import TrainConfig  # noqa: E402
from oasis_lib.evaluation.reconstruction import reconstruction_metrics  # noqa: E402
from oasis_lib.models.autoencoder import AutoencoderKL  # noqa: E402
from oasis_lib.models.factory import build_pipeline  # noqa: E402
from oasis_lib.viz import latent  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    cfg = TrainConfig.from_preset("tiny", image_size=32, autoencoder="(in memory)",
                                  latent_scale_factor=1.7, precision="fp32")
    return build_pipeline(cfg, autoencoder=AutoencoderKL("tiny").eval(), warn=False).eval()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    x = torch.rand((3, 1, 32, 32), generator=g) * 2 - 1
    masks = torch.zeros(3, 32, 32, dtype=torch.long)
    masks[:, 8:24, 8:24] = 2
    return x, masks


def test_reconstruct_is_the_decoded_posterior_mean(pipe, images):
    x, _ = images
    ae = pipe.autoencoder
    rec = latent.reconstruct(ae, x, batch_size=2)
    with torch.no_grad():
        want = ae.decode(ae.encode(x).mode()).clamp(-1, 1)
    torch.testing.assert_close(rec, want)


def test_reconstruction_frame_and_figure(pipe, images):
    x, masks = images
    rec = latent.reconstruct(pipe.autoencoder, x)
    frame = latent.reconstruction_frame(x, rec, masks, 2)
    m = reconstruction_metrics(x[2:], rec[2:], brain_mask=masks[2:])
    assert frame["psnr"] == pytest.approx(m["psnr"])
    assert frame["ssim"] == pytest.approx(m["ssim"])
    torch.testing.assert_close(frame["difference"], rec[2] - x[2])
    fig = latent.reconstruction_figure(frame)
    assert f"PSNR {m['psnr']:.1f} dB" in fig._suptitle.get_text()
    assert fig.axes[1].get_title() == "reconstruction D(μ(x))"
    with pytest.raises(ValueError, match=r"i must be in 0\.\.2"):
        latent.reconstruction_frame(x, rec, masks, 3)
    slider = latent.reconstruction_slider(x, rec, masks)
    slider.children[0].value = 1
    assert "validate slice 2 of 3" in slider.result._suptitle.get_text()


def test_latent_channels_figure_titles_each_channel(pipe, images):
    x, _ = images
    z = pipe.encode(x[:1])[0]
    fig = latent.latent_channels_figure(x[0], z)
    assert len(fig.axes) == 1 + z.shape[0]
    assert f"std {z[1].std():.2f}" in fig.axes[2].get_title()


def test_decode_chain_decodes_every_x0_prediction(pipe):
    result = pipe.sample(2, sampler="ddim", steps=3, return_intermediates=True, progress=False,
                         generator=torch.Generator().manual_seed(0))
    decoded = latent.decode_chain(pipe, result, index=1)
    assert decoded.shape == (len(result.timesteps), 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(decoded[-1], result.images[1].clamp(-1, 1))
        torch.testing.assert_close(decoded[0], pipe.decode(result.x0s[:1, 1]).clamp(-1, 1)[0])
    frame = latent.latent_reverse_frame(result, decoded, 0, index=1)
    assert frame["t"] == int(result.timesteps[0])
    assert frame["z_t"].shape == (8, 8)
    slider = latent.latent_reverse_slider(result, decoded, index=1, channel=1)
    slider.children[0].value = len(result.timesteps) - 1
    last = len(result.timesteps) - 1
    assert slider.result._suptitle.get_text().startswith(
        f"record {last} of 0-{last} ({last} = final sample): clean (t = -1)")
    left = slider.result.axes[0]
    assert "channel 1" in left.get_title()
    torch.testing.assert_close(torch.as_tensor(left.images[0].get_array().data),
                               result.xs[-1, 1, 1].float())


def test_decoder_figure_shows_both_decoders_and_their_difference():
    full = torch.zeros(3, 1, 8, 8)
    light = full.clone()
    light[1, 0, 2, 2] = 0.1  # one pixel of one image differs by 0.1
    fig = latent.decoder_figure(full, light, gain=4.0)
    axes = fig.axes
    assert len(axes) == 9
    assert [axes[3 * r].get_ylabel() for r in range(3)] == [
        "full decoder", "light decoder", "|difference| x 4"]
    diff = axes[7].get_images()[0].get_array()  # row 3, column 2
    assert float(diff[2, 2]) == pytest.approx(4 * 0.1 / 2)  # on the [0, 1] display scale
    assert float(diff.sum()) == pytest.approx(0.2)
    assert float(axes[6].get_images()[0].get_array().sum()) == 0.0


def test_decoder_table_reads_the_benchmark_json(tmp_path):
    import json

    cost = {"full": {"params": 610393, "gflop_per_slice": 6.08, "seconds_fp32": 1.25,
                     "seconds_bf16": 0.68},
            "light": {"params": 148180, "gflop_per_slice": 1.74, "seconds_fp32": 0.30}}
    fidelity = {"light vs full decoder": {"psnr_brain": 36.46, "ssim_brain": 0.9696}}
    path = tmp_path / "decoder.json"
    whole = [{"decoder": "light", "layout": "channels_last", "seconds_fp32": 0.81,
              "seconds_bf16": 0.4}]
    path.write_text(json.dumps({"cost": cost, "fidelity": fidelity}))
    assert "whole sample" not in latent.decoder_table(path)
    path.write_text(json.dumps({"cost": cost, "fidelity": fidelity, "whole_samples": whole}))
    assert "light decoder       | channels_last |   0.81 |   0.40" in latent.decoder_table(path)
    lines = latent.decoder_table(path).splitlines()
    assert lines[1].split("|") == ["full    ", "    610,393 ", "          6.08 ",
                                   "        1.25 ", "        0.68"]
    assert lines[2].endswith("|           -")  # no bf16 time measured
    assert lines[-1] == "light vs full decoder   |           36.46 | 0.9696"
