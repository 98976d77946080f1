"""Autoencoder loss: zero on identical inputs, gradients, perceptual closed form, LPIPS files."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from oasis_lib.checkpoint import CheckpointError
from oasis_lib.evaluation.segmenter import TissueSegmenter
from oasis_lib.models.autoencoder import AutoencoderKL, DiagonalGaussian
from oasis_lib.models.discriminator import PatchDiscriminator, hinge_d_loss
from oasis_lib.training.ae_losses import (
    LPIPS_VGG_CHANNELS,
    SEGMENTER_LAYERS,
    AutoencoderLossConfig,
    FeaturePerceptualLoss,
    autoencoder_loss,
    discriminator_loss,
    load_lpips,
)


def _images(seed: int = 0, n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _segmenter_loss() -> FeaturePerceptualLoss:
    torch.manual_seed(0)
    return FeaturePerceptualLoss(TissueSegmenter(), SEGMENTER_LAYERS)


def test_parts_zero_on_identical_inputs():
    x = _images()
    standard = DiagonalGaussian(torch.zeros(2, 2, 8, 8), torch.zeros(2, 2, 8, 8))
    total, parts = autoencoder_loss(x.clone(), x, standard, config=AutoencoderLossConfig(),
                                    perceptual=_segmenter_loss())
    assert set(parts) == {"l1", "ssim", "kl", "perceptual", "total"}
    for name, value in parts.items():
        assert value == pytest.approx(0.0, abs=1e-6), name
    assert float(total) == pytest.approx(0.0, abs=1e-6)


def test_total_is_the_weighted_sum_and_kl_is_per_pixel():
    x, y = _images(0), _images(1)
    post = DiagonalGaussian(torch.ones(2, 2, 8, 8), torch.zeros(2, 2, 8, 8))  # KL = 0.5 each
    config = AutoencoderLossConfig(l1=1.0, ssim=0.5, kl=0.1, perceptual=0.0)
    total, parts = autoencoder_loss(y, x, post, config=config)
    assert parts["kl"] == pytest.approx(0.5 * 2 * 8 * 8 / (32 * 32))
    assert parts["l1"] == pytest.approx(float((x - y).abs().mean()))
    expected = parts["l1"] + 0.5 * parts["ssim"] + 0.1 * parts["kl"]
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert parts["ssim"] > 0.5  # independent noise images are structurally unrelated


def test_gradients_flow_to_the_autoencoder_not_the_feature_net():
    ae = AutoencoderKL("tiny")
    perceptual = _segmenter_loss()
    disc = PatchDiscriminator(base_channels=8, num_layers=2)
    x = _images()
    recon, post = ae(x, generator=torch.Generator().manual_seed(0))
    config = AutoencoderLossConfig(adversarial=0.1)
    total, parts = autoencoder_loss(recon, x, post, config=config, perceptual=perceptual,
                                    disc=disc)
    total.backward()
    assert "adversarial" in parts
    assert ae.encoder.conv_in.weight.grad.abs().sum() > 0
    assert ae.decoder.conv_out.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in perceptual.parameters())
    d = discriminator_loss(disc, recon, x)
    d.backward()
    assert disc.net[0].weight.grad.abs().sum() > 0


def test_missing_networks_raise():
    x = _images()
    post = DiagonalGaussian(torch.zeros(2, 2, 8, 8), torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match="perceptual=0"):
        autoencoder_loss(x, x, post, config=AutoencoderLossConfig())
    with pytest.raises(ValueError, match="PatchDiscriminator"):
        autoencoder_loss(x, x, post, config=AutoencoderLossConfig(perceptual=0, adversarial=1))
    with pytest.raises(ValueError, match="kl must be a number >= 0"):
        AutoencoderLossConfig(kl=-1)


def test_feature_distance_closed_form():
    # features (x, 1) normalised: a=0 -> (0, 1), b=1 -> (1, 1)/sqrt(2); squared distance 2 - sqrt 2
    loss = FeaturePerceptualLoss(lambda x: [torch.cat([x, torch.ones_like(x)], 1)])
    a, b = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
    assert float(loss(a, b)) == pytest.approx(2 - math.sqrt(2), rel=1e-6)
    # per-position channel normalisation: features differing by a positive factor are equal
    scaled = FeaturePerceptualLoss(lambda x: [torch.cat([x, 2 * x], 1)])
    assert float(scaled(a + 1, b * 3)) == pytest.approx(0.0, abs=1e-7)


def test_hooks_and_callable_agree_and_stop_early():
    seg = TissueSegmenter().eval()
    torch.manual_seed(0)
    x, y = _images(0), _images(1)
    hooked = FeaturePerceptualLoss(seg, SEGMENTER_LAYERS)
    called = FeaturePerceptualLoss(seg.encode)
    torch.testing.assert_close(hooked(x, y), called(x, y))
    head_calls = []
    seg.head.register_forward_hook(lambda *_: head_calls.append(1))
    hooked(x, y)
    assert head_calls == []  # the decoder never ran
    hooked.train()
    assert not seg.training
    with pytest.raises(ValueError, match="unknown layer"):
        FeaturePerceptualLoss(seg, ["down.9"])


def _fake_lpips_state(tmp_path, *, full: bool):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    vgg = make_layers(cfgs["D"])[:30]
    lin = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1)
           for k, c in enumerate(LPIPS_VGG_CHANNELS)}
    backbone = {f"features.{k}": v for k, v in vgg.state_dict().items()}
    if full:
        torch.save({**lin, **backbone}, tmp_path / "lpips_full.pth")
        return tmp_path / "lpips_full.pth", None, vgg, lin
    torch.save(lin, tmp_path / "vgg.pth")
    torch.save(backbone, tmp_path / "vgg16.pth")
    return tmp_path / "vgg.pth", tmp_path / "vgg16.pth", vgg, lin


def test_load_lpips_matches_its_definition(tmp_path):
    path, backbone, vgg, lin = _fake_lpips_state(tmp_path, full=False)
    loss = load_lpips(path, backbone_path=backbone)
    x, y = _images(0, size=32), _images(1, size=32)
    assert float(loss(x, x).abs().max()) == 0.0
    # by hand: ImageNet-normalised RGB, VGG taps, unit-normalised, weighted, spatial mean
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    def taps(img):
        h = (img.expand(-1, 3, -1, -1) - (2 * mean - 1).view(1, 3, 1, 1)) / (2 * std).view(
            1, 3, 1, 1)
        out = []
        for i, layer in enumerate(vgg):
            h = layer(h)
            if i in (3, 8, 15, 22, 29):
                out.append(h / (h.norm(dim=1, keepdim=True) + 1e-10))
        return out
    with torch.no_grad():
        expected = sum(((u - v) ** 2 * w.view(1, -1, 1, 1)).sum(1).mean((1, 2))
                       for u, v, w in zip(taps(x), taps(y), lin.values(), strict=True))
    torch.testing.assert_close(loss(x, y), expected, rtol=1e-4, atol=1e-6)


def test_load_lpips_errors_name_the_file(tmp_path):
    bad = tmp_path / "not_lpips.pth"
    torch.save({"conv.weight": torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError, match="not_lpips.pth is not an LPIPS-VGG weights file"):
        load_lpips(bad)
    lin_only = tmp_path / "lin.pth"
    torch.save({f"lin{k}.model.1.weight": torch.ones(1, c, 1, 1)
                for k, c in enumerate(LPIPS_VGG_CHANNELS)}, lin_only)
    with pytest.raises(CheckpointError, match="lin.pth: missing VGG16 weights.*backbone_path"):
        load_lpips(lin_only)
    with pytest.raises(CheckpointError, match="not found: .*absent.pth"):
        load_lpips(tmp_path / "absent.pth")


def test_hinge_loss_closed_form():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5])
    assert float(hinge_d_loss(real, fake)) == pytest.approx(0.5 * (0.5 + 0.75))
    assert PatchDiscriminator()(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 6, 6)
    with pytest.raises(ValueError, match="choose one of"):
        PatchDiscriminator(base_channels=12, norm_groups=8)
    assert isinstance(PatchDiscriminator().net, nn.Sequential)
