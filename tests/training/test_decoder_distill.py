"""Distilling a light decoder (training.decoder_distill) on tiny models: the loss in closed
form, a run that learns and resumes exactly, its export, a pipeline that decodes with it, and
the refusals (another autoencoder's decoder, a pixel model, a resumed run's teacher changed)."""

from __future__ import annotations

import pytest
import torch

from oasis_lib.checkpoint import CheckpointError, load_checkpoint
from oasis_lib.config import DecoderTrainConfig, TrainConfig
from oasis_lib.file_layout import run_kind
from oasis_lib.models.autoencoder import AutoencoderKL
from oasis_lib.models.autoencoder_config import AutoencoderConfig
from oasis_lib.models.factory import build_pipeline
from oasis_lib.pretrained import export_autoencoder, load_decoder, load_model
from oasis_lib.seeding import cpu_generator
from oasis_lib.training.decoder_distill import DecoderTrainer, distill_loss

SIZE = 32  # pixels; the tiny autoencoder's latents are 2 x 8 x 8


@pytest.fixture(scope="module")
def root(oasis32):
    return oasis32


def autoencoder_file(folder, seed: int):
    torch.manual_seed(seed)
    ae = AutoencoderKL(AutoencoderConfig.preset("tiny")).eval()
    ae.scale_factor.fill_(0.5)
    return export_autoencoder(ae, folder / f"ae{seed}.safetensors", dtype=torch.float32)


@pytest.fixture(scope="module")
def ae(tmp_path_factory):
    return autoencoder_file(tmp_path_factory.mktemp("ae"), 5)


def config(root, ae, out, **kw) -> DecoderTrainConfig:
    opts = dict(data_root=str(root), image_size=SIZE, autoencoder=str(ae),
                latent_cache_dir=str(out.parent / "cache"), out_dir=str(out), progress=False,
                batch_size=4, epochs=20)
    return DecoderTrainConfig.from_preset("tiny", **{**opts, **kw})


def test_the_loss_is_l1_plus_laplacian_l1():
    t = torch.randn(2, 1, 8, 8)
    assert float(distill_loss(t, t)) == 0.0
    # a constant offset has no Laplacian: only the L1 term sees it
    assert float(distill_loss(t + 0.3, t, edge_weight=5.0)) == pytest.approx(0.3, rel=1e-5)
    # one pixel raised by 1: L1 1/64; its Laplacian changes by -4 there and +1 at 4 neighbours,
    # all at valid positions of the 6x6 interior: (4 + 4) / 36 per image
    s = t.clone()
    s[:, :, 3, 3] += 1.0
    assert float(distill_loss(s, t, edge_weight=1.0)) == pytest.approx(1 / 64 + 8 / 36, rel=1e-5)


def test_a_run_learns_resumes_exactly_and_exports(root, ae, tmp_path):
    from oasis_lib.cli.main import main

    whole = DecoderTrainer(config(root, ae, tmp_path / "whole", max_steps=4)).fit()
    DecoderTrainer(config(root, ae, tmp_path / "cut", max_steps=2)).fit()
    resumed = DecoderTrainer(config(root, ae, tmp_path / "cut", max_steps=4), resume=True)
    assert resumed.fit().step == whole.step == 4
    a = load_checkpoint(tmp_path / "whole" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "last.pt")
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    assert run_kind(a["config"]) == "decoder"
    # the run learns: a longer run's validation loss falls
    long = DecoderTrainer(config(root, ae, tmp_path / "long", max_steps=60, epochs=60,
                                 lr=3e-3, ema_decay=0.0, latent_crop=None))
    first = long.validate()["val_loss"]
    long.fit()
    assert long.validate()["val_loss"] < 0.8 * first  # 0.875 -> 0.614 when written
    out = tmp_path / "lite.safetensors"
    assert main(["export", "--checkpoint", str(tmp_path / "whole" / "last.pt"),
                 "--out", str(out)]) == 0
    dec = load_decoder(out)
    from_run = load_decoder(tmp_path / "whole" / "last.pt")
    z = torch.randn(2, 2, 8, 8)
    torch.testing.assert_close(dec.decode(z), from_run.decode(z), atol=2e-3, rtol=0)  # fp16 file
    assert float(dec.latent_scale) == pytest.approx(0.5)


def latent_model(folder, ae):
    cfg = TrainConfig.from_preset("tiny", image_size=SIZE, autoencoder=str(ae),
                                  latent_scale_factor=0.5)
    return build_pipeline(cfg, warn=False).save(folder / "ldm.safetensors",
                                                dtype=torch.float32)


