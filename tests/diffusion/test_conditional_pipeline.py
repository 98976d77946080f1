"""The conditional pipeline: guidance through every sampler, clear errors, inpainting in pixel
and latent space, save/load of a conditional model."""

from __future__ import annotations

import pytest
import torch

from oasis_lib.config import TrainConfig
from oasis_lib.diffusion import DiffusionPipeline, sample
from oasis_lib.diffusion.guidance import ClassifierFreeGuidance
from oasis_lib.models.autoencoder import AutoencoderConfig, AutoencoderKL
from oasis_lib.models.conditioning import Condition
from oasis_lib.models.factory import build_pipeline
from oasis_lib.models.unet import UNet, UNetConfig
from oasis_lib.pretrained import load_model

SIZE, T = 16, 20


def _randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return module


def conditional_pipeline(condition="mask+slice", **over) -> DiffusionPipeline:
    cfg = TrainConfig.from_preset("tiny", image_size=SIZE, condition=condition,
                                  diffusion={"timesteps": T, "prediction_type": "v"}, **over)
    pipe = build_pipeline(cfg, warn=False)
    _randomise(pipe.model)
    return pipe.eval()


def mask_condition(b=1, seed=0) -> Condition:
    g = torch.Generator().manual_seed(seed)
    return Condition(mask=torch.randint(0, 4, (b, SIZE, SIZE), generator=g),
                     slice_index=torch.randint(0, 32, (b,), generator=g))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("sampler", "steps"), [
    ("ddim", 5), ("dpm++2m", 5), ("ddpm", None), ("dpm++2m-sde", 5), ("dpm++3m", 5),
    ("unipc", 5)])
def test_scale_one_is_the_conditional_model_and_scale_zero_the_unconditional(sampler, steps):
    pipe = conditional_pipeline()
    cond = mask_condition(b=3)
    ours = pipe.sample(3, sampler=sampler, steps=steps, condition=cond, guidance_scale=1.0,
                       generator=gen(), progress=False)
    direct = sample(lambda x, t: pipe.model(x, t, cond), pipe.schedule, (3, 1, SIZE, SIZE),
                    sampler=sampler, steps=steps, prediction_type="v", generator=gen(),
                    progress=False)
    torch.testing.assert_close(ours, direct, rtol=0, atol=0)
    uncond = pipe.sample(3, sampler=sampler, steps=steps, guidance_scale=0.0, generator=gen(),
                         progress=False)
    null = sample(lambda x, t: pipe.model(x, t, None), pipe.schedule, (3, 1, SIZE, SIZE),
                  sampler=sampler, steps=steps, prediction_type="v", generator=gen(),
                  progress=False)
    torch.testing.assert_close(uncond, null, rtol=0, atol=0)
    guided = pipe.sample(3, sampler=sampler, steps=steps, condition=cond, guidance_scale=3.0,
                         generator=gen(), progress=False)
    assert not torch.allclose(guided, ours)


def test_guided_output_is_u_plus_s_times_c_minus_u():
    pipe = conditional_pipeline()
    cond = mask_condition(b=2)
    den = pipe.denoiser(condition=cond, guidance_scale=2.5, batch_size=2)
    assert isinstance(den, ClassifierFreeGuidance)
    x, t = torch.randn(2, 1, SIZE, SIZE, generator=gen(1)), torch.tensor([3, 15])
    with torch.no_grad():
        c, u = pipe.model(x, t, cond), pipe.model(x, t, cond.null_like())
        torch.testing.assert_close(den(x, t), u + 2.5 * (c - u), rtol=1e-4, atol=1e-5)


def test_a_condition_of_batch_one_is_used_for_every_sample():
    pipe = conditional_pipeline()
    one = mask_condition(b=1)
    three = Condition(mask=one.mask.repeat(3, 1, 1), slice_index=one.slice_index.repeat(3))
    a = pipe.sample(3, steps=3, condition=one, guidance_scale=2.0, generator=gen(),
                    progress=False)
    b = pipe.sample(3, steps=3, condition=three, guidance_scale=2.0, generator=gen(),
                    progress=False)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_guidance_rescale_changes_high_scale_samples_only_when_asked():
    pipe = conditional_pipeline()
    cond = mask_condition(b=2)
    kw = dict(steps=4, condition=cond, guidance_scale=5.0, generator=gen(), progress=False)
    plain = pipe.sample(2, **kw)
    kw["generator"] = gen()
    rescaled = pipe.sample(2, guidance_rescale=0.7, **kw)
    assert not torch.allclose(plain, rescaled)


