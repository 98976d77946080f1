"""Conditional training: masks and slice indices reach the loss, flipped with their slices,
ablated and dropped out by draws keyed per image (training.draws), so a crashed run resumes
exactly; latent runs keep pixel masks next to the cached latents."""

from __future__ import annotations

import pytest
import torch
from synthetic import CondBlobs as _CondBlobs
from torch.utils.data import TensorDataset

from oasis_lib.config import TrainConfig
from oasis_lib.models.conditioning import Condition
from oasis_lib.training import Trainer

SIZE = 16


class CondBlobs(_CondBlobs):
    def __init__(self, n: int, seed: int):
        super().__init__(n, SIZE, seed=seed)


def cond_config(out, **over) -> TrainConfig:
    base = dict(out_dir=str(out), image_size=SIZE, max_steps=12, epochs=100, batch_size=8,
                checkpoint_every=4, validate_every=2, val_size=16, sample_every=1000,
                progress=False, log_every=2, condition="mask+slice", p_uncond=0.25,
                mask_ablation_p=0.3)
    return TrainConfig.from_preset("tiny", **{**base, **over})


def data():
    return {"train_set": CondBlobs(40, seed=0), "val_set": CondBlobs(16, seed=1)}


class Crash(Exception):
    pass


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_crash_then_resume_equals_straight_run(tmp_path, monkeypatch, grad_accum):
    straight = Trainer(cond_config(tmp_path / "a", grad_accum=grad_accum), **data())
    straight.fit()

    step = Trainer.train_step

    def crashing(self, x0):  # dies in step 7, between checkpoints
        if self.step == 6:
            raise Crash  # (no save on the way out, as after SIGKILL)
        return step(self, x0)

    monkeypatch.setattr(Trainer, "train_step", crashing)
    with pytest.raises(Crash):
        Trainer(cond_config(tmp_path / "b", grad_accum=grad_accum), **data()).fit()
    monkeypatch.setattr(Trainer, "train_step", step)
    resumed = Trainer(cond_config(tmp_path / "b", grad_accum=grad_accum), resume=True, **data())
    assert resumed.step == 5  # the epoch-end checkpoint (5 batches an epoch); 6 and 7 lost
    resumed.fit()
    a, b = straight.state_dict(), resumed.state_dict()
    for key in ("model", "ema"):
        for name, tensor in a[key].items() if key == "model" else a[key]["model"].items():
            other = b[key][name] if key == "model" else b[key]["model"][name]
            assert torch.equal(tensor, other), f"{key}.{name}"
    assert a["step"] == b["step"] == 12


def test_ablation_and_dropout_reach_the_loss(tmp_path, monkeypatch):
    seen: list[Condition] = []
    trainer = Trainer(cond_config(tmp_path, max_steps=2, p_uncond=1.0, mask_ablation_p=1.0),
                      **data())
    loss = trainer.pipeline.loss

    def spy(x0, **kw):
        if torch.is_grad_enabled():  # a training step (validation runs under no_grad)
            seen.append(kw["condition"])
        return loss(x0, **kw)

    monkeypatch.setattr(trainer.pipeline, "loss", spy)
    trainer.fit()
    assert len(seen) == 2
    for cond in seen:
        assert not cond.present("mask").any()
        assert not cond.present("slice").any()
        assert int(cond.mask.max()) == 0  # every tissue class ablated
    # validation sees the complete conditions of the fixed validate slices
    assert trainer.val_cond.mask_present is None
    assert torch.equal(trainer.val_cond.slice_index, CondBlobs(16, 1).slices)


def test_oasis_masks_flip_with_their_slices_and_indices_come_from_file_names(tmp_path,
                                                                            monkeypatch):
    from conftest import write_fake_split

    root = tmp_path / "data"
    write_fake_split(root, "train", {1: 6, 2: 6}, size=SIZE)
    write_fake_split(root, "validate", {402: 4}, size=SIZE)
    write_fake_split(root, "test", {441: 4}, size=SIZE)
    batches = []
    compute = Trainer.compute_loss

    def spy(self, x0, *extra):
        batches.append((x0.cpu(), *extra))
        return compute(self, x0, *extra)

    monkeypatch.setattr(Trainer, "compute_loss", spy)
    cfg = cond_config(tmp_path / "run", data_root=str(root), max_steps=4, mask_ablation_p=0.0)
    Trainer(cfg).fit()
    flipped = 0
    for x0, mask, slices in batches:
        pixels = ((x0[:, 0] + 1) * 127.5).round().long()
        assert torch.equal(pixels[:, 1:], 10 + 30 * mask[:, 1:])  # image and mask agree
        is_flipped = pixels[:, 0, -5] == 255  # row 0 starts (case, case, slice, 0, 255)
        flipped += int(is_flipped.sum())
        coded = torch.where(is_flipped, pixels[:, 0, -3], pixels[:, 0, 2])
        assert torch.equal(coded, slices)
    assert 0 < flipped < 8 * len(batches)


