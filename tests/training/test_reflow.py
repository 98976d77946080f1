"""One reflow round (Liu et al. 2022 sec. 3) on tiny models: the teacher's (noise, sample) pairs
on disk (their values, resumable shards, refusals), and training on them through the Trainer
(the loss on a pair, validation on the held-out shard, exact resume, export and sampling)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from oasis_lib.checkpoint import load_checkpoint
from oasis_lib.config import TrainConfig
from oasis_lib.diffusion.sampling import sample
from oasis_lib.models.autoencoder import AutoencoderKL
from oasis_lib.models.autoencoder_config import AutoencoderConfig
from oasis_lib.models.factory import build_pipeline
from oasis_lib.pretrained import export_autoencoder, load_model
from oasis_lib.seeding import cpu_generator
from oasis_lib.training import reflow as reflow_module
from oasis_lib.training.reflow import (
    MANIFEST_NAME,
    generate_pairs,
    read_manifest,
    reflow_datasets,
    shard_name,
    shard_seed,
)
from oasis_lib.training.trainer import Trainer

SIZE = 32  # pixels; the tiny autoencoder's latents are 2 x 8 x 8
LATENT = (2, 8, 8)
FLOW = {"noise_process": "rectified-flow", "prediction_type": "velocity", "min_snr_gamma": None}


def randomise(module: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """Every parameter drawn anew (the zero output layer too: a zero velocity would make every
    sample equal its noise)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g))
    return module


def teacher_file(folder, *, seed: int = 6, diffusion=None):
    """A latent model file (U-Net + autoencoder, scale factor 0.5): rectified flow unless
    ``diffusion`` says otherwise."""
    ae = export_autoencoder(randomise(AutoencoderKL(AutoencoderConfig.preset("tiny")), 5).eval(),
                            folder / "ae.safetensors", dtype=torch.float32)
    cfg = TrainConfig.from_preset("tiny", image_size=SIZE, autoencoder=str(ae),
                                  latent_scale_factor=0.5,
                                  diffusion=FLOW if diffusion is None else diffusion)
    pipe = build_pipeline(cfg, warn=False)
    randomise(pipe.model, seed)
    return pipe.save(folder / f"teacher{seed}.safetensors", dtype=torch.float32)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return teacher_file(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def pairs(teacher, tmp_path_factory):
    """12 pairs in 3 shards of 4 (2 train, 1 held out), 3 Euler steps."""
    out = tmp_path_factory.mktemp("pairs") / "p"
    return generate_pairs(load_model(teacher), out, 12, steps=3, shard_size=4, progress=False)


def shard_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("pairs_*.safetensors"))}


# ------------------------------------------------------------------ the pairs
def test_pairs_are_the_teachers_samples_of_their_noise(teacher, pairs):
    pipe = load_model(teacher)
    m = read_manifest(pairs)
    assert (m["n"], m["steps"], m["sampler"], m["shards"], m["shard_size"]) == (
        12, 3, "flow-euler", 3, 4)
    assert m["scale_factor"] == 0.5
    assert m["sample_shape"] == list(LATENT)
    _, val, _ = reflow_datasets(pairs)
    for k in range(3):
        from safetensors.torch import load_file

        shard = load_file(str(pairs / shard_name(k)))
        noise = torch.randn((4, *LATENT), generator=cpu_generator(shard_seed(0, k)))
        assert shard["noise"].dtype == shard["sample"].dtype == torch.float32
        torch.testing.assert_close(shard["noise"], noise, rtol=0, atol=0)
        x0 = sample(pipe.denoiser(), pipe.process, (4, *LATENT), sampler="flow-euler", steps=3,
                    x_T=noise, clip_x0=False, prediction_type="velocity", progress=False)
        torch.testing.assert_close(shard["sample"], x0, rtol=0, atol=0)
        assert (shard["sample"] - noise).abs().mean() > 0.01 # the teacher moved the noise
    # the held-out validation set is the last shard, as the pipeline decodes it
    torch.testing.assert_close(val.column("noise"), shard["noise"])
    decoded = pipe.sample(4, x_T=shard["noise"], steps=3, progress=False)
    torch.testing.assert_close(decoded, pipe.decode(shard["sample"]).clamp(-1, 1))


