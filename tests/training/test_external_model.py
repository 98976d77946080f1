"""A caller's own network through the Trainer (``arch="external"``): training, the recipe
options diffusers' example needs, checkpoints, exact resume, loading, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from synthetic import BlobSlices
from torch import nn

from oasis_lib.checkpoint import CheckpointError
from oasis_lib.config import TrainConfig
from oasis_lib.models.factory import build_model
from oasis_lib.pretrained import load_model
from oasis_lib.training import Trainer
from oasis_lib.training.optim import lr_multiplier


class PlainNet(nn.Module):
    """A plain torch ``(x, t) -> prediction`` network: no oasis_lib, no diffusers."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Conv2d(1, 8, 3, padding=1)
        self.time = nn.Embedding(1000, 8)
        self.out = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x, t):
        return self.out(torch.nn.functional.silu(self.inp(x) + self.time(t)[:, :, None, None]))


def _net(seed: int = 0) -> PlainNet:
    torch.manual_seed(seed)
    return PlainNet()


def _cfg(out, **over) -> TrainConfig:
    # diffusers' unconditional example, scaled to seconds: eps, linear betas, T = 1000, AdamW
    # (0.95, 0.999), cosine LR after warm-up, the power EMA warm-up
    base = dict(arch="external", out_dir=str(out), image_size=16, max_steps=10, epochs=100,
                batch_size=8, checkpoint_every=3, validate_every=2, val_size=8,
                sample_every=1000, progress=False, log_every=1, lr=1e-3,
                adam_betas=(0.95, 0.999), weight_decay=1e-6, lr_schedule="cosine",
                warmup_steps=3, lr_decay_steps=12, ema_decay=0.9999, ema_power=0.75,
                diffusion={"schedule": "linear", "timesteps": 1000, "prediction_type": "eps",
                           "loss_type": "mse", "min_snr_gamma": None})
    return TrainConfig.from_preset("tiny", **{**base, **over})


def _data():
    return {"train_set": BlobSlices(40, 16, seed=0), "val_set": BlobSlices(8, 16, seed=1)}


def test_external_network_trains_through_the_loop_with_the_example_recipe(tmp_path):
    cfg = _cfg(tmp_path)
    net = _net()
    trainer = Trainer(cfg, model=net, **_data())
    assert trainer.raw_model is net
    assert trainer.pipeline.model is net
    assert trainer.opt.defaults["betas"] == (0.95, 0.999)
    before = trainer.validate()["val_loss"]
    trainer.fit()
    assert trainer.validate()["val_loss"] < before
    records = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    f = lr_multiplier(cfg)
    lrs = {r["step"]: r["lr"] for r in records if "lr" in r}
    assert sorted(lrs) == list(range(1, 11))
    for step, lr in lrs.items():  # the scheduler has stepped `step` times
        assert lr == pytest.approx(1e-3 * f(step))
    assert trainer.ema.current_decay() == pytest.approx(1 - (1 + 10) ** -0.75)

    pipe = load_model(tmp_path / "last.pt", device="cpu", model=_net(seed=5))
    ema = trainer.ema.model.state_dict()
    for k, v in pipe.model.state_dict().items():
        assert torch.equal(v, ema[k]), k
    x = pipe.sample(2, sampler="ddim", steps=3, generator=torch.Generator().manual_seed(0),
                    progress=False)
    assert x.shape == (2, 1, 16, 16)
    assert torch.isfinite(x).all()


def test_external_network_resumes_exactly(tmp_path):
    straight = Trainer(_cfg(tmp_path / "a"), model=_net(), **_data())
    straight.fit()
    first = Trainer(_cfg(tmp_path / "b", max_steps=4), model=_net(), **_data())
    first.fit()
    resumed = Trainer(_cfg(tmp_path / "b"), model=_net(seed=9), resume=True, **_data())
    assert resumed.step == 4
    resumed.fit()
    a, b = straight.state_dict(), resumed.state_dict()
    for key in ("model",):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), k
    for k, v in a["ema"]["model"].items():
        assert torch.equal(v, b["ema"]["model"][k]), k
    assert a["lr_scheduler"]["last_epoch"] == b["lr_scheduler"]["last_epoch"] == 10


def test_external_arch_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"pass it, Trainer\(config, model=net\)"):
        Trainer(_cfg(tmp_path / "a"), **_data())
    with pytest.raises(ValueError, match="model= is for arch 'external'"):
        Trainer(_cfg(tmp_path / "b", arch="unet"), model=_net(), **_data())
    with pytest.raises(ValueError, match=r"load_model\(path, model=net\)"):
        build_model(_cfg(tmp_path))
    Trainer(_cfg(tmp_path / "c", max_steps=1), model=_net(), **_data()).fit()
    with pytest.raises(CheckpointError, match=r"arch 'external'.*load_model\(path, model=net\)"):
        load_model(tmp_path / "c" / "last.pt", device="cpu")
    ours = _cfg(tmp_path / "d", arch="unet", max_steps=1, lr_schedule="constant",
                lr_decay_steps=None)
    Trainer(ours, **_data()).fit()
    with pytest.raises(CheckpointError, match="which the library builds: drop model="):
        load_model(tmp_path / "d" / "last.pt", device="cpu", model=_net())
    with pytest.raises(ValueError, match="conditional training needs arch 'unet'"):
        _cfg(tmp_path, condition="mask")
