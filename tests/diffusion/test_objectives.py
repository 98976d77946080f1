"""Prediction-type conversions, training targets, min-SNR weights and the training loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from oasis_lib.diffusion.objectives import (
    LOSS_TYPES,
    PREDICTION_TYPES,
    diffusion_loss,
    min_snr_weight,
    model_output_to_x0_eps,
    predict_eps_from_v,
    predict_eps_from_x0,
    predict_x0_from_eps,
    predict_x0_from_v,
    training_target,
    v_target,
    validation_draws,
    validation_loss,
)
from oasis_lib.diffusion.schedule import NoiseSchedule

TIGHT = {"rtol": 1e-9, "atol": 1e-9}


def _draws(b=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(b, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(b, 1, 4, 4, generator=g, dtype=torch.float64)
    return x0, eps


@pytest.mark.parametrize("kind", ["cosine", "linear"])
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_conversions_round_trip_all_t(kind, prediction_type):
    s = NoiseSchedule(kind, 1000, warn=False)
    x0, eps = _draws(b=7)
    t = torch.tensor([0, 1, 10, 500, 998, 999, 999])  # includes t = T-1
    x_t = s.q_sample(x0, t, eps)
    out = training_target(s, x0, eps, t, prediction_type)
    x0_hat, eps_hat = model_output_to_x0_eps(s, out, x_t, t, prediction_type)
    torch.testing.assert_close(x0_hat, x0, **TIGHT)
    torch.testing.assert_close(eps_hat, eps, **TIGHT)


def test_individual_conversions_and_v_identities():
    s = NoiseSchedule("cosine", 100)
    x0, eps = _draws()
    t = torch.tensor([0, 25, 50, 98, 99])
    x_t = s.q_sample(x0, t, eps)
    v = v_target(s, x0, eps, t)
    a = s.f64("sqrt_alpha_bar")[t].view(-1, 1, 1, 1)
    sig = s.f64("sqrt_one_minus_alpha_bar")[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(v, a * eps - sig * x0, **TIGHT)  # Salimans & Ho definition
    torch.testing.assert_close(predict_x0_from_v(s, x_t, t, v), x0, **TIGHT)
    torch.testing.assert_close(predict_eps_from_v(s, x_t, t, v), eps, **TIGHT)
    torch.testing.assert_close(predict_x0_from_eps(s, x_t, t, eps), x0, **TIGHT)
    torch.testing.assert_close(predict_eps_from_x0(s, x_t, t, x0), eps, **TIGHT)
    # |(x_t, v)| is a rotation of |(x0, eps)|: norms are preserved pointwise
    torch.testing.assert_close(x_t**2 + v**2, x0**2 + eps**2, **TIGHT)


def test_zero_terminal_snr_conversions():
    s = NoiseSchedule("cosine", 100, zero_terminal_snr=True)
    x0, eps = _draws(b=3)
    t = torch.tensor([99, 99, 50])
    x_t = s.q_sample(x0, t, eps)
    torch.testing.assert_close(x_t[:2], eps[:2], **TIGHT)  # x_T is pure noise
    v = v_target(s, x0, eps, t)
    torch.testing.assert_close(predict_x0_from_v(s, x_t, t, v), x0, **TIGHT)  # v is well posed
    torch.testing.assert_close(predict_eps_from_v(s, x_t, t, v), eps, **TIGHT)
    x0_from_eps = predict_x0_from_eps(s, x_t, t, eps + 0.1)  # ill posed, but finite (clamped)
    assert torch.isfinite(x0_from_eps).all()


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_min_snr_weights(prediction_type):
    s = NoiseSchedule("cosine", 1000)
    t = torch.tensor([0, 100, 400, 500, 700, 999])
    gamma = 5.0
    ab = s.f64("alpha_bar")[t]
    snr = ab / (1 - ab)
    clipped = torch.minimum(snr, torch.tensor(gamma, dtype=torch.float64))
    expect = {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[prediction_type]
    w = min_snr_weight(s, t, gamma, prediction_type)
    assert w.dtype == torch.float32
    assert w.shape == (6,)
    torch.testing.assert_close(w, expect.float(), rtol=1e-6, atol=0)
    if prediction_type == "eps":  # high noise (snr < gamma): weight 1; low noise: gamma / snr
        assert w[-1].item() == 1.0
        assert w[0].item() == pytest.approx(gamma / snr[0].item())


def test_min_snr_weight_finite_at_zero_snr():
    s = NoiseSchedule("linear", 100, zero_terminal_snr=True)
    t = torch.tensor([99])
    assert min_snr_weight(s, t, 5.0, "eps").item() == 1.0
    assert min_snr_weight(s, t, 5.0, "v").item() == 0.0
    with pytest.raises(ValueError, match="gamma"):
        min_snr_weight(s, t, 0.0, "eps")


class _Conv(nn.Module):
    """A tiny trainable model(x_t, t)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)

    def forward(self, x, t):
        return self.conv(x)


