"""The autoencoder trains through the shared Trainer: loss falls, files, exact resume."""

from __future__ import annotations

import pytest
import torch
from synthetic import BlobSlices

from oasis_lib.checkpoint import load_checkpoint
from oasis_lib.config import AutoencoderTrainConfig
from oasis_lib.training.autoencoder import AutoencoderTrainer
from oasis_lib.training.draws import StepDraws, keyed_crops


def data():
    return {"train_set": BlobSlices(48, size=32, seed=0),
            "val_set": BlobSlices(16, size=32, seed=1)}


def tiny(out, **kw) -> AutoencoderTrainConfig:
    return AutoencoderTrainConfig.from_preset("tiny", out_dir=str(out), progress=False,
                                              precision="fp32", **kw)


def test_autoencoder_loss_falls_and_reconstructions_improve(tmp_path):
    trainer = AutoencoderTrainer(tiny(tmp_path, max_steps=40, epochs=20), **data())
    before = trainer.validate()
    result = trainer.fit()
    after = trainer.validate()
    assert result.step == 40
    assert after["val_loss"] < 0.7 * before["val_loss"]
    assert after["val_psnr_ema"] > before["val_psnr_ema"]
    for name in ("last.pt", "best.pt", "metrics.jsonl", "samples/epoch_0006.png"):
        assert (tmp_path / name).is_file(), name
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["config"]["crop_size"] == 16
    assert "scale_factor" in ckpt["ema"]["model"]


def test_crops_are_keyed_per_image_by_step_and_slot(tmp_path):
    # Each image is cropped at its own offset, drawn from (seed, step, its slot in the global
    # batch): the same image in the same slot of the same step gets the same crop however the
    # batch is split, and another step gives other offsets.
    trainer = AutoencoderTrainer(tiny(tmp_path), **data())
    x = torch.arange(32 * 32, dtype=torch.float32).view(1, 1, 32, 32).expand(8, 1, 32, 32)
    trainer.draws = StepDraws(trainer.cfg.seed, step=0)
    whole = keyed_crops(x, trainer.cfg.crop_size, trainer.draws)
    assert whole.shape == (8, 1, 16, 16)
    assert len({int(c[0, 0, 0]) for c in whole}) > 1  # not one offset for the whole batch
    trainer.draws = StepDraws(trainer.cfg.seed, step=0, first_slot=4)
    # the second half of a split batch
    assert torch.equal(keyed_crops(x[4:], trainer.cfg.crop_size, trainer.draws), whole[4:])
    trainer.draws = StepDraws(trainer.cfg.seed, step=1)
    assert not torch.equal(keyed_crops(x, trainer.cfg.crop_size, trainer.draws), whole)


def test_resume_equals_a_straight_run(tmp_path):
    straight = AutoencoderTrainer(tiny(tmp_path / "a", max_steps=12, epochs=20), **data())
    straight.fit()
    first = AutoencoderTrainer(tiny(tmp_path / "b", max_steps=7, epochs=20), **data())
    first.fit()
    resumed = AutoencoderTrainer(tiny(tmp_path / "b", max_steps=12, epochs=20), resume=True,
                                 **data())
    resumed.fit()
    for (k, a), b in zip(straight.raw_model.state_dict().items(),
                         resumed.raw_model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_bad_autoencoder_configs_are_refused():
    with pytest.raises(ValueError, match="multiple of the downsampling factor"):
        AutoencoderTrainConfig.from_preset("tiny", crop_size=18)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        AutoencoderTrainConfig.from_preset("huge")
    with pytest.raises(ValueError, match="needs perceptual_weights"):
        AutoencoderTrainConfig.from_preset("cpu", perceptual_net="lpips")


def test_sigterm_saves_and_names_the_autoencoder_command(tmp_path):
    import os
    import signal

    from oasis_lib.training.signals import TrainingStopped

    trainer = AutoencoderTrainer(tiny(tmp_path, max_steps=20, epochs=20), **data())
    step = trainer.train_step

    def step_then_signal(*args, **kwargs):
        loss = step(*args, **kwargs)
        if trainer.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    trainer.train_step = step_then_signal
    with pytest.raises(TrainingStopped, match=r"saved step 2 to .*last\.pt; continue with "
                                              r"`python -m oasis_lib train-autoencoder --out "):
        trainer.fit()
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2
