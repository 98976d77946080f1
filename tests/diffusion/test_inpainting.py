"""RePaint: the jump schedule, exactness of the kept region, DDPM equivalence, harmonisation on a
prior known in closed form, and the latent-space border helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from oasis_lib import NoiseSchedule, SampleResult, sample
from oasis_lib.diffusion.inpainting import (
    feather_mask,
    latent_region,
    paste_back,
    repaint,
    repaint_latent,
    repaint_timesteps,
)
from oasis_lib.diffusion.sampling import p_sample

T = 20
SHAPE = (2, 1, 8, 8)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


class Dummy(nn.Module):
    """Pixel-local fixed 'network': 0.1 x_t + 0.01 t / T (as in test_sampling)."""

    def forward(self, x, t):
        return 0.1 * x + 0.01 * (t.to(x.dtype) / T)[:, None, None, None]


class ConstantPrior(nn.Module):
    """The exact x0-predictor E[x0 | x_t] for the data x0 = a * ones, a ~ N(0, SIGMA^2): a | x_t
    is Gaussian with precision 1/SIGMA^2 + n ab / (1 - ab) and mean
    sqrt(ab) / (1 - ab) * sum(x_t) / precision (n pixels, ab = alpha_bar_t)."""

    SIGMA = 0.5

    def __init__(self, schedule):
        super().__init__()
        self.s = schedule

    def forward(self, x, t):
        ab = self.s.f64("alpha_bar")[t.cpu()].to(x.dtype).view(-1, 1, 1, 1)
        precision = 1 / self.SIGMA**2 + x[0].numel() * ab / (1 - ab)
        a = (ab.sqrt() / (1 - ab)) * x.sum(dim=(1, 2, 3), keepdim=True) / precision
        return a.expand_as(x)


def _image(shape=SHAPE):
    return torch.rand(shape, generator=_gen(42)) * 1.8 - 0.9


def _region(shape=SHAPE):
    region = torch.zeros(shape[0], 1, *shape[2:])
    region[..., 2:6, 3:7] = 1
    return region


# --------------------------------------------------------------------------- schedule
def test_repaint_timesteps_plain_and_example():
    assert repaint_timesteps(6) == [5, 4, 3, 2, 1, 0, -1]
    assert repaint_timesteps(10, jump_length=3, resample=2) == [
        9, 8, 7, 6, 7, 8, 9, 8, 7, 6, 5, 4, 3, 4, 5, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, -1]


@pytest.mark.parametrize(("T_", "j", "r"), [(10, 1, 3), (250, 10, 10), (37, 5, 4), (8, 7, 2)])
def test_repaint_timesteps_counts_and_moves(T_, j, r):
    ts = repaint_timesteps(T_, jump_length=j, resample=r)
    assert ts[0] == T_ - 1
    assert ts[-1] == -1
    steps = [b - a for a, b in zip(ts[:-1], ts[1:], strict=True)]
    assert set(steps) <= {-1, 1}
    assert max(ts) == T_ - 1
    jump_points = -(-(T_ - j) // j)  # ceil((T - j) / j)
    assert steps.count(-1) == T_ + (r - 1) * j * jump_points
    assert steps.count(1) == (r - 1) * j * jump_points


def test_repaint_timesteps_errors():
    with pytest.raises(ValueError, match="jump_length"):
        repaint_timesteps(10, jump_length=10)
    with pytest.raises(ValueError, match="resample"):
        repaint_timesteps(10, resample=0)


# --------------------------------------------------------------------------- exactness
def test_empty_region_returns_the_image_exactly():
    s = NoiseSchedule("cosine", T)
    image = _image()
    out = repaint(Dummy(), s, image, torch.zeros(8, 8), jump_length=2, resample=3,
                  generator=_gen(0), progress=False)
    assert torch.equal(out, image)


def test_kept_region_is_exact_and_result_is_reproducible():
    s = NoiseSchedule("cosine", T)
    image, region = _image(), _region()
    kw = {"jump_length": 3, "resample": 2, "progress": False}
    a = repaint(Dummy(), s, image, region, generator=_gen(1), **kw)
    b = repaint(Dummy(), s, image, region, generator=_gen(1), **kw)
    c = repaint(Dummy(), s, image, region, generator=_gen(2), **kw)
    keep = region.expand_as(image) == 0
    assert torch.equal(a[keep], image[keep])
    assert torch.equal(a, b)
    assert not torch.equal(a[~keep], c[~keep])


@pytest.mark.parametrize("full", [False, True])
def test_resample_1_jump_1_is_plain_ddpm_in_the_unknown_region(full):
    """With the known-region draws on a second generator, ``generator`` sees exactly the draws
    of sample(sampler='ddpm'); a pixel-local model then gives the same unknown region."""
    s = NoiseSchedule("cosine", T)
    image = _image()
    region = torch.ones(8, 8) if full else _region()
    out = repaint(Dummy(), s, image, region, generator=_gen(3), known_generator=_gen(4),
                  progress=False, dtype=torch.float64)
    ddpm = sample(Dummy(), s, SHAPE, sampler="ddpm", generator=_gen(3), progress=False,
                  dtype=torch.float64)
    unknown = region.bool().expand(SHAPE)
    torch.testing.assert_close(out[unknown], ddpm[unknown], rtol=0, atol=1e-12)


def test_single_generator_draw_order():
    """One generator: x_T, then per reverse step [z (t > 0), known noise (t - 1 >= 0)]; the same
    z's fed by hand to the DDPM step ``p_sample`` give the same images (region = everything)."""
    s = NoiseSchedule("cosine", T)
    out = repaint(Dummy(), s, _image(), torch.ones(8, 8), generator=_gen(5), progress=False,
                  dtype=torch.float64)
    g = _gen(5)
    x = torch.randn(SHAPE, generator=g).double()
    for t in range(T - 1, -1, -1):
        z = torch.randn(SHAPE, generator=g).double() if t > 0 else None
        if t - 1 >= 0:
            torch.randn(SHAPE, generator=g)  # the known region's noise, unused here
        x, _ = p_sample(Dummy()(x, torch.full((SHAPE[0],), t)), x, t, s, noise=z)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-12)