def test_a_pipeline_decodes_with_the_light_decoder(root, ae, tmp_path):
    DecoderTrainer(config(root, ae, tmp_path / "run", max_steps=2)).fit()
    run = tmp_path / "run" / "last.pt"
    model = latent_model(tmp_path, ae)
    plain, light = load_model(model), load_model(model, decoder=run)
    assert plain.decoder is None
    assert light.decoder is not None
    z = torch.randn(3, *light.sample_shape)
    torch.testing.assert_close(light.decode(z), light.decoder.decode(z / 0.5))
    torch.testing.assert_close(plain.decode(z), plain.autoencoder.decode(z / 0.5))
    a = plain.sample(2, steps=2, progress=False, generator=cpu_generator(0))
    b = light.sample(2, steps=2, progress=False, generator=cpu_generator(0))
    assert a.shape == b.shape == (2, 1, SIZE, SIZE)
    assert not torch.equal(a, b)
    # another autoencoder's decoder, a pixel model: refused
    (tmp_path / "other").mkdir()
    other = latent_model(tmp_path / "other", autoencoder_file(tmp_path, 9))
    with pytest.raises(CheckpointError, match="distilled from another autoencoder"):
        load_model(other, decoder=run)
    pixel = build_pipeline(TrainConfig.from_preset("tiny", image_size=SIZE), warn=False).save(
        tmp_path / "pixel.safetensors")
    with pytest.raises(CheckpointError, match="pixel-space"):
        load_model(pixel, decoder=run)
    with pytest.raises(CheckpointError, match="not a light decoder"):
        load_model(model, decoder=model)


def test_runs_that_cannot_work_are_refused(root, ae, tmp_path):
    with pytest.raises(ValueError, match="needs the autoencoder"):
        DecoderTrainConfig.from_preset("tiny", autoencoder=None).validate()
    with pytest.raises(ValueError, match="choose one of"):
        DecoderTrainConfig.from_preset("tiny", autoencoder="a", lite_decoder="huge").validate()
    with pytest.raises(ValueError, match="f=8"):  # a 3-level decoder upsamples by 8, not 4
        _three_levels(root, ae, tmp_path)
    DecoderTrainer(config(root, ae, tmp_path / "run", max_steps=1)).fit()
    other = autoencoder_file(tmp_path, 9)
    with pytest.raises(ValueError, match="not the autoencoder this run distils"):
        DecoderTrainer(config(root, other, tmp_path / "run", max_steps=2), resume=True)


def _three_levels(root, ae, tmp_path):
    from oasis_lib.models import lite_decoder

    tiny = lite_decoder.LITE_DECODER_PRESETS["tiny"]
    presets = {**lite_decoder.LITE_DECODER_PRESETS,
               "tiny": tiny.replace(channels=(8, 8, 8), blocks=(1, 1, 1))}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lite_decoder, "LITE_DECODER_PRESETS", presets)
        DecoderTrainer(config(root, ae, tmp_path / "f8", max_steps=1))


def test_the_cli_trains_exports_and_samples_with_a_light_decoder(root, ae, tmp_path, capsys):
    from conftest import assert_error_line

    from oasis_lib.cli.main import main

    run = tmp_path / "run"
    common = ["--autoencoder", str(ae), "--decoder-preset", "tiny", "--image-size", str(SIZE),
              "--data-root", str(root), "--latent-cache-dir", str(tmp_path / "cache"),
              "--batch-size", "4", "--precision", "fp32", "--no-progress", "--out", str(run)]
    assert main(["train-decoder", *common, "--max-steps", "2"]) == 0
    assert "trained the light decoder to step 2" in capsys.readouterr().out
    assert main(["train-decoder", *common, "--max-steps", "3", "--resume"]) == 0
    assert load_checkpoint(run / "last.pt")["step"] == 3
    lite = tmp_path / "lite.safetensors"
    assert main(["export", "--checkpoint", str(run / "last.pt"), "--out", str(lite)]) == 0
    assert "light decoder weights of step 3" in capsys.readouterr().out
    png = tmp_path / "s.png"
    assert main(["sample", "--checkpoint", str(latent_model(tmp_path, ae)), "--decoder",
                 str(lite), "--n", "2", "--steps", "1", "--no-progress", "--out",
                 str(png)]) == 0
    assert "decoded by lite.safetensors" in capsys.readouterr().out
    assert png.is_file()
    # a diffusion command on the decoder's folder names the command that resumes it
    assert main(["train", "--preset", "tiny", "--out", str(run), "--resume"]) == 2
    assert_error_line(capsys.readouterr().err, [r"decoder run", r"train-decoder"])


def test_sample_in_channels_last_draws_the_same_slices(ae, tmp_path, capsys):
    from PIL import Image

    from oasis_lib.cli.main import main

    model = latent_model(tmp_path, ae)
    pngs = []
    for flag in ([], ["--channels-last"]):
        png = tmp_path / f"s{len(flag)}.png"
        assert main(["sample", "--checkpoint", str(model), "--n", "2", "--steps", "2",
                     "--no-progress", "--out", str(png), *flag]) == 0
        pngs.append(torch.tensor(list(Image.open(png).convert("L").getdata()), dtype=float))
    assert "channels_last" in capsys.readouterr().out
    assert (pngs[0] - pngs[1]).abs().max() <= 1  # 8-bit PNGs: at most one level apart
