"""Warm start (``init_from``): a conditional U-Net started from an unconditional file computes
that file's output for every condition; the EMA starts there; the file is recorded in the run
and its export; a resume keeps its own weights; a latent file brings its autoencoder and
scale factor; anything that does not fit is refused by name."""

from __future__ import annotations

import json

import pytest
import torch
from synthetic import CondBlobs

from oasis_lib.checkpoint import atomic_save, load_checkpoint
from oasis_lib.config import TrainConfig
from oasis_lib.models.autoencoder import AutoencoderConfig, AutoencoderKL
from oasis_lib.models.conditioning import Condition
from oasis_lib.models.factory import build_model, build_pipeline
from oasis_lib.pretrained import export_autoencoder, load_model
from oasis_lib.training import Trainer
from oasis_lib.training.init_from import (
    InitFromError,
    read_init_source,
    resolve_init_config,
    warm_start_state,
)

SIZE = 16


def randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter drawn anew (the zero-initialised output layer too), so that equal
    outputs cannot come from a network that outputs zeros."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return module


def uncond_config(**over) -> TrainConfig:
    return TrainConfig.from_preset("tiny", **{"image_size": SIZE, **over})


@pytest.fixture(params=["safetensors", "pt"])
def uncond_file(request, tmp_path):
    """An unconditional tiny model as an export, or as a run's .pt whose EMA and live weights
    differ (the EMA must be the one used). Returns (path, the weights a warm start must use)."""
    cfg = uncond_config()
    pipe = build_pipeline(cfg)
    randomise(pipe.model, seed=1)
    if request.param == "safetensors":
        return pipe.save(tmp_path / "uncond.safetensors", dtype=torch.float32), pipe.model
    live = randomise(build_model(cfg), seed=2)
    path = atomic_save({"model": live.state_dict(), "ema": {"model": pipe.model.state_dict()},
                        "config": cfg.to_dict()}, tmp_path / "uncond.pt")
    return path, pipe.model


def cond_model(**unet) -> torch.nn.Module:
    return build_model(uncond_config(condition="mask+slice", unet_overrides=unet))


def conditions(b: int) -> dict[str, Condition]:
    g = torch.Generator().manual_seed(3)
    mask = torch.randint(0, 4, (b, SIZE, SIZE), generator=g)
    slices = torch.randint(0, 32, (b,), generator=g)
    return {"mask+slice": Condition(mask=mask, slice_index=slices),
            "mask": Condition(mask=mask), "slice": Condition(slice_index=slices),
            "null": Condition(), "slice dropped": Condition(
                mask=mask, slice_index=slices, slice_present=torch.zeros(b, dtype=torch.bool)),
            "partly absent": Condition(mask=mask, slice_index=slices,
                                       mask_present=torch.tensor([True, False, True]))}


@pytest.mark.parametrize(("mask_encoding", "slice_embedding"),
                         [("onehot", "learned"), ("scalar", "sinusoidal")])
def test_warm_started_conditional_unet_equals_the_unconditional_one(
        uncond_file, mask_encoding, slice_embedding):
    path, uncond = uncond_file
    model = cond_model(mask_encoding=mask_encoding, slice_embedding=slice_embedding)
    warm_start_state(model, read_init_source(path).state, source=str(path))
    w = model.conv_in.weight
    torch.testing.assert_close(w[:, :1], uncond.conv_in.weight)
    assert w.shape[1] > 1
    assert not w[:, 1:].any()  # the condition channels start at zero
    x, t = torch.randn(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(4)), \
        torch.tensor([0, 400, 999])
    with torch.no_grad():
        expected = uncond(x, t)
        assert expected.abs().mean() > 0.01  # not a network that outputs zeros
        for name, cond in conditions(3).items():
            torch.testing.assert_close(model(x, t, cond), expected, rtol=1e-5, atol=1e-6,
                                       msg=lambda m, n=name: f"condition {n}: {m}")


def test_a_file_of_another_preset_is_refused_naming_the_keys(tmp_path):
    path = build_pipeline(TrainConfig.from_preset("cpu", image_size=SIZE)).save(
        tmp_path / "cpu.safetensors")
    with pytest.raises(InitFromError, match=r"cpu\.safetensors.*shape mismatches: .*weight"):
        warm_start_state(cond_model(), read_init_source(path).state, source=str(path))


