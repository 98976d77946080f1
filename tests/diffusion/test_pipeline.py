"""The DiffusionPipeline: one seam for training losses and sampling, pixel or latent space."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from oasis_lib.config import TrainConfig
from oasis_lib.diffusion import DiffusionPipeline, NoiseSchedule, diffusion_loss, sample
from oasis_lib.models.factory import build_pipeline


def _tiny_pipeline() -> DiffusionPipeline:
    torch.manual_seed(0)
    cfg = TrainConfig.from_preset("tiny", diffusion={"prediction_type": "v",
                                                     "min_snr_gamma": 5.0})
    pipe = build_pipeline(cfg)
    with torch.no_grad():  # an untrained U-Net predicts exactly 0 (zero-initialised output)
        for p in pipe.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return pipe.eval()


def test_build_pipeline_takes_everything_from_the_config():
    pipe = _tiny_pipeline()
    assert pipe.prediction_type == "v"
    assert pipe.min_snr_gamma == 5.0
    assert pipe.sample_shape == (1, 32, 32)
    assert pipe.image_shape == (1, 32, 32)
    assert pipe.schedule.T == 1000
    assert pipe.device == torch.device("cpu")
    assert "predicts v" in repr(pipe)


def test_loss_is_the_diffusion_loss_with_the_pipelines_settings():
    pipe = _tiny_pipeline()
    x0 = torch.rand(4, 1, 32, 32) * 2 - 1
    ours = pipe.loss(x0, generator=torch.Generator().manual_seed(3))
    direct = diffusion_loss(pipe.model, pipe.schedule, x0, prediction_type="v",
                            min_snr_gamma=5.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours, direct)
    # model= swaps the network for one call (the Trainer passes its EMA copy or DDP wrapper)
    zero = pipe.loss(x0, model=lambda x, t: torch.zeros_like(x),
                     generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(zero, ours)


@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 4), ("dpm++2m", 4), ("ddpm", None)])
def test_sample_equals_the_sampler_called_by_hand(sampler, steps):
    pipe = _tiny_pipeline()
    if sampler == "ddpm":  # all T steps: use a short schedule for the test
        pipe.schedule = NoiseSchedule("cosine", 20)
    kw = {"sampler": sampler, "steps": steps, "progress": False}
    ours = pipe.sample(2, generator=torch.Generator().manual_seed(1), **kw)
    theirs = sample(pipe.model, pipe.schedule, (2, 1, 32, 32), prediction_type="v",
                    generator=torch.Generator().manual_seed(1), **kw)
    torch.testing.assert_close(ours, theirs)
    assert ours.shape == (2, 1, 32, 32)


def test_sample_returns_the_chain():
    pipe = _tiny_pipeline()
    res = pipe.sample(2, steps=5, return_intermediates=True, progress=False,
                      generator=torch.Generator().manual_seed(0))
    assert res.nfe == 5
    assert res.xs.shape == (6, 2, 1, 32, 32)
    assert res.timesteps.tolist()[-1] == -1


def test_sample_refuses_what_it_cannot_honour():
    pipe = _tiny_pipeline()
    with pytest.raises(ValueError, match="n must be a positive integer"):
        pipe.sample(0)
    with pytest.raises(ValueError, match="'ddpm' uses all T=1000 steps"):
        pipe.sample(1, sampler="ddpm", steps=10)
    with pytest.raises(ValueError, match="eta only applies to sampler='ddim'"):
        pipe.sample(1, sampler="dpm++2m", eta=0.3)
    with pytest.raises(ValueError, match="unknown prediction_type"):
        DiffusionPipeline(pipe.model, pipe.schedule, "score", (1, 8, 8))
    with pytest.raises(ValueError, match=r"sample_shape must be \(C, H, W\)"):
        DiffusionPipeline(pipe.model, pipe.schedule, "eps", (8, 8))


class _HalfScale(nn.Module):
    """A toy autoencoder: z = average-pooled x (f = 2), decode = nearest upsampling."""

    def encode(self, x):
        return nn.functional.avg_pool2d(x, 2)

    def decode(self, z):
        return nn.functional.interpolate(z, scale_factor=2, mode="nearest")


def test_latent_pipeline_encodes_scales_and_decodes():
    base = _tiny_pipeline()
    pipe = DiffusionPipeline(base.model, base.schedule, "v", (1, 16, 16),
                             autoencoder=_HalfScale(), scale_factor=2.0)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    z = pipe.encode(x)
    torch.testing.assert_close(z, 2.0 * nn.functional.avg_pool2d(x, 2))
    torch.testing.assert_close(pipe.decode(z), nn.functional.interpolate(
        z / 2.0, scale_factor=2, mode="nearest"))
    assert pipe.image_shape == (1, 32, 32)
    # the loss runs in latent space: the same as the diffusion loss of the encoded batch
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    torch.testing.assert_close(pipe.loss(x, generator=g1),
                               pipe.loss(z, encoded=True, generator=g2))
    images = pipe.sample(2, steps=3, progress=False, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 1, 32, 32)
    assert float(images.abs().max()) <= 1.0


def test_save_then_load_model_round_trip(tmp_path):
    from oasis_lib.pretrained import load_model

    pipe = _tiny_pipeline()
    path = pipe.save(tmp_path / "tiny.safetensors", dtype=torch.float32)
    loaded = load_model(path, device="cpu")
    assert isinstance(loaded, DiffusionPipeline)
    assert loaded.config.to_dict() == pipe.config.to_dict()
    g = torch.Generator
    torch.testing.assert_close(
        loaded.sample(2, steps=3, progress=False, generator=g().manual_seed(0)),
        pipe.sample(2, steps=3, progress=False, generator=g().manual_seed(0)))