def test_return_intermediates_matches_and_records_every_network_call():
    s = NoiseSchedule("cosine", T)
    image, region = _image(), _region()
    kw = {"jump_length": 4, "resample": 2, "progress": False}
    images = repaint(Dummy(), s, image, region, generator=_gen(6), **kw)
    res = repaint(Dummy(), s, image, region, generator=_gen(6), return_intermediates=True, **kw)
    assert isinstance(res, SampleResult)
    assert torch.equal(res.images, images)
    ts = repaint_timesteps(T, jump_length=4, resample=2)
    calls = [a for a, b in zip(ts[:-1], ts[1:], strict=True) if b < a]
    assert res.nfe == len(calls)
    assert res.timesteps.tolist() == [*calls, -1]
    assert res.xs.shape == (len(calls) + 1, *SHAPE)
    assert torch.equal(res.xs[-1], images)
    sparse = repaint(Dummy(), s, image, region, generator=_gen(6), return_intermediates=True,
                     every=5, **kw)
    assert sparse.timesteps.tolist() == [*calls[::5], -1]


# --------------------------------------------------------------------------- closed form
def test_resampling_harmonises_on_a_constant_image_prior():
    """Data x0 = a * ones: the kept half of the image fixes a, so the regenerated half should be
    a too. Plain replacement (resample=1) leaves an error; RePaint's resampling shrinks it."""
    s = NoiseSchedule("cosine", 50)
    b = 256
    a = torch.randn(b, 1, 1, 1, generator=_gen(5), dtype=torch.float64) * ConstantPrior.SIGMA
    image = a.expand(b, 1, 4, 4).clone()
    region = torch.zeros(4, 4)
    region[:, 2:] = 1

    def error(resample):
        out = repaint(ConstantPrior(s), s, image, region, resample=resample,
                      prediction_type="x0", clip_x0=False, generator=_gen(0),
                      dtype=torch.float64, progress=False)
        return float((out[..., 2:] - a).pow(2).mean().sqrt())

    e1, e5 = error(1), error(5)
    assert e1 == pytest.approx(0.0299384, rel=1e-4)  # golden (float64, CPU)
    assert e1 < 0.05 * 2**0.5 * ConstantPrior.SIGMA  # vs 0.71 for an independent sample
    assert e5 < 0.6 * e1