def test_unexpected_keys_are_refused(tmp_path):
    """A conditional file into an unconditional model: the slice table is named."""
    pipe = build_pipeline(uncond_config(condition="slice"))
    path = pipe.save(tmp_path / "slice.safetensors")
    with pytest.raises(InitFromError, match="unexpected keys: slice_embed.table.weight"):
        warm_start_state(build_model(uncond_config()), read_init_source(path).state,
                         source=str(path))


def test_a_trained_slice_embedding_is_not_taken_for_a_fresh_one(uncond_file):
    path, _ = uncond_file
    model = cond_model()
    with torch.no_grad():
        model.slice_embed.table.weight.fill_(0.5)
    with pytest.raises(InitFromError, match="slice embedding is not zero"):
        warm_start_state(model, read_init_source(path).state, source=str(path))


# ------------------------------------------------------------------ through the Trainer


def run_config(out, init, **over) -> TrainConfig:
    return uncond_config(out_dir=str(out), init_from=str(init), condition="mask+slice",
                         epochs=100, batch_size=8, checkpoint_every=2, val_size=8,
                         sample_every=1000, progress=False, **over)


def data():
    return {"train_set": CondBlobs(16, SIZE, seed=0), "val_set": CondBlobs(8, SIZE, seed=1)}


def test_trainer_starts_the_model_and_its_ema_from_the_file_and_records_it(
        uncond_file, tmp_path, monkeypatch):
    from oasis_lib.cli.main import main

    path, uncond = uncond_file
    trainer = Trainer(run_config(tmp_path / "run", path, max_steps=2), **data())
    for net in (trainer.raw_model, trainer.ema.model):
        state = net.state_dict()
        for k, v in uncond.state_dict().items():
            if k != "conv_in.weight":
                torch.testing.assert_close(state[k], v, msg=f"{k} not loaded")
        torch.testing.assert_close(state["conv_in.weight"][:, :1], uncond.conv_in.weight)
    trainer.fit()
    last = tmp_path / "run" / "last.pt"
    assert load_checkpoint(last)["config"]["init_from"] == str(path)
    out = tmp_path / "cond.safetensors"
    assert main(["export", "--checkpoint", str(last), "--out", str(out)]) == 0
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        assert json.loads(f.metadata()["config"])["init_from"] == str(path)
    assert load_model(out).config.init_from == str(path)

    # A resume continues from last.pt: the file is not read, the run's own weights are kept.
    import oasis_lib.training.trainer as trainer_module

    def never(_path):
        raise AssertionError("init_from re-applied on resume")

    monkeypatch.setattr(trainer_module, "read_init_source", never)
    resumed = Trainer(run_config(tmp_path / "run", path, max_steps=4), resume=True, **data())
    saved = load_checkpoint(last)
    for k, v in saved["model"].items():
        torch.testing.assert_close(resumed.raw_model.state_dict()[k], v)
    for k, v in saved["ema"]["model"].items():
        torch.testing.assert_close(resumed.ema.model.state_dict()[k], v)
    assert resumed.fit().step == 4


