"""The autoencoder's adversarial term: LDM's adaptive weight, D's alternating step, exact resume."""

from __future__ import annotations

import pytest
import torch
from synthetic import BlobSlices

from oasis_lib.checkpoint import load_checkpoint
from oasis_lib.config import AutoencoderLossConfig, AutoencoderTrainConfig
from oasis_lib.models.autoencoder import AutoencoderKL
from oasis_lib.models.discriminator import PatchDiscriminator
from oasis_lib.training.ae_losses import adaptive_weight, autoencoder_loss
from oasis_lib.training.autoencoder import AutoencoderTrainer
from oasis_lib.training.run_dir import read_jsonl


def data():
    return {"train_set": BlobSlices(48, size=32, seed=0),
            "val_set": BlobSlices(16, size=32, seed=1)}


def adv(out, **kw) -> AutoencoderTrainConfig:
    loss = AutoencoderLossConfig(perceptual=0.0, adversarial=0.5)
    kw = {"disc_channels": 8, "disc_layers": 2, **kw}
    return AutoencoderTrainConfig.from_preset("tiny", out_dir=str(out), progress=False,
                                              precision="fp32", loss=loss, log_every=1, **kw)


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    w = torch.randn(3, 4, requires_grad=True)
    x = torch.randn(5, 4)
    rec = (x @ w.T).pow(2).mean()
    adv_loss = -(x @ w.T).mean() * 7.0
    g_rec = torch.autograd.grad(rec, w, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv_loss, w, retain_graph=True)[0]
    lam = adaptive_weight(rec, adv_loss, w)
    assert not lam.requires_grad
    torch.testing.assert_close(lam, g_rec.norm() / (g_adv.norm() + 1e-4))
    # scaling the adversarial loss by k divides the weight by k: the balance is scale-free
    torch.testing.assert_close(adaptive_weight(rec, 10 * adv_loss, w) * 10, lam, rtol=1e-4,
                               atol=0)


def test_weighted_adversarial_gradient_matches_the_reconstruction_gradient_norm():
    torch.manual_seed(0)
    ae, disc = AutoencoderKL("tiny"), PatchDiscriminator(1, 8, 2, norm_groups=4)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    recon, post = ae(x, sample_posterior=False)
    last = ae.decoder.conv_out.weight
    cfg = AutoencoderLossConfig(ssim=0.0, kl=0.0, perceptual=0.0, adversarial=1.0)
    total, parts = autoencoder_loss(recon, x, post, config=cfg, disc=disc, last_layer=last)
    g_rec = torch.autograd.grad((recon - x).abs().mean(), last, retain_graph=True)[0]
    g_total = torch.autograd.grad(total, last)[0]
    g_adv = g_total - g_rec
    # lambda * grad(L_GAN) has the norm of grad(L_rec) (up to delta)
    torch.testing.assert_close(g_adv.norm(), g_rec.norm(), rtol=1e-3, atol=0)
    assert parts["adaptive_weight"] > 0
    assert "adversarial" in parts


def test_discriminator_trains_after_the_warm_up_and_is_checkpointed(tmp_path):
    trainer = AutoencoderTrainer(adv(tmp_path, max_steps=10, epochs=20, disc_start=4), **data())
    d0 = {k: v.clone() for k, v in trainer.disc.state_dict().items()}
    trainer.fit()
    d1 = trainer.disc.state_dict()
    assert any(not torch.equal(d0[k], d1[k]) for k in d0)  # D learnt
    log = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "loss" in r]
    assert [("disc" in r) for r in log] == [r["step"] > 4 for r in log]  # from disc_start on
    assert all(r["adaptive_weight"] > 0 for r in log if "disc" in r)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert set(ckpt["disc"]) == set(d1)
    assert "state" in ckpt["disc_optimizer"]
    assert "adversarial" not in trainer.validate()  # validation leaves the GAN term out