def test_errors_name_the_problem_and_the_way_out():
    pipe = conditional_pipeline()
    with pytest.raises(ValueError, match=r"guidance_scale=0.*Condition\(\)"):
        pipe.sample(2, steps=2, progress=False)
    with pytest.raises(ValueError, match="the mask is 32x32 but this model generates 16x16"):
        pipe.sample(1, steps=2, progress=False,
                    condition=Condition(mask=torch.zeros(1, 32, 32, dtype=torch.long)))
    with pytest.raises(ValueError, match="batch size 2 but 3 images"):
        pipe.sample(3, steps=2, progress=False, condition=mask_condition(b=2))
    with pytest.raises(ValueError, match=r"found \[170\].*divide by 85"):
        Condition(mask=torch.full((1, SIZE, SIZE), 170))
    with pytest.raises(ValueError, match=r"slice_index must be in 0..31; found \[32\]"):
        Condition(slice_index=torch.tensor([32]))
    mask_only = conditional_pipeline("mask")
    with pytest.raises(ValueError, match="takes no slice index"):
        mask_only.sample(1, steps=2, progress=False, condition=mask_condition())
    plain = build_pipeline(TrainConfig.from_preset("tiny", image_size=SIZE), warn=False)
    with pytest.raises(ValueError, match="unconditional"):
        plain.sample(1, steps=2, progress=False, condition=mask_condition())
    with pytest.raises(ValueError, match="guidance needs a conditional model"):
        plain.sample(1, steps=2, progress=False, guidance_scale=2.0)
    with pytest.raises(ValueError, match="does not match the network"):
        DiffusionPipeline(UNet("tiny"), pipe.schedule, "v", (1, 32, 32), condition="mask")
    with pytest.raises(ValueError, match="unknown condition 'tissue'"):
        DiffusionPipeline(UNet("tiny"), pipe.schedule, "v", (1, 32, 32), condition="tissue")


def test_null_condition_gives_unconditional_samples():
    pipe = conditional_pipeline()
    a = pipe.sample(2, steps=3, condition=Condition(), generator=gen(), progress=False)
    b = pipe.sample(2, steps=3, guidance_scale=0, generator=gen(), progress=False)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_pixel_inpainting_keeps_the_known_region_exactly():
    pipe = conditional_pipeline()
    image = torch.rand(2, 1, SIZE, SIZE, generator=gen(2)) * 2 - 1
    region = torch.zeros(SIZE, SIZE)
    region[4:10, 5:12] = 1
    for cond, scale in ((None, None), (mask_condition(b=2), 2.0)):
        out = pipe.inpaint(image, region, jump_length=3, resample=2, condition=cond,
                           guidance_scale=scale, generator=gen(), progress=False)
        keep = region == 0
        assert torch.equal(out[..., keep], image[..., keep])
        assert not torch.allclose(out[..., ~keep], image[..., ~keep])


def test_latent_inpainting_is_exact_beyond_the_feather_ring():
    ae = _randomise(AutoencoderKL(AutoencoderConfig.preset("tiny")), seed=3).eval()
    c, h, w = ae.config.latent_shape(SIZE)
    net = _randomise(UNet(UNetConfig.preset("tiny", image_size=h, in_channels=c,
                                            out_channels=c, mask_encoding="onehot")))
    pipe = DiffusionPipeline(net, conditional_pipeline().schedule, "v", (c, h, w),
                             autoencoder=ae, scale_factor=0.7, condition="mask").eval()
    image = torch.rand(1, 1, SIZE, SIZE, generator=gen(4)) * 2 - 1
    region = torch.zeros(SIZE, SIZE)
    region[4:8, 4:8] = 1
    cond = Condition(mask=mask_condition().mask)
    out = pipe.inpaint(image, region, condition=cond, guidance_scale=1.5, feather=2,
                       generator=gen(), progress=False)
    far = torch.ones(SIZE, SIZE, dtype=torch.bool)
    far[2:10, 2:10] = False  # the region and its 2-pixel feather ring
    assert out.shape == image.shape
    assert torch.equal(out[..., far], image[..., far])
    assert not torch.allclose(out[..., 4:8, 4:8], image[..., 4:8, 4:8])
    # latent sampling with a pixel-size mask (pooled to the latent grid by the U-Net)
    assert pipe.sample(2, steps=2, condition=cond, guidance_scale=2.0,
                       progress=False).shape == (2, 1, SIZE, SIZE)


def test_save_and_load_round_trip_a_conditional_model(tmp_path):
    pipe = conditional_pipeline(p_uncond=0.2, mask_ablation_p=0.3)
    path = pipe.save(tmp_path / "cond.safetensors", dtype=torch.float32)
    back = load_model(path, device="cpu")
    assert back.condition == "mask+slice"
    assert (back.config.p_uncond, back.config.mask_ablation_p) == (0.2, 0.3)
    assert back.model.config == pipe.model.config
    cond = mask_condition(b=2)
    kw = dict(steps=3, condition=cond, guidance_scale=2.0, progress=False)
    torch.testing.assert_close(back.sample(2, generator=gen(), **kw),
                               pipe.sample(2, generator=gen(), **kw), rtol=0, atol=0)