def test_bad_region():
    s = NoiseSchedule("cosine", T)
    with pytest.raises(ValueError, match=r"only 0 \(keep\) and 1 \(regenerate\)"):
        repaint(Dummy(), s, _image(), torch.full((8, 8), 2.0), progress=False)
    with pytest.raises(ValueError, match="does not broadcast"):
        repaint(Dummy(), s, _image(), torch.zeros(4, 4), progress=False)
    with pytest.raises(ValueError, match="unknown ddpm_variance"):
        repaint(Dummy(), s, _image(), torch.zeros(8, 8), ddpm_variance="fixed", progress=False)


# --------------------------------------------------------------------------- latent helpers
def test_latent_region_covers_the_region_and_dilates_by_cells():
    region = torch.zeros(1, 1, 16, 16)
    region[..., 5, 5] = 1  # pixel (5, 5) lies in latent cell (1, 1) at factor 4
    cells = latent_region(region, 4, dilation=0)
    expected = torch.zeros(1, 1, 4, 4)
    expected[..., 1, 1] = 1
    assert torch.equal(cells, expected)
    ring = latent_region(region, 4, dilation=1)
    expected[..., 0:3, 0:3] = 1
    assert torch.equal(ring, expected)
    random = (torch.rand(3, 1, 16, 16, generator=_gen(7)) > 0.9).float()
    up = latent_region(random, 4).repeat_interleave(4, -1).repeat_interleave(4, -2)
    assert (up >= random).all()  # every regenerated pixel lies in a regenerated cell
    with pytest.raises(ValueError, match="must divide"):
        latent_region(region, 5)


def test_feather_mask_is_a_linear_ramp_outside_the_region():
    region = torch.zeros(1, 1, 9, 9)
    region[..., 4, 4] = 1
    w = feather_mask(region, width=3)
    assert w[0, 0, 4, 4] == 1
    for k in (1, 2, 3):
        assert w[0, 0, 4, 4 + k] == pytest.approx(1 - k / 4)
        assert w[0, 0, 4 - k, 4 - k] == pytest.approx(1 - k / 4)  # chessboard distance
    assert w[0, 0, 0, 0] == 0
    assert torch.equal(feather_mask(region, width=0), region)


def test_paste_back_keeps_the_original_outside_the_feather_ring():
    image, gen = _image((1, 1, 16, 16)), torch.full((1, 1, 16, 16), 0.5)
    region = torch.zeros(1, 1, 16, 16)
    region[..., 6:10, 6:10] = 1
    out = paste_back(gen, image, region, feather=2)
    far = feather_mask(region, width=2) == 0
    assert torch.equal(out[far], image[far])
    assert torch.equal(out[region.bool()], gen[region.bool()])
    assert torch.equal(paste_back(gen, image, torch.zeros_like(region), feather=3), image)


def test_repaint_latent_with_a_toy_autoencoder():
    s = NoiseSchedule("cosine", T)
    image = _image((2, 1, 16, 16))
    region = torch.zeros(2, 1, 16, 16)
    region[..., 4:8, 4:8] = 1

    def encode(x):
        return nn.functional.avg_pool2d(x, 2)

    def decode(z):
        return z.repeat_interleave(2, -1).repeat_interleave(2, -2)

    out = repaint_latent(Dummy(), s, image, region, encode=encode, decode=decode, dilation=1,
                         generator=_gen(8), progress=False)
    assert out.shape == image.shape
    far = feather_mask(region, width=1) == 0  # default feather = dilation * factor // 2 = 1
    assert torch.equal(out[far.expand_as(image)], image[far.expand_as(image)])
    assert not torch.equal(out[region.bool()], image[region.bool()])