def test_warm_up_steps_are_those_of_a_run_without_the_adversarial_term(tmp_path):
    plain_cfg = adv(tmp_path / "a", max_steps=4, epochs=20, disc_start=100)
    plain = AutoencoderTrainer(plain_cfg, **data())
    plain.fit()
    off = AutoencoderTrainConfig.from_preset(
        "tiny", out_dir=str(tmp_path / "b"), progress=False, precision="fp32", max_steps=4,
        epochs=20, log_every=1, loss=AutoencoderLossConfig(perceptual=0.0))
    ref = AutoencoderTrainer(off, **data())
    ref.fit()
    for (k, a), b in zip(plain.raw_model.state_dict().items(),
                         ref.raw_model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_adversarial_resume_equals_a_straight_run(tmp_path):
    straight = AutoencoderTrainer(adv(tmp_path / "a", max_steps=10, epochs=20, disc_start=3),
                                  **data())
    straight.fit()
    first = AutoencoderTrainer(adv(tmp_path / "b", max_steps=6, epochs=20, disc_start=3),
                               **data())
    first.fit()
    resumed = AutoencoderTrainer(adv(tmp_path / "b", max_steps=10, epochs=20, disc_start=3),
                                 resume=True, **data())
    resumed.fit()
    for net in ("raw_model", "disc"):
        for (k, a), b in zip(getattr(straight, net).state_dict().items(),
                             getattr(resumed, net).state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{net}.{k}")


def test_bad_discriminator_options_are_refused(tmp_path):
    with pytest.raises(ValueError, match="disc_start"):
        adv(tmp_path, disc_start=-1).validate()
    with pytest.raises(ValueError, match="disc_lr"):
        adv(tmp_path, disc_lr=0.0).validate()
    with pytest.raises(ValueError, match="crops of at least 24 pixels, got 16"):
        adv(tmp_path, disc_layers=3).validate()  # 16x16 crops are too small for 3 layers


def test_the_logged_loss_is_the_reconstruction_loss_and_the_gradient_keeps_the_gan_term(
        tmp_path):
    trainer = AutoencoderTrainer(adv(tmp_path, max_steps=1, disc_start=0), **data())
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    state = trainer.gen.get_state()
    loss = trainer.compute_loss(x)
    parts = trainer.last_parts
    rec = parts["total"] - 0.5 * parts["adaptive_weight"] * parts["adversarial"]
    assert float(loss.detach()) == pytest.approx(rec, rel=1e-5)  # the value: no GAN term
    grad_with = torch.autograd.grad(loss, trainer.raw_model.decoder.conv_out.weight)[0]
    trainer.gen.set_state(state)
    trainer.cfg.loss = AutoencoderLossConfig(perceptual=0.0)  # the same step without D
    grad_without = torch.autograd.grad(trainer.compute_loss(x),
                                       trainer.raw_model.decoder.conv_out.weight)[0]
    assert (grad_with - grad_without).norm() > 0.1 * grad_without.norm()  # D's gradient is in


def test_init_from_starts_a_new_run_at_a_trained_autoencoder(tmp_path):
    first = AutoencoderTrainer(adv(tmp_path / "a", max_steps=3, epochs=20, disc_start=100),
                               **data())
    first.fit()
    tuned = AutoencoderTrainer(adv(tmp_path / "b", max_steps=3, epochs=20, disc_start=0,
                                   init_from=str(tmp_path / "a" / "last.pt")), **data())
    for (k, a), b in zip(first.ema.model.state_dict().items(),
                         tuned.raw_model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)  # the EMA weights, copied
    tuned.fit()  # and D trains from its first step
    assert "disc" in load_checkpoint(tmp_path / "b" / "last.pt")
    with pytest.raises(ValueError, match="another shape"):
        AutoencoderTrainer(adv(tmp_path / "c", init_from=str(tmp_path / "a" / "last.pt"),
                               autoencoder_overrides={"latent_channels": 3}), **data())
