"""Keyed draws (training.draws): a function of (seed, step, slot, stream) only, so an image
draws the same however its global batch is split (ranks, micro-batches)."""

from __future__ import annotations

import math

import pytest
import torch
from synthetic import BlobSlices

from oasis_lib.config import AutoencoderTrainConfig, TrainConfig
from oasis_lib.training import Trainer
from oasis_lib.training.autoencoder import AutoencoderTrainer
from oasis_lib.training.draws import StepDraws, _splitmix, draw_key, flip_images


def test_splitmix_is_the_published_generator():
    # SplitMix64 from state 0: its first two outputs (Steele, Lea & Flood 2014; Vigna's C code)
    assert _splitmix(0) == 0xE220A8397B1DCDAF
    assert _splitmix(0x9E3779B97F4A7C15) == 0x6E789E6AA1B965F4


def test_an_image_draws_the_same_whatever_its_share_of_the_batch():
    whole = StepDraws(seed=3, step=5, first_slot=0)
    for first, n in ((0, 4), (4, 4), (2, 2), (6, 2)):  # 2 ranks x 4, 4 micro-batches of 2, ...
        part = StepDraws(seed=3, step=5, first_slot=first)
        assert torch.equal(part.flips(n), whole.flips(8)[first:first + n])
        assert torch.equal(part.timesteps(n, 1000), whole.timesteps(8, 1000)[first:first + n])
        assert torch.equal(part.normal((n, 1, 4, 4)), whole.normal((8, 1, 4, 4))[first:first + n])
        assert torch.equal(part.integers(n, 17, "crop_top"),
                           whole.integers(8, 17, "crop_top")[first:first + n])


def test_seed_step_slot_and_stream_each_change_the_draw():
    base = draw_key(3, 5, 2, "noise")
    others = {draw_key(4, 5, 2, "noise"), draw_key(3, 6, 2, "noise"), draw_key(3, 5, 3, "noise"),
              draw_key(3, 5, 2, "timestep"), draw_key(3, 5, 2, "flip")}
    assert base not in others
    assert len(others) == 5
    a = StepDraws(3, 5).normal((2, 1, 4, 4))
    assert not torch.equal(a, StepDraws(3, 6).normal((2, 1, 4, 4)))  # next step: new noise
    assert not torch.equal(a[0], a[1])  # two images: their own noise
    with pytest.raises(KeyError):
        draw_key(3, 5, 2, "no such stream")


def test_draws_have_the_distributions_they_claim():
    # 4,000 images over 50 steps; bounds at ~5 standard errors of the closed-form moments.
    n, steps, T = 80, 50, 1000
    flips = torch.cat([StepDraws(0, s).flips(n) for s in range(steps)]).double()
    t = torch.cat([StepDraws(0, s).timesteps(n, T) for s in range(steps)]).double()
    eps = torch.cat([StepDraws(0, s).normal((n, 16)) for s in range(steps)]).double()
    m = flips.numel()
    assert abs(flips.mean() - 0.5) < 5 * 0.5 / math.sqrt(m)  # Bernoulli(1/2)
    assert t.min() >= 0
    assert t.max() <= T - 1
    sd_t = math.sqrt((T**2 - 1) / 12)  # discrete U{0..T-1}: mean (T-1)/2, var (T^2-1)/12
    assert abs(t.mean() - (T - 1) / 2) < 5 * sd_t / math.sqrt(m)
    assert abs(t.std() - sd_t) < 0.05 * sd_t
    assert abs(eps.mean()) < 5 / math.sqrt(eps.numel())  # N(0, 1)
    assert abs(eps.std() - 1) < 0.02
    corr = torch.corrcoef(torch.stack([flips, t]))[0, 1]  # streams independent
    assert abs(corr) < 5 / math.sqrt(m)


def test_flip_images_flips_images_and_masks_but_not_indices():
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).view(2, 1, 2, 3)
    mask = x.long()
    index = torch.tensor([7, 9])
    fx, fmask, findex = flip_images((x, mask, index), torch.tensor([True, False]))
    assert torch.equal(fx[0], x[0].flip(-1))
    assert torch.equal(fx[1], x[1])
    assert torch.equal(fmask[0], mask[0].flip(-1))
    assert torch.equal(findex, index)


def _weights(trainer) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in trainer.raw_model.parameters()])


@pytest.mark.parametrize("kind", ["diffusion", "autoencoder"])
def test_micro_batches_end_with_the_weights_of_one_batch(tmp_path, kind):
    # The in-process check of the slots: grad_accum 2 splits each global batch of 8 into two
    # micro-batches as two ranks would; every image keeps its flip, t and noise (the
    # autoencoder: its crop and posterior noise), so the runs differ by float rounding of
    # the gradient sum only. AdamW turns that into at most ~1e-3 of a step where a gradient
    # is near its eps (test_distributed's torchrun test explains the bound).
    runs = {}
    for accum in (1, 2):
        over = dict(out_dir=str(tmp_path / f"a{accum}"), max_steps=3, epochs=10, progress=False,
                    validate_every=1000, sample_every=1000, grad_accum=accum, lr=1e-3,
                    warmup_steps=0)
        if kind == "diffusion":
            trainer = Trainer(TrainConfig.from_preset("tiny", image_size=16, **over),
                              train_set=BlobSlices(24, 16, seed=0),
                              val_set=BlobSlices(8, 16, seed=1))
        else:
            trainer = AutoencoderTrainer(AutoencoderTrainConfig.from_preset("tiny", **over),
                                         train_set=BlobSlices(24, 32, seed=0),
                                         val_set=BlobSlices(8, 32, seed=1))
        start = _weights(trainer)
        trainer.fit()
        runs[accum] = _weights(trainer)
    diff = (runs[1] - runs[2]).abs()
    assert diff.max() < 1e-5
    assert diff.mean() < 1e-8
    assert (runs[1] - start).abs().max() > 1e-3  # three real steps at lr 1e-3
