"""``export --default-sampler NAME --default-steps K`` writes a file's sampling defaults;
``sample --checkpoint FILE`` uses them unless ``--sampler``/``--steps`` are given and says where
its sampler and steps came from; bad values are refused before anything is written."""

from __future__ import annotations

import re

import pytest
import torch

from oasis_lib.checkpoint import atomic_save
from oasis_lib.cli import main
from oasis_lib.config import TrainConfig
from oasis_lib.diffusion.sampling_defaults import SamplingDefaults
from oasis_lib.models.factory import build_pipeline
from oasis_lib.pretrained import load_model


def _run(tmp, name: str, **diffusion):
    """A training checkpoint of a tiny 16x16 model (T = 20), weights perturbed from their
    initialisation, as ``export`` reads it (no training: the file is all export needs)."""
    cfg = TrainConfig.from_preset("tiny", image_size=16, out_dir=str(tmp / name),
                                  diffusion={"timesteps": 20, **diffusion})
    pipe = build_pipeline(cfg, warn=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in pipe.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    state = pipe.model.state_dict()
    path = tmp / name / "last.pt"
    path.parent.mkdir(parents=True)
    atomic_save({"config": cfg.to_dict(), "model": state, "ema": {"model": state}, "step": 7},
                path)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("defaults_cli")
    return {"tmp": tmp, "vp": _run(tmp, "vp"),
            "flow": _run(tmp, "flow", noise_process="rectified-flow",
                         prediction_type="velocity")}


def _sample(checkpoint, out, *flags):
    return main(["sample", "--checkpoint", str(checkpoint), "--n", "2", "--seed", "0",
                 "--out", str(out), "--device", "cpu", "--no-progress", *flags])


def test_export_writes_the_defaults_and_sample_uses_them(runs, capsys):
    tmp = runs["tmp"]
    out = tmp / "fast.safetensors"
    assert main(["export", "--checkpoint", str(runs["vp"]), "--out", str(out),
                 "--default-sampler", "dpm++2m", "--default-steps", "3"]) == 0
    assert "samples with dpm++2m, 3 steps unless told otherwise" in capsys.readouterr().out
    assert load_model(out, device="cpu").sampling_defaults == SamplingDefaults("dpm++2m", 3)

    assert _sample(out, tmp / "by_file.png") == 0
    said = capsys.readouterr().out
    assert "sampler dpm++2m (the file's default), 3 steps (the file's default)" in said
    assert _sample(out, tmp / "given.png", "--sampler", "dpm++2m", "--steps", "3") == 0
    assert "sampler dpm++2m (given), 3 steps (given)" in capsys.readouterr().out
    assert (tmp / "by_file.png").read_bytes() == (tmp / "given.png").read_bytes()

    assert _sample(out, tmp / "ddim.png", "--sampler", "ddim") == 0  # the file's 3 stay home
    assert "sampler ddim (given), 20 steps (the sampler's default)" in capsys.readouterr().out
    assert _sample(out, tmp / "ddpm.png", "--sampler", "ddpm") == 0  # (ddpm would refuse 3)
    assert _sample(out, tmp / "steps.png", "--steps", "2") == 0
    assert "sampler dpm++2m (the file's default), 2 steps (given)" in capsys.readouterr().out


def test_an_export_without_flags_samples_as_before(runs, capsys):
    out = runs["tmp"] / "plain.safetensors"
    assert main(["export", "--checkpoint", str(runs["vp"]), "--out", str(out)]) == 0
    assert "unless told otherwise" not in capsys.readouterr().out
    assert load_model(out, device="cpu").sampling_defaults is None
    assert _sample(out, runs["tmp"] / "plain.png") == 0
    said = capsys.readouterr().out
    assert "sampler ddim (the vp process's default), 20 steps (the sampler's default)" in said


def test_default_steps_alone_keep_the_process_sampler(runs, capsys):
    out = runs["tmp"] / "flow.safetensors"
    assert main(["export", "--checkpoint", str(runs["flow"]), "--out", str(out),
                 "--default-steps", "2"]) == 0
    assert load_model(out, device="cpu").sampling_defaults == SamplingDefaults("flow-euler", 2)
    capsys.readouterr()
    assert _sample(out, runs["tmp"] / "flow.png") == 0
    assert "sampler flow-euler (the file's default), 2 steps (the file's default)" in (
        capsys.readouterr().out)


def test_a_default_grid_is_written_used_and_overridden(runs, capsys):
    tmp = runs["tmp"]
    out = tmp / "few.safetensors"
    assert main(["export", "--checkpoint", str(runs["flow"]), "--out", str(out),
                 "--default-steps", "2", "--default-spacing", "trailing"]) == 0
    assert "samples with flow-euler, 2 steps, trailing spacing unless told otherwise" in (
        capsys.readouterr().out)
    assert load_model(out, device="cpu").sampling_defaults == SamplingDefaults(
        "flow-euler", 2, "trailing")
    assert _sample(out, tmp / "few_file.png") == 0
    assert ("sampler flow-euler (the file's default), 2 steps (the file's default), trailing "
            "spacing (the file's default)") in capsys.readouterr().out
    assert _sample(out, tmp / "few_given.png", "--steps", "2", "--spacing", "trailing") == 0
    assert (tmp / "few_file.png").read_bytes() == (tmp / "few_given.png").read_bytes()
    assert _sample(out, tmp / "few_linspace.png", "--spacing", "linspace") == 0
    assert "linspace spacing (given)" in capsys.readouterr().out
    assert (tmp / "few_file.png").read_bytes() != (tmp / "few_linspace.png").read_bytes()
    assert _sample(out, tmp / "karras.png", "--spacing", "karras") == 2  # a VP grid
    err = capsys.readouterr().err
    assert "--spacing karras: the rectified-flow model's time grids are linspace, trailing" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(("run", "flags", "message"), [
    ("vp", ["--default-sampler", "flow-euler"],
     r"--default-sampler flow-euler: default sampler 'flow-euler' steps the rectified-flow "
     r"process, not 'vp'; choose one of \('ddpm'"),
    ("flow", ["--default-sampler", "dpm++2m", "--default-steps", "4"],
     r"'dpm\+\+2m' steps the vp process, not 'rectified-flow'; choose one of "
     r"\('flow-euler', 'flow-heun'\)"),
    ("vp", ["--default-sampler", "ddpm", "--default-steps", "5"],
     r"'ddpm' runs all T=20 steps; default steps 5 would be refused"),
    ("vp", ["--default-steps", "50"], r"default steps 50 is more than the model's T=20"),
    ("vp", ["--default-steps", "0"], r"--default-steps must be >= 1, got 0"),
    ("vp", ["--default-spacing", "linspace"],
     r"--default-spacing linspace: default spacing 'linspace' is not one of the vp process's "
     r"spacings \('trailing', 'leading', 'karras'\)"),
])
def test_bad_defaults_are_refused_before_writing(runs, capsys, run, flags, message):
    out = runs["tmp"] / "bad.safetensors"
    assert main(["export", "--checkpoint", str(runs[run]), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert re.search(message, err), err
    assert not out.exists()


def test_an_unknown_default_sampler_is_a_usage_error(runs, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["export", "--checkpoint", str(runs["vp"]), "--out",
              str(runs["tmp"] / "x.safetensors"), "--default-sampler", "nope"])
    assert stop.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_sample_in_bf16_says_so_and_fp32_stays_the_default(runs, capsys):
    tmp = runs["tmp"]
    out = tmp / "plain_bf16.safetensors"
    assert main(["export", "--checkpoint", str(runs["flow"]), "--out", str(out)]) == 0
    capsys.readouterr()
    assert _sample(out, tmp / "fp32.png") == 0
    assert "precision" not in capsys.readouterr().out
    assert _sample(out, tmp / "fp32_again.png", "--precision", "fp32") == 0
    assert (tmp / "fp32.png").read_bytes() == (tmp / "fp32_again.png").read_bytes()
    assert _sample(out, tmp / "bf16.png", "--precision", "bf16") == 0
    assert "precision bf16 as configured" in capsys.readouterr().out
    assert _sample(out, tmp / "auto.png", "--precision", "auto") == 0
    assert "precision auto on cpu: " in capsys.readouterr().out
