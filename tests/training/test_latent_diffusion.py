"""Latent diffusion end to end on tiny models: autoencoder -> cached latents -> diffusion in
latent space -> decoded samples; scale factor, cache reuse, export and reload."""

from __future__ import annotations

import pytest
import torch

from oasis_lib.config import AutoencoderTrainConfig, TrainConfig
from oasis_lib.data.latent_cache import cached_latents
from oasis_lib.pretrained import load_autoencoder, load_model
from oasis_lib.training.autoencoder import train_autoencoder
from oasis_lib.training.trainer import Trainer

SIZE = 32


@pytest.fixture(scope="module")
def root(oasis32):
    return oasis32


@pytest.fixture(scope="module")
def autoencoder_run(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ae")
    cfg = AutoencoderTrainConfig.from_preset("tiny", data_root=str(root), out_dir=str(out),
                                             max_steps=3, progress=False, precision="fp32",
                                             val_size=4)
    train_autoencoder(cfg)
    return out / "last.pt"


def ldm_config(root, ae, out, **kw) -> TrainConfig:
    return TrainConfig.from_preset("tiny", data_root=str(root), image_size=SIZE,
                                   autoencoder=str(ae), latent_cache_dir=str(out / "cache"),
                                   out_dir=str(out / "run"), progress=False, precision="fp32",
                                   val_size=4, sample_n=2, sample_steps=2, epochs=10, **kw)


def test_latent_run_trains_on_scaled_cached_latents(root, autoencoder_run, tmp_path):
    trainer = Trainer(ldm_config(root, autoencoder_run, tmp_path, max_steps=2))
    pipe = trainer.pipeline
    ae = load_autoencoder(autoencoder_run)
    c, h, w = ae.config.latent_shape(SIZE)
    assert pipe.sample_shape == (c, h, w) == (2, SIZE // 4, SIZE // 4)
    assert trainer.raw_model.config.in_channels == 2
    # The scale factor is 1 / std of the cached training latents, stored in the run's config.
    z = cached_latents(ae, trainer_train_set(root), tmp_path / "cache").latents
    assert pipe.scale_factor == pytest.approx(float(1 / z.double().std()))
    assert trainer.cfg.latent_scale_factor == pipe.scale_factor
    assert float(trainer.train_set.tensors[0].double().std()) == pytest.approx(1.0, rel=1e-5)
    trainer.fit()
    images = pipe.sample(2, steps=2, progress=False, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 1, SIZE, SIZE)
    assert (tmp_path / "run" / "samples" / "epoch_0001.png").is_file()


def trainer_train_set(root):
    from oasis_lib.data import load_splits

    return load_splits(root, SIZE, augment=False)[0]


def test_second_run_reuses_the_cache_and_resumes_exactly(root, autoencoder_run, tmp_path):
    cfg = ldm_config(root, autoencoder_run, tmp_path, max_steps=2)
    Trainer(cfg).fit()
    files = sorted((tmp_path / "cache").glob("latents-*.safetensors"))
    assert len(files) == 2  # train and validate
    stamps = [f.stat().st_mtime_ns for f in files]
    resumed = Trainer(ldm_config(root, autoencoder_run, tmp_path, max_steps=4), resume=True)
    assert [f.stat().st_mtime_ns for f in files] == stamps  # read, not re-encoded
    assert resumed.pipeline.scale_factor == cfg.latent_scale_factor
    resumed.fit()
    assert resumed.step == 4


def test_export_carries_the_autoencoder_and_reloads(root, autoencoder_run, tmp_path):
    cfg = ldm_config(root, autoencoder_run, tmp_path, max_steps=2)
    Trainer(cfg).fit()
    pipe = load_model(tmp_path / "run" / "last.pt", device="cpu")
    assert pipe.autoencoder is not None
    assert pipe.sample_shape[0] == 2
    path = pipe.save(tmp_path / "ldm.safetensors", dtype=torch.float32)
    again = load_model(path, device="cpu")
    assert again.config.autoencoder is None  # no machine path in a shared file
    assert again.scale_factor == pytest.approx(pipe.scale_factor)
    g = torch.Generator
    torch.testing.assert_close(
        again.sample(2, steps=2, progress=False, generator=g().manual_seed(1)),
        pipe.sample(2, steps=2, progress=False, generator=g().manual_seed(1)))


def test_cli_exports_autoencoder_and_latent_runs_to_files_that_sample(root, autoencoder_run,
                                                                      tmp_path, capsys):
    from PIL import Image

    from oasis_lib.checkpoint import load_safetensors
    from oasis_lib.cli import main

    # The autoencoder run -> a kind="autoencoder" file that `train --autoencoder` accepts.
    ae_file = tmp_path / "ae.safetensors"
    assert main(["export", "--checkpoint", str(autoencoder_run), "--out", str(ae_file)]) == 0
    assert "autoencoder weights" in capsys.readouterr().out
    _, meta = load_safetensors(ae_file)
    assert meta["kind"] == "autoencoder"
    assert meta["run"]["data_root"] is None
    ae = load_autoencoder(ae_file)
    ref = load_autoencoder(autoencoder_run)
    for (k, a), b in zip(ae.state_dict().items(), ref.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b.half().float(), msg=k)  # fp16 round trip

    # A latent run trained on that file -> one file with both networks, which samples alone.
    Trainer(ldm_config(root, ae_file, tmp_path, max_steps=2)).fit()
    ldm_file = tmp_path / "ldm.safetensors"
    assert main(["export", "--checkpoint", str(tmp_path / "run" / "last.pt"),
                 "--out", str(ldm_file)]) == 0
    assert "latent diffusion + autoencoder" in capsys.readouterr().out
    tensors, cfg = load_safetensors(ldm_file)
    assert cfg["autoencoder"] is None
    assert "autoencoder_config" in cfg
    assert any(k.startswith("autoencoder.") for k in tensors)
    ae_file.unlink()  # the export must not need the autoencoder file any more
    grid = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(ldm_file), "--sampler", "dpm++2m", "--steps",
                 "2", "--n", "2", "--seed", "0", "--out", str(grid), "--no-progress"]) == 0
    assert Image.open(grid).size[0] > SIZE  # a grid of decoded SIZE x SIZE slices