@pytest.fixture(scope="module")
def latent_setup(tmp_path_factory):
    from conftest import write_fake_split

    from oasis_lib.config import AutoencoderTrainConfig
    from oasis_lib.training.autoencoder import train_autoencoder

    root = tmp_path_factory.mktemp("oasis")
    write_fake_split(root, "train", {1: 6, 2: 6}, size=32)
    write_fake_split(root, "validate", {402: 4}, size=32)
    write_fake_split(root, "test", {441: 2}, size=32)
    out = tmp_path_factory.mktemp("ae")
    cfg = AutoencoderTrainConfig.from_preset("tiny", data_root=str(root), out_dir=str(out),
                                             max_steps=2, progress=False, val_size=4)
    train_autoencoder(cfg)
    return root, out / "last.pt"


def test_latent_conditional_run_keeps_pixel_masks_next_to_cached_latents(latent_setup,
                                                                         tmp_path):
    root, ae = latent_setup
    cfg = TrainConfig.from_preset(
        "tiny", data_root=str(root), image_size=32, autoencoder=str(ae), condition="mask",
        latent_cache_dir=str(tmp_path / "cache"), out_dir=str(tmp_path / "run"), progress=False,
        val_size=4, sample_n=2, sample_steps=2, epochs=10, max_steps=2)
    trainer = Trainer(cfg)
    assert isinstance(trainer.train_set, TensorDataset)
    assert trainer.train_set.names == ("image", "mask")  # the run's fields, by name
    latents, masks = trainer.train_set.tensors
    assert latents.shape[-2:] == (8, 8)
    assert masks.shape == (len(latents), 32, 32)
    item = trainer.train_set[0]
    assert torch.equal(item["image"], latents[0])
    assert torch.equal(item["mask"], masks[0])
    trainer.fit()
    again = Trainer(cfg.__class__.from_dict({**cfg.to_dict(), "max_steps": 3}), resume=True)
    assert torch.equal(again.train_set.column("mask"), masks)  # the same masks on resume
    images = trainer.pipeline.sample(2, steps=2, progress=False,
                                     condition=Condition(mask=masks[:2].long()))
    assert images.shape == (2, 1, 32, 32)


def test_config_refuses_an_inconsistent_condition():
    with pytest.raises(ValueError, match=r"unknown condition 'tissue'; choose one of"):
        TrainConfig(condition="tissue").validate()
    with pytest.raises(ValueError, match="p_uncond must be a probability"):
        TrainConfig(condition="mask", p_uncond=1.5).validate()
    with pytest.raises(ValueError, match="needs arch 'unet'"):
        TrainConfig(condition="mask", arch="simple").validate()
    with pytest.raises(ValueError, match="does not fit condition"):
        TrainConfig(condition="slice", unet_overrides={"mask_encoding": "onehot"}).validate()
    from oasis_lib.config import TRAIN_PRESETS

    assert all(p.condition == "none" for p in TRAIN_PRESETS.values())


def test_a_run_saved_before_the_condition_fields_resumes(tmp_path):
    """Checkpoints written before issue 12 have no condition fields: they take the defaults."""
    from synthetic import BlobSlices

    from oasis_lib.checkpoint import atomic_save, load_checkpoint

    plain = {"train_set": BlobSlices(40, SIZE, seed=0), "val_set": BlobSlices(16, SIZE, seed=1)}
    defaults = dict(condition="none", p_uncond=0.1, mask_ablation_p=0.1)
    Trainer(cond_config(tmp_path, max_steps=4, **defaults), **plain).fit()
    ckpt = load_checkpoint(tmp_path / "last.pt")
    for key in ("condition", "p_uncond", "condition_dropout", "mask_ablation_p"):
        del ckpt["config"][key]
    atomic_save(ckpt, tmp_path / "last.pt")
    resumed = Trainer(cond_config(tmp_path, max_steps=6, **defaults), resume=True, **plain)
    assert resumed.cfg.condition == "none"
    assert resumed.fit().step == 6
