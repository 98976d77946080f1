"""The KID subsample range: half-subsets of the samples, each scored against all held-out rows."""

from types import SimpleNamespace

import numpy as np
import pytest

from oasis_lib.evaluation import metrics as M
from oasis_lib.evaluation import sample_metrics as S


def _reference(rng, n_held_out=40, n_train=100, dim=5):
    return SimpleNamespace(held_out_out={"features": rng.normal(size=(n_held_out, dim))},
                           train_out={"features": rng.normal(size=(n_train, dim))},
                           held_out_split="test")


def test_kid_subsample_range_scores_every_half_subset_against_all_held_out_rows(monkeypatch):
    """Every half-subset of the 20 samples meets all 40 held-out rows (not one fixed
    subset of them), and the subsets themselves differ."""
    rng = np.random.default_rng(0)
    ref, fs = _reference(rng), rng.normal(size=(20, 5))
    calls, mmd2 = [], M.mmd2_unbiased
    monkeypatch.setattr(M, "mmd2_unbiased", lambda x, y: calls.append((x, y)) or mmd2(x, y))
    S._feature_metrics(fs, ref, seed=0, n_subsets=30)
    fh = ref.held_out_out["features"]
    halves = [(x, y) for x, y in calls if len(x) == 10]
    assert len(halves) == 30
    assert all(np.array_equal(y, fh) for _, y in halves)
    assert len({x.tobytes() for x, _ in halves}) == 30


def test_kid_subsample_range_is_the_quantiles_of_half_subset_mmd2_and_brackets_the_value():
    """The range is the 2.5-97.5 % quantiles of the unbiased MMD^2 of random half-subsets
    against the whole held-out set; for a shifted sample set it brackets the KID value."""
    rng = np.random.default_rng(1)
    ref = _reference(rng, n_held_out=64)
    fs = rng.normal(size=(64, 5)) + 0.5
    kid = S._feature_metrics(fs, ref, seed=2, n_subsets=200)["kid_segmenter"]
    expected = M.subsample_range(M.mmd2_unbiased, fs, ref.held_out_out["features"], size=32,
                                 n_subsets=200, seed=2)
    assert kid["subsample_range"] == pytest.approx(expected)
    assert kid["subsample_size"] == 32
    lo, hi = kid["subsample_range"]
    assert 0 < lo < kid["value"] < hi