def test_cli_refuses_a_missing_init_file(tmp_path, capsys):
    from oasis_lib.cli.main import main

    code = main(["train", "--preset", "tiny", "--init-from", str(tmp_path / "nope.safetensors"),
                 "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    assert "--init-from" in capsys.readouterr().err


# ------------------------------------------------------------------ latent files
LATENT = 32  # pixel size of the latent tests (tiny autoencoder: f = 4)


def tiny_autoencoder(path, seed: int):
    ae = randomise(AutoencoderKL(AutoencoderConfig.preset("tiny")), seed).eval()
    return export_autoencoder(ae, path, dtype=torch.float32)


@pytest.fixture
def latent_file(tmp_path):
    """A latent diffusion export (U-Net + autoencoder A, scale factor 0.5), and A's file."""
    ae = tiny_autoencoder(tmp_path / "ae_a.safetensors", seed=5)
    cfg = TrainConfig.from_preset("tiny", image_size=LATENT, autoencoder=str(ae),
                                  latent_scale_factor=0.5)
    pipe = build_pipeline(cfg)
    randomise(pipe.model, seed=6)
    return pipe.save(tmp_path / "ldm.safetensors", dtype=torch.float32), ae


def latent_run(**over) -> TrainConfig:
    return TrainConfig.from_preset("tiny", image_size=LATENT, condition="mask+slice", **over)


def test_a_latent_file_brings_its_autoencoder_and_scale_factor(latent_file):
    path, ae = latent_file
    cfg = latent_run(init_from=str(path))
    source = read_init_source(path)
    resolve_init_config(cfg, source)
    assert (cfg.autoencoder, cfg.latent_scale_factor) == (str(path), 0.5)
    pipe = build_pipeline(cfg)  # reads the autoencoder out of the latent export
    for k, v in read_init_source(path).autoencoder.state_dict().items():
        torch.testing.assert_close(pipe.autoencoder.state_dict()[k], v)
    warm_start_state(pipe.model, source.state, source=str(path))
    z = torch.randn(2, *pipe.sample_shape, generator=torch.Generator().manual_seed(7))
    mask = torch.randint(0, 4, (2, LATENT, LATENT))  # pixel masks, pooled to the latent grid
    with torch.no_grad():
        torch.testing.assert_close(
            pipe.model(z, torch.tensor([5, 900]), Condition(mask=mask,
                                                            slice_index=torch.tensor([1, 2]))),
            load_model(path).model(z, torch.tensor([5, 900])), rtol=1e-5, atol=1e-6)
    same = latent_run(init_from=str(path), autoencoder=str(ae), latent_scale_factor=0.5)
    resolve_init_config(same, source)  # the file's own autoencoder, given: accepted
    assert same.autoencoder == str(ae)


def test_cli_resolves_a_latent_init_file_before_training(latent_file, tmp_path, capsys):
    from oasis_lib.cli.main import _train_config, build_parser, main
    from oasis_lib.cli.train import prepare_train

    path, ae = latent_file
    flags = ["train", "--preset", "tiny", "--image-size", str(LATENT), "--condition",
             "mask+slice", "--init-from", str(path), "--out", str(tmp_path / "run")]
    cfg = prepare_train(build_parser().parse_args(flags), _train_config)
    assert (cfg.autoencoder, cfg.latent_scale_factor) == (str(path), 0.5)
    other = tiny_autoencoder(tmp_path / "ae_b.safetensors", seed=8)
    assert main([*flags, "--autoencoder", str(other)]) == 2  # refused before any compute
    assert "another autoencoder" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_latent_conflicts_are_refused(latent_file, tmp_path):
    path, _ = latent_file
    source = read_init_source(path)
    other = tiny_autoencoder(tmp_path / "ae_b.safetensors", seed=8)
    with pytest.raises(InitFromError, match="another autoencoder than the run's .*ae_b"):
        resolve_init_config(latent_run(autoencoder=str(other)), source)
    with pytest.raises(InitFromError, match="latent scale factor 0.5, the run 0.7"):
        resolve_init_config(latent_run(latent_scale_factor=0.7), source)
    pixel = build_pipeline(uncond_config()).save(tmp_path / "pixel.safetensors")
    with pytest.raises(InitFromError, match="pixel-space model, but the run is latent"):
        resolve_init_config(latent_run(autoencoder=str(other)), read_init_source(pixel))


def test_latent_trainer_uses_the_files_scale_factor(latent_file, tmp_path, write_split):
    path, _ = latent_file
    root = write_split(tmp_path / "oasis", "train", {1: 8}, size=LATENT)
    write_split(root, "validate", {402: 4}, size=LATENT)
    write_split(root, "test", {441: 2}, size=LATENT)
    trainer = Trainer(latent_run(init_from=str(path), data_root=str(root), val_size=4,
                                 latent_cache_dir=str(tmp_path / "cache"), progress=False,
                                 precision="fp32", out_dir=str(tmp_path / "run")))
    assert trainer.cfg.autoencoder == str(path)
    assert trainer.pipeline.scale_factor == trainer.cfg.latent_scale_factor == 0.5
