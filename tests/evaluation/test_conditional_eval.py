"""Conditional evaluation: conditions reach the sampler, the validate conditions are spread and
seeded, the report records them with mask and slice faithfulness, and misuse fails clearly."""

from __future__ import annotations

import pytest
import torch

from oasis_lib.config import TrainConfig
from oasis_lib.data import load_split
from oasis_lib.evaluation import report as E
from oasis_lib.evaluation.conditions import spread_indices, validate_conditions
from oasis_lib.evaluation.faithfulness import mask_faithfulness
from oasis_lib.evaluation.segmenter import TissueSegmenter
from oasis_lib.evaluation.slice_level import SliceRegressor, slice_faithfulness
from oasis_lib.models.conditioning import Condition
from oasis_lib.models.factory import build_pipeline
from oasis_lib.seeding import cpu_generator

SIZE, T = 16, 20


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    """Fake OASIS folders of 16x16 slices: 16 train+test slices, 8 validate slices."""
    from conftest import write_fake_split

    root = tmp_path_factory.mktemp("cond_eval_data")
    write_fake_split(root, "train", {1: 6, 2: 6}, size=SIZE)
    write_fake_split(root, "validate", {402: 4, 403: 4}, size=SIZE)
    write_fake_split(root, "test", {441: 4}, size=SIZE)
    return root


def pipeline(condition="mask+slice"):
    cfg = TrainConfig.from_preset("tiny", image_size=SIZE, condition=condition,
                                  diffusion={"timesteps": T, "prediction_type": "v"})
    pipe = build_pipeline(cfg, warn=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # an untrained net ignores its condition: make it matter
        for p in pipe.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return pipe.eval()


def some_condition(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Condition(mask=torch.randint(0, 4, (n, SIZE, SIZE), generator=g),
                     slice_index=torch.randint(0, 32, (n,), generator=g))


def test_spread_indices_take_one_slice_per_stratum_fixed_by_the_seed():
    idx = spread_indices(4, 10, seed=3)
    assert torch.equal(idx, spread_indices(4, 10, seed=3))
    # i = floor(x) with x in [10 k / 4, 10 (k + 1) / 4): one slice in each quarter
    assert all(10 * k // 4 <= i < 10 * (k + 1) / 4 for k, i in enumerate(idx.tolist()))
    assert len(set(idx.tolist())) == 4
    assert torch.equal(spread_indices(10, 10, seed=1), torch.arange(10))  # n = V: all of them
    assert not all(torch.equal(spread_indices(4, 100, seed=s), idx) for s in range(3))
    with pytest.raises(ValueError, match=r"n=11 is larger than the validate split \(10 slices\)"):
        spread_indices(11, 10, seed=0)


def test_validate_conditions_are_the_validate_slices_masks_and_levels(fake_data):
    chosen = validate_conditions(4, image_size=SIZE, data_root=fake_data, seed=0)
    val = load_split("validate", fake_data, SIZE, with_masks=True, augment=False)
    for k, i in enumerate(chosen.indices.tolist()):
        image, mask = val[i]
        assert torch.equal(chosen.images[k], image)
        assert torch.equal(chosen.masks[k], mask)
        assert chosen.slice_index[k] == val.items[i][1]
    assert chosen.condition("mask").slice_index is None
    assert chosen.condition("slice").mask is None


def test_conditions_reach_the_sampler_batch_by_batch():
    pipe = pipeline()
    cond = some_condition(4)
    kw = dict(sampler="ddim", steps=3, guidance_scale=2.0)
    ours, _ = E.generate_samples(pipe, 4, seed=5, batch_size=2, progress=False,
                                 condition=cond, **kw)
    g = cpu_generator(5)
    by_hand = torch.cat([pipe.sample(2, generator=g, progress=False,
                                     condition=cond.select(slice(k, k + 2)), **kw)
                         for k in (0, 2)])
    assert torch.equal(ours, by_hand)
    other, _ = E.generate_samples(pipe, 4, seed=5, batch_size=2, progress=False,
                                  condition=some_condition(4, seed=1), **kw)
    assert not torch.allclose(ours, other)  # the condition changes the samples
    uncond, _ = E.generate_samples(pipe, 4, seed=5, batch_size=2, progress=False,
                                   condition=cond, sampler="ddim", steps=3, guidance_scale=0.0)
    assert not torch.allclose(ours, uncond)


def test_validate_condition_is_the_seeded_validate_slices(fake_data):
    pipe = pipeline()
    chosen = validate_conditions(3, image_size=SIZE, data_root=fake_data, seed=2)
    a, _ = E.generate_samples(pipe, 3, steps=2, seed=2, progress=False, condition="validate",
                              data_root=fake_data)
    b, _ = E.generate_samples(pipe, 3, steps=2, seed=2, progress=False,
                              condition=chosen.condition("mask+slice"))
    assert torch.equal(a, b)


def test_evaluate_records_the_condition_and_scores_it_against_floors(fake_data, tmp_path):
    pipe = pipeline()
    torch.manual_seed(0)
    seg = TissueSegmenter(channels=(8, 16), image_size=SIZE).eval()
    reg = SliceRegressor(channels=(4,), image_size=SIZE).eval()
    report = E.evaluate(pipe, n=4, steps=2, seed=1, out=tmp_path / "ev", data_root=fake_data,
                        segmenter=seg, device="cpu", progress=False, n_subsets=5,
                        condition="validate", guidance_scale=2.0, slice_regressor=reg)
    meta, m = report["meta"], report["metrics"]
    assert meta["condition"] == "validate"
    assert meta["model_condition"] == "mask+slice"
    assert meta["guidance_scale"] == 2.0
    chosen = validate_conditions(4, image_size=SIZE, data_root=fake_data, seed=1)
    assert meta["validate_indices"] == chosen.indices.tolist()
    f = mask_faithfulness(report.samples, chosen.masks, seg, real_images=chosen.images,
                          real_masks=chosen.masks)
    assert m["mask_dice"]["value"] == f["generated"]["mean"]
    assert m["mask_dice"]["floor"] == f["real"]["mean"]
    s = slice_faithfulness(report.samples, chosen.slice_index, reg, real_images=chosen.images,
                           real_slice_index=chosen.slice_index)
    assert (m["slice_mae"]["value"], m["slice_mae"]["floor"]) == (s["generated"], s["real"])
    assert "frechet_segmenter" in m
    assert (tmp_path / "ev" / "report.json").is_file()


def test_misuse_fails_with_a_clear_error(fake_data):
    pipe = pipeline()
    with pytest.raises(ValueError, match=r"n=9 is larger than the validate split \(8 slices\)"):
        E.generate_samples(pipe, 9, steps=2, progress=False, condition="validate",
                           data_root=fake_data)
    plain = pipeline(condition="none")
    with pytest.raises(ValueError, match="needs a conditional model; this one is unconditional"):
        E.generate_samples(plain, 2, steps=2, progress=False, condition="validate",
                           data_root=fake_data)
    with pytest.raises(ValueError, match="this model is unconditional"):
        E.generate_samples(plain, 2, steps=2, progress=False, condition=some_condition(2))
    with pytest.raises(ValueError, match=r"unknown condition 'train'; choose one of"):
        E.generate_samples(pipe, 2, steps=2, progress=False, condition="train")
    with pytest.raises(ValueError, match="pass condition=Condition"):
        E.generate_samples(pipe, 2, steps=2, progress=False)  # conditional without a condition