def test_a_deleted_shard_is_rewritten_byte_for_byte(teacher, pairs, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(pairs, copy)
    before = shard_bytes(copy)
    (copy / shard_name(1)).unlink()
    generate_pairs(load_model(teacher), copy, 12, steps=3, shard_size=4, progress=False)
    assert shard_bytes(copy) == before
    assert not list(copy.glob(".*tmp"))  # no temporary file left


def test_an_interrupted_run_continues_where_it_stopped(teacher, pairs, tmp_path, monkeypatch):
    written = []
    real = reflow_module._write_shard

    def stop_after_one(path, noise, x0, *, index):
        if written:
            raise KeyboardInterrupt  # a stop while the second shard is written
        written.append(index)
        real(path, noise, x0, index=index)

    out = tmp_path / "p"
    monkeypatch.setattr(reflow_module, "_write_shard", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        generate_pairs(load_model(teacher), out, 12, steps=3, shard_size=4, progress=False)
    assert [p.name for p in out.glob("pairs_*")] == [shard_name(0)]
    with pytest.raises(ValueError, match=r"holds 1 of 3 reflow shards .*run(ning)? the same"):
        reflow_datasets(out)
    monkeypatch.setattr(reflow_module, "_write_shard", lambda *a, index, **k: (
        written.append(index), real(*a, index=index, **k)))
    generate_pairs(load_model(teacher), out, 12, steps=3, shard_size=4, progress=False)
    assert written == [0, 1, 2]  # shard 0 was not redone
    assert shard_bytes(out) == shard_bytes(pairs)


def test_a_manifest_of_another_call_is_refused(teacher, pairs, tmp_path):
    pipe = load_model(teacher)
    before = (pairs / MANIFEST_NAME).read_text()
    with pytest.raises(ValueError, match=r"another call: steps 3 \(on disk\) vs 4"):
        generate_pairs(pipe, pairs, 12, steps=4, shard_size=4, progress=False)
    with pytest.raises(ValueError, match=r"seed 0 \(on disk\) vs 1"):
        generate_pairs(pipe, pairs, 12, steps=3, shard_size=4, seed=1, progress=False)
    with pytest.raises(ValueError, match=r"\bn 12 \(on disk\) vs 16"):
        generate_pairs(pipe, pairs, 16, steps=3, shard_size=4, progress=False)
    other = load_model(teacher_file(tmp_path, seed=9))
    with pytest.raises(ValueError, match="teacher_sha256"):
        generate_pairs(other, pairs, 12, steps=3, shard_size=4, progress=False)
    assert (pairs / MANIFEST_NAME).read_text() == before


def test_teachers_reflow_cannot_use_are_refused(tmp_path):
    vp = load_model(teacher_file(tmp_path, diffusion={"prediction_type": "v"}))
    with pytest.raises(ValueError, match="needs a rectified-flow teacher; .* is 'vp'"):
        generate_pairs(vp, tmp_path / "p", 4, progress=False)
    pixel = build_pipeline(TrainConfig.from_preset("tiny", image_size=SIZE, diffusion=FLOW),
                           warn=False)
    with pytest.raises(ValueError, match="latent model; this teacher is pixel-space"):
        generate_pairs(pixel, tmp_path / "p", 4, progress=False)
    assert not (tmp_path / "p").exists()
    with pytest.raises(ValueError, match="unknown sampler 'nope'"):
        generate_pairs(load_model(teacher_file(tmp_path)), tmp_path / "q", 4, sampler="nope",
                       progress=False)


# ------------------------------------------------------------------ training on the pairs
def reflow_config(teacher, pairs, out, **kw) -> TrainConfig:
    opts = {"image_size": SIZE, "diffusion": FLOW, "init_from": str(teacher),
            "reflow_pairs": str(pairs), "out_dir": str(out), "batch_size": 4, "val_size": 4,
            "progress": False, "precision": "fp32", "sample_n": 2, "sample_steps": 2,
            "epochs": 10, "max_steps": 2, "ema_decay": 0.9, "seed": 3}
    opts.update(kw)
    return TrainConfig.from_preset("tiny", **opts)


def test_the_loss_on_a_pair_is_the_straight_path_mse(teacher, pairs, tmp_path):
    trainer = Trainer(reflow_config(teacher, pairs, tmp_path / "run"))
    assert trainer.encoded
    assert trainer.pipeline.scale_factor == trainer.cfg.latent_scale_factor
    assert trainer.pipeline.scale_factor == 0.5
    assert len(trainer.train_set) == 8
    assert len(trainer.val_set) == 4
    batch = next(iter(trainer._loader(0, trainer._rank_batches(0))))
    x0, noise = trainer.step_inputs(batch)
    tau = trainer.pipeline.process.time_from_uniform(trainer._draws(0).uniform(4, "timestep"))
    s = (tau / 1000).view(-1, 1, 1, 1)
    with torch.no_grad():
        out = trainer.raw_model((1 - s) * x0 + s * noise, tau)
    expected = F.mse_loss(out, noise - x0).item()  # v = eps - x0 on the pair's straight line
    keyed = trainer._draws(0).normal(x0.shape)  # what a data run would have drawn instead
    assert not torch.allclose(keyed, noise)
    assert trainer.train_step((x0, noise)) == pytest.approx(expected, rel=1e-5)
    # validation: the held-out shard's own noise, not the process's validation draws
    _, val, _ = reflow_datasets(pairs)
    torch.testing.assert_close(trainer.val_noise, val.column("noise"))
    torch.testing.assert_close(trainer.val_x0, val.column("image"))
    trainer.lock.release()


def test_a_reflow_run_resumes_exactly_exports_and_samples(teacher, pairs, tmp_path):
    from oasis_lib.cli.main import main

    whole = Trainer(reflow_config(teacher, pairs, tmp_path / "whole", max_steps=4)).fit()
    Trainer(reflow_config(teacher, pairs, tmp_path / "cut", max_steps=2)).fit()
    # (a library resume passes the config the run resolved: the teacher's autoencoder; the CLI
    # takes it from last.pt)
    resumed = Trainer(reflow_config(teacher, pairs, tmp_path / "cut", max_steps=4,
                                    autoencoder=str(teacher)), resume=True)
    assert resumed.fit().step == whole.step == 4
    a = load_checkpoint(tmp_path / "whole" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    out = tmp_path / "student.safetensors"
    assert main(["export", "--checkpoint", str(tmp_path / "whole" / "last.pt"),
                 "--out", str(out)]) == 0
    student = load_model(out)
    assert student.config.reflow_pairs == str(pairs)
    assert student.scale_factor == pytest.approx(0.5)
    x = student.sample(2, steps=1, progress=False, generator=cpu_generator(0))
    assert x.shape == (2, 1, SIZE, SIZE)
    assert torch.isfinite(x).all()


def test_reflow_runs_that_cannot_work_are_refused(teacher, pairs, tmp_path):
    with pytest.raises(ValueError, match="unconditional model; condition is 'mask'"):
        reflow_config(teacher, pairs, tmp_path / "r", condition="mask").validate()
    with pytest.raises(ValueError, match="straightens a rectified flow; noise_process is 'vp'"):
        reflow_config(teacher, pairs, tmp_path / "r",
                      diffusion={"prediction_type": "v"}).validate()
    with pytest.raises(ValueError, match="latent model: give init_from"):
        reflow_config(teacher, pairs, tmp_path / "r", init_from=None).validate()
    with pytest.raises(ValueError, match=r"teacher's model space \(scale factor 0.5\); the run's "
                                         "is 0.7"):
        Trainer(reflow_config(teacher, pairs, tmp_path / "r", init_from=None,
                              autoencoder=str(teacher.parent / "ae.safetensors"),
                              latent_scale_factor=0.7))
    other = export_autoencoder(randomise(AutoencoderKL(AutoencoderConfig.preset("tiny")), 11),
                               tmp_path / "ae_b.safetensors", dtype=torch.float32)
    with pytest.raises(ValueError, match="made with another autoencoder than the run's"):
        Trainer(reflow_config(teacher, pairs, tmp_path / "r", init_from=None,
                              autoencoder=str(other)))
    with pytest.raises(FileNotFoundError, match="write them with: python -m oasis_lib "
                                                "reflow-pairs"):
        Trainer(reflow_config(teacher, tmp_path / "none", tmp_path / "r"))


def test_cli_writes_pairs_and_trains_on_them(teacher, pairs, tmp_path, capsys):
    from oasis_lib.cli.main import main

    out = tmp_path / "pairs"
    flags = ["reflow-pairs", "--checkpoint", str(teacher), "--n", "12", "--steps", "3",
             "--shard-size", "4", "--out", str(out), "--no-progress"]
    assert main(flags) == 0
    printed = capsys.readouterr().out
    assert f"wrote 12 reflow pairs of {teacher}" in printed
    assert str(out) in printed
    assert shard_bytes(out) == shard_bytes(pairs)
    assert json.loads((out / MANIFEST_NAME).read_text()) == read_manifest(pairs)
    assert main([*flags[:6], "4", *flags[7:]]) == 1  # another step count: refused
    assert "steps 3 (on disk) vs 4" in capsys.readouterr().err
    assert main(["reflow-pairs", "--checkpoint", str(teacher), "--n", "0", "--out",
                 str(out)]) == 2
    assert main(["train", "--preset", "tiny", "--image-size", str(SIZE), "--init-from",
                 str(teacher), "--reflow-pairs", str(out), "--noise-process", "rectified-flow",
                 "--prediction", "velocity", "--batch-size", "4", "--max-steps", "1",
                 "--precision", "fp32", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["config"]["reflow_pairs"] == str(out)
    missing = tmp_path / "no_pairs"
    assert main(["train", "--preset", "tiny", "--image-size", str(SIZE), "--init-from",
                 str(teacher), "--reflow-pairs", str(missing), "--noise-process",
                 "rectified-flow", "--prediction", "velocity", "--out", str(tmp_path / "run2"),
                 "--no-progress"]) == 2  # refused before any compute
    assert "write them first: python -m oasis_lib reflow-pairs" in capsys.readouterr().err
    assert not (tmp_path / "run2").exists()