class _Recorder(nn.Module):
    """Returns a fixed fraction of x_t and records its inputs."""

    def forward(self, x, t):
        self.x, self.t = x, t
        return 0.5 * x


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_diffusion_loss_value(prediction_type, loss_type):
    s = NoiseSchedule("cosine", 50)
    x0, eps = _draws(b=4)
    x0, eps = x0.float(), eps.float()
    t = torch.tensor([0, 10, 30, 49])
    model = _Recorder()
    loss = diffusion_loss(model, s, x0, prediction_type=prediction_type, loss_type=loss_type,
                          t=t, noise=eps)
    x_t = s.q_sample(x0, t, eps)
    torch.testing.assert_close(model.x, x_t)
    assert model.t.tolist() == t.tolist()
    assert model.t.dtype == torch.long
    target = {"eps": eps, "x0": x0, "v": v_target(s, x0, eps, t)}[prediction_type]
    diff = 0.5 * x_t - target
    expect = (diff**2).mean() if loss_type == "mse" else diff.abs().mean()
    assert loss.item() == pytest.approx(expect.item(), rel=1e-6)
    # min-SNR: per-sample means weighted, then averaged over the batch
    w = min_snr_weight(s, t, 5.0, prediction_type)
    per = (diff**2 if loss_type == "mse" else diff.abs()).mean(dim=(1, 2, 3))
    weighted = diffusion_loss(model, s, x0, prediction_type=prediction_type, loss_type=loss_type,
                              min_snr_gamma=5.0, t=t, noise=eps)
    assert weighted.item() == pytest.approx((w * per).mean().item(), rel=1e-6)


def test_diffusion_loss_oracle_is_zero():
    s = NoiseSchedule("cosine", 50)
    x0, eps = _draws(b=3)
    t = torch.tensor([3, 20, 49])
    oracle = lambda x, tt: v_target(s, x0, eps, tt)  # noqa: E731
    assert diffusion_loss(oracle, s, x0, prediction_type="v", t=t, noise=eps).item() < 1e-20


def test_diffusion_loss_draw_order_and_generator():
    s = NoiseSchedule("cosine", 50)
    x0 = torch.zeros(6, 1, 4, 4)
    model = _Recorder()
    loss = diffusion_loss(model, s, x0, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # t first, then the noise
    t = torch.randint(0, 50, (6,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    assert model.t.tolist() == t.tolist()
    torch.testing.assert_close(loss, diffusion_loss(model, s, x0, t=t, noise=noise))
    again = diffusion_loss(model, s, x0, generator=torch.Generator().manual_seed(3))
    other = diffusion_loss(model, s, x0, generator=torch.Generator().manual_seed(4))
    assert again.item() == loss.item()
    assert other.item() != loss.item()


def test_validation_loss_and_draws():
    s = NoiseSchedule("cosine", 100)
    x0 = torch.rand(4, 1, 4, 4) * 2 - 1
    t, noise = validation_draws(s, tuple(x0.shape), seed=7)
    assert t.tolist() == [12, 37, 62, 87]
    t2, noise2 = validation_draws(s, tuple(x0.shape), seed=7)
    assert torch.equal(noise, noise2)
    assert torch.equal(t, t2)
    lin = _Conv()
    v = validation_loss(lin, s, x0, t=t, noise=noise)
    assert not v.requires_grad
    assert diffusion_loss(lin, s, x0, t=t, noise=noise).requires_grad
    assert v.item() == diffusion_loss(lin, s, x0, t=t, noise=noise).item()


def test_bad_options():
    s = NoiseSchedule("cosine", 10)
    x0 = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match=r"unknown prediction_type 'noise'.*'eps', 'x0', 'v'"):
        diffusion_loss(_Recorder(), s, x0, prediction_type="noise")
    with pytest.raises(ValueError, match=r"unknown loss_type 'huber'.*'mse', 'l1'"):
        diffusion_loss(_Recorder(), s, x0, loss_type="huber")
    with pytest.raises(ValueError, match="unknown prediction_type"):
        training_target(s, x0, x0, torch.tensor([0]), "score")
