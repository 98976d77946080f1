"""A model file's default sampler and steps (issue 26): written by ``pipe.save``, read back by
``load_model``, used by ``pipe.sample`` unless told otherwise; a file without them samples
exactly as before; bad values are refused by name on load and on construction."""

from __future__ import annotations

import pytest
import torch

from oasis_lib.checkpoint import CheckpointError, load_safetensors
from oasis_lib.config import TrainConfig
from oasis_lib.diffusion.pipeline import DiffusionPipeline
from oasis_lib.diffusion.sampling_defaults import (
    SamplingChoice,
    SamplingDefaults,
    resolve_sampling,
)
from oasis_lib.file_layout import SAMPLING_DEFAULTS, read_model_export, write_model_export
from oasis_lib.models.factory import build_pipeline
from oasis_lib.pretrained import load_model

FLOW = {"noise_process": "rectified-flow", "prediction_type": "velocity"}


def _pipe(**diffusion):
    cfg = TrainConfig.from_preset("tiny", image_size=16,
                                  diffusion={"timesteps": 20, **diffusion})
    pipe = build_pipeline(cfg, warn=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # not the zero-initialised output layer: samples depend on the net
        for p in pipe.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return pipe


def _draw(pipe, **kw):
    return pipe.sample(2, generator=torch.Generator().manual_seed(3), progress=False, **kw)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny VP model saved with defaults (dpm++2m, 3 steps), and the same without."""
    d = tmp_path_factory.mktemp("defaults")
    pipe = _pipe()
    old = pipe.save(d / "old.safetensors")
    pipe.sampling_defaults = SamplingDefaults("dpm++2m", 3)
    new = pipe.save(d / "new.safetensors")
    return {"dir": d, "old": old, "new": new, "state": pipe.model.state_dict(),
            "config": pipe.config.to_dict()}


def test_round_trip_save_load_keeps_the_defaults(saved):
    pipe = load_model(saved["new"], device="cpu")
    assert pipe.sampling_defaults == SamplingDefaults("dpm++2m", 3)
    assert load_safetensors(saved["new"])[1][SAMPLING_DEFAULTS] == {"sampler": "dpm++2m",
                                                                   "steps": 3}
    again = pipe.save(saved["dir"] / "again.safetensors")  # and again through load -> save
    assert load_model(again, device="cpu").sampling_defaults == pipe.sampling_defaults
    assert read_model_export(again)[3] == {"sampler": "dpm++2m", "steps": 3}


def test_flow_model_round_trip(tmp_path):
    pipe = _pipe(**FLOW)
    pipe.sampling_defaults = SamplingDefaults("flow-heun", 2)
    loaded = load_model(pipe.save(tmp_path / "flow.safetensors"), device="cpu")
    assert loaded.sampling_defaults == SamplingDefaults("flow-heun", 2)
    assert torch.equal(_draw(loaded), _draw(loaded, sampler="flow-heun", steps=2))
    assert not torch.equal(_draw(loaded), _draw(loaded, sampler="flow-euler"))


def test_sample_with_the_file_defaults_is_the_explicit_call(saved):
    pipe = load_model(saved["new"], device="cpu")
    by_default = _draw(pipe)
    assert torch.equal(by_default, _draw(pipe, sampler="dpm++2m", steps=3))  # bitwise
    assert not torch.equal(by_default, _draw(pipe, sampler="ddim", steps=3))  # not the old path
    assert torch.equal(_draw(pipe, steps=5), _draw(pipe, sampler="dpm++2m", steps=5))  # given wins


def test_the_file_steps_never_reach_another_sampler(saved):
    pipe = load_model(saved["new"], device="cpu")
    old = load_model(saved["old"], device="cpu")  # the same weights, no defaults
    # ddpm takes all T only: the file's 3 steps must not be passed to it (it would raise)
    assert torch.equal(_draw(pipe, sampler="ddpm"), _draw(old, sampler="ddpm"))
    ddim = _draw(pipe, sampler="ddim")
    assert torch.equal(ddim, _draw(old, sampler="ddim"))
    assert torch.equal(ddim, _draw(pipe, sampler="ddim", steps=20))  # ddim's own default (T)
    assert not torch.equal(ddim, _draw(pipe, sampler="ddim", steps=3))


def test_a_file_without_defaults_samples_as_before(saved):
    assert SAMPLING_DEFAULTS not in load_safetensors(saved["old"])[1]
    pipe = load_model(saved["old"], device="cpu")
    assert pipe.sampling_defaults is None
    assert torch.equal(_draw(pipe), _draw(pipe, sampler="ddim", steps=None))
    assert load_model(device="cpu").sampling_defaults is None  # the shipped demo checkpoint


def test_resolve_sampling_says_where_each_value_came_from():
    pipe = _pipe()
    d, p = SamplingDefaults("dpm++2m", 3), pipe.process
    assert resolve_sampling(None, p) == SamplingChoice("ddim", None, "process default",
                                                       "sampler default")
    assert resolve_sampling(d, p) == SamplingChoice("dpm++2m", 3, "file", "file")
    assert resolve_sampling(d, p, "dpm++2m") == SamplingChoice("dpm++2m", 3, "given", "file")
    assert resolve_sampling(d, p, "ddim") == SamplingChoice("ddim", None, "given",
                                                            "sampler default")
    assert resolve_sampling(d, p, None, 7) == SamplingChoice("dpm++2m", 7, "file", "given")
    assert resolve_sampling(SamplingDefaults("unipc"), p).steps is None  # its own default
    assert (resolve_sampling(d, p).describe(p)
            == "sampler dpm++2m (the file's default), 3 steps (the file's default)")
    assert (resolve_sampling(None, p).describe(p)
            == "sampler ddim (the vp process's default), 20 steps (the sampler's default)")


@pytest.mark.parametrize(("defaults", "match"), [
    ({"sampler": "nope", "steps": 3}, r"unknown sampler 'nope'; choose one of \('ddpm'"),
    ({"sampler": "flow-euler", "steps": 2}, r"'flow-euler' steps the rectified-flow process, "
                                            r"not 'vp'; choose one of \('ddpm'"),
    ({"sampler": "ddpm", "steps": 5}, r"'ddpm' runs all T=20 steps"),
    ({"sampler": "ddim", "steps": 50}, r"default steps 50 is more than the model's T=20"),
    ({"sampler": "ddim", "steps": 0}, r"positive integer or None, got 0"),
    ({"sampler": "ddim", "steps": 2.5}, r"positive integer or None, got 2.5"),
    ({"sampler": "ddim", "eta": 1}, r"unknown sampling default 'eta'"),
    ({"steps": 3}, r"must be a dict with a 'sampler'"),
])
def test_bad_defaults_in_a_file_are_refused_on_load(saved, defaults, match):
    path = write_model_export(saved["dir"] / "bad.safetensors", saved["state"], saved["config"],
                              sampling_defaults=defaults)
    with pytest.raises(CheckpointError, match=match) as err:
        load_model(path, device="cpu")
    assert "bad.safetensors: its sampling defaults" in str(err.value)


def test_bad_defaults_are_refused_by_the_pipeline_and_the_record():
    pipe = _pipe(**FLOW)
    with pytest.raises(ValueError, match=r"'ddim' steps the vp process, not 'rectified-flow'; "
                                         r"choose one of \('flow-euler', 'flow-heun'\)"):
        DiffusionPipeline(
            pipe.model, pipe.schedule, pipe.prediction_type, pipe.sample_shape,
            noise_process=pipe.process, sampling_defaults=SamplingDefaults("ddim", 5))
    with pytest.raises(ValueError, match=r"unknown sampler 'DDIM'; choose one of"):
        SamplingDefaults("DDIM")
    with pytest.raises(ValueError, match="positive integer or None, got True"):
        SamplingDefaults("ddim", True)
    assert SamplingDefaults("flow-euler", 500).check(pipe.process).steps == 500  # no T cap
    assert SamplingDefaults.from_dict(SamplingDefaults("ddpm").to_dict()) == SamplingDefaults(
        "ddpm", None)
