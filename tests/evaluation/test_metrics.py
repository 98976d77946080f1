"""Metric functions against closed forms, scipy references and planted copies."""

import math
import socket
import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
import torch.nn.functional as F

from oasis_lib.evaluation import metrics as M


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# --------------------------------------------------------------------------- Fréchet
def test_frechet_of_identical_sets_is_zero(rng):
    a = rng.normal(size=(300, 16))
    assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_from_stats_matches_the_diagonal_closed_form(rng):
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    v1, v2 = rng.uniform(0.1, 3, size=5), rng.uniform(0.1, 3, size=5)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    got = M.frechet_from_stats(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(expected, rel=1e-12)


def test_frechet_matches_scipy_sqrtm_for_full_covariances(rng):
    a = rng.normal(size=(400, 12))
    b = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) * 0.5 + 1.0
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = (((a.mean(0) - b.mean(0)) ** 2).sum()
           + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real))
    assert M.frechet_distance(a, b) == pytest.approx(ref, rel=1e-9)


def test_frechet_of_large_gaussian_samples_approaches_the_closed_form(rng):
    a = rng.normal(0.0, 1.0, size=(20000, 3))
    b = rng.normal(0.5, 2.0, size=(20000, 3))
    assert M.frechet_distance(a, b) == pytest.approx(3 * 0.25 + 3 * 1.0, rel=0.03)


def test_frechet_handles_rank_deficient_covariances(rng):
    a, b = rng.normal(size=(10, 50)), rng.normal(size=(10, 50))  # N < D: singular covariances
    d = M.frechet_distance(a, b)
    assert np.isfinite(d)
    assert d > 0


def test_frechet_rejects_bad_shapes():
    with pytest.raises(ValueError, match="N >= 2"):
        M.frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="inconsistent shapes"):
        M.frechet_from_stats(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


# --------------------------------------------------------------------------- KID
def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shift(rng):
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    same, same_std = M.kernel_inception_distance(a, b, subsets=20, subset_size=200)
    shifted, _ = M.kernel_inception_distance(a, b + 0.5, subsets=20, subset_size=200)
    assert abs(same) < 3 * same_std + 1e-3
    assert shifted > 0.05
    assert shifted > 20 * abs(same)


def test_mmd2_unbiased_matches_a_direct_double_loop(rng):
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(5, 3)) + 0.3
    k = lambda u, v: (u @ v / 3 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
    xy = sum(k(x[i], y[j]) for i in range(6) for j in range(5)) / 30
    assert M.mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


# --------------------------------------------------------------------------- subsampling, floor
def test_subsample_range_of_a_mean_matches_the_finite_population_closed_form(rng):
    """Half-samples of n rows drawn without replacement: the subset mean has variance
    s^2 / k * (n - k) / (n - 1) (s^2 the pool variance, ddof 0), and at k = n/2 that is
    s^2 / (n - 1), the variance of the full-size mean (Shao & Wu 1989)."""
    n = 400
    a, b = rng.gamma(2.0, size=n), rng.normal(size=7)
    lo, hi = M.subsample_range(lambda x, y: float(x.mean() - y.mean()), a, b, n_subsets=4000,
                               seed=3)
    sd = math.sqrt(a.var() / (n // 2) * (n - n // 2) / (n - 1))
    centre = a.mean() - b.mean()
    assert (lo + hi) / 2 == pytest.approx(centre, abs=0.15 * sd)
    assert hi - lo == pytest.approx(2 * 1.95996 * sd, rel=0.08)


def test_subsample_range_never_repeats_a_row_and_keeps_b_whole(rng):
    a, b = np.arange(30.0)[:, None], rng.normal(size=(11, 2))
    seen = []

    def probe(x, y):
        seen.append((len(x), len(np.unique(x)), len(y)))
        return 0.0

    M.subsample_range(probe, a, b, size=12, n_subsets=20)
    assert set(seen) == {(12, 12, 11)}
    # the full size leaves nothing to vary: the range collapses to the value
    lo, hi = M.subsample_range(lambda x, y: float(x.sum()), a, b, size=30, n_subsets=5)
    assert lo == hi == a.sum()


def test_subsample_range_of_the_frechet_distance_sits_above_the_full_size_value(rng):
    """What the docstring warns: the Fréchet estimate's bias grows as the set shrinks, so the
    half-size range is no confidence interval around the full-size value."""
    a, b = rng.normal(size=(40, 8)), rng.normal(size=(2000, 8))
    lo, _ = M.subsample_range(M.frechet_distance, a, b, n_subsets=50)
    assert lo > M.frechet_distance(a, b)


def test_subsample_range_rejects_bad_options(rng):
    a = rng.normal(size=10)
    with pytest.raises(ValueError, match="level"):
        M.subsample_range(lambda x, y: 0.0, a, a, level=1.5)
    with pytest.raises(ValueError, match="n_subsets"):
        M.subsample_range(lambda x, y: 0.0, a, a, n_subsets=1)
    with pytest.raises(ValueError, match=r"size must be in \[2, 10\]"):
        M.subsample_range(lambda x, y: 0.0, a, a, size=11)


def test_real_vs_real_floor_subsamples_to_the_requested_size(rng):
    a, b = rng.normal(size=(100, 2)), rng.normal(size=(50, 2))
    assert M.real_vs_real_floor(lambda x, y: len(x), a, b, size=30) == 30
    assert M.real_vs_real_floor(lambda x, y: len(x), a, b) == 100
    with pytest.raises(ValueError, match="exceeds"):
        M.real_vs_real_floor(lambda x, y: 0, a, b, size=101)


# --------------------------------------------------------------------------- SSIM
def test_ssim_of_an_image_with_itself_is_one():
    x = torch.rand(3, 1, 24, 24) * 2 - 1
    assert torch.allclose(M.ssim(x, x), torch.ones(3, dtype=torch.float64))


def test_ssim_decreases_with_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 32, 32, generator=g) * 2 - 1
    noise = torch.randn(x.shape, generator=g)
    values = [float(M.ssim(x, x + s * noise).mean()) for s in (0.05, 0.2, 0.5, 1.0)]
    assert values == sorted(values, reverse=True)
    assert values[0] < 1


def test_ssim_of_constant_images_is_the_luminance_term():
    # sigma = 0 everywhere, so SSIM = (2 a b + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * 2)^2
    a, b, c1 = 0.2, -0.5, 0.02**2
    x, y = torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b)
    assert float(M.ssim(x, y)) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-6)


def test_gaussian_filter_matches_conv2d():
    from oasis_lib.evaluation import ssim as S

    g = S._gaussian_window(11, 1.5)
    assert float(g.sum()) == pytest.approx(1.0)
    x = torch.rand(2, 1, 20, 17, dtype=torch.float64)
    ref = F.conv2d(F.conv2d(x, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))
    assert torch.allclose(S._blur(x, g), ref, atol=1e-12)


def test_pairwise_ssim_is_one_for_copies_and_lower_for_noise():
    x = torch.rand(1, 1, 16, 16) * 2 - 1
    assert M.pairwise_ssim(x.repeat(5, 1, 1, 1)) == pytest.approx(1.0)
    noise = torch.rand(20, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    full = M.pairwise_ssim(noise, max_pairs=None)
    assert full < 0.2
    assert M.pairwise_ssim(noise, max_pairs=50, seed=3) == pytest.approx(full, abs=0.05)


def test_ssim_rejects_images_smaller_than_the_window():
    with pytest.raises(ValueError, match="smaller than"):
        M.ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))


# --------------------------------------------------------------------------- memorisation
def test_nearest_neighbour_finds_an_inserted_copy():
    g = torch.Generator().manual_seed(0)
    train = torch.rand(50, 1, 8, 8, generator=g) * 2 - 1
    queries = torch.rand(6, 1, 8, 8, generator=g) * 2 - 1
    queries[4] = train[17]
    dist, idx = M.nearest_neighbours(queries, train, metric="l2", batch=7)
    assert int(idx[4]) == 17
    assert float(dist[4]) == pytest.approx(0.0, abs=1e-6)
    brute = torch.cdist(queries.flatten(1).double(), train.flatten(1).double())
    assert torch.allclose(dist, brute.min(1).values, atol=1e-9)
    rms, _ = M.nearest_neighbours(queries, train, metric="rms")
    assert torch.allclose(rms, dist / 8.0)
    cos, cidx = M.nearest_neighbours(queries, train, metric="cosine")
    assert int(cidx[4]) == 17
    assert float(cos[4]) == pytest.approx(0.0, abs=1e-9)


def test_nearest_neighbour_rejects_unknown_metric():
    with pytest.raises(ValueError, match=r"unknown metric 'l3'; choose one of \('l2'"):
        M.nearest_neighbours(torch.zeros(2, 3), torch.zeros(2, 3), metric="l3")


def test_memorization_report_flags_a_copy_and_clears_honest_samples(rng):
    val = rng.uniform(0.2, 0.4, size=100)
    honest = M.memorization_report(rng.uniform(0.2, 0.4, size=200), val)
    assert not honest["copies_training_data"]
    assert honest["verdict"].startswith("no sign of copying")
    samples = rng.uniform(0.2, 0.4, size=200)
    samples[3] = 0.0
    flagged = M.memorization_report(samples, val)
    assert flagged["copies_training_data"]
    assert flagged["exact_copies"] == 1
    assert flagged["verdict"].startswith("COPIES training data")
    close = M.memorization_report(np.full(50, 0.1), val)  # all nearer than any held-out slice
    assert close["copies_training_data"]
    assert close["near_copy_fraction"] == 1.0


# --------------------------------------------------------------------------- distributions
def test_wasserstein_of_a_shift_equals_the_shift(rng):
    a = rng.normal(size=500)
    assert M.wasserstein_1d(a, a + 0.7) == pytest.approx(0.7, rel=1e-12)
    b = rng.exponential(size=321)
    assert M.wasserstein_1d(a, b) == pytest.approx(scipy.stats.wasserstein_distance(a, b))


def test_tissue_fraction_distance_per_class_and_mean(rng):
    a = rng.dirichlet([2, 5, 3], size=200)
    d = M.tissue_fraction_distance(a, a + np.array([0.01, 0.0, -0.01]))
    assert d["csf"] == pytest.approx(0.01)
    assert d["grey_matter"] == pytest.approx(0.0)
    assert d["mean"] == pytest.approx(0.02 / 3)
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        M.tissue_fraction_distance(a[:, :2], a)


def test_brain_intensities_uses_the_mask_or_a_threshold():
    x = torch.full((1, 1, 4, 4), -1.0)
    x[0, 0, 1:3, 1:3] = 0.5
    assert M.brain_intensities(x).tolist() == [0.5] * 4
    mask = torch.zeros(1, 4, 4, dtype=torch.long)
    mask[0, 0, 0] = 2
    assert M.brain_intensities(x, mask).tolist() == [-1.0]


# --------------------------------------------------------------------------- Inception FID
def test_inception_fid_without_weights_returns_none_offline(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise AssertionError("inception_fid tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    x = torch.zeros(2, 1, 16, 16)
    with pytest.warns(UserWarning, match="no weights file given"):
        assert M.inception_fid(x, x) is None
    with pytest.warns(UserWarning, match="not found"):
        assert M.inception_fid(x, x, tmp_path / "missing.pth") is None


class TinyInception(torch.nn.Module):
    """Stands in for torchvision's inception_v3 (same constructor and ``fc``), fast."""

    def __init__(self, weights=None, aux_logits=True, init_weights=False):
        super().__init__()
        assert weights is None
        self.conv = torch.nn.Conv2d(3, 4, 5, stride=4)
        self.fc = torch.nn.Linear(4, 10)
        self.seen: list[tuple] = []

    def forward(self, x):
        self.seen.append(tuple(x.shape))
        return self.fc(self.conv(x).mean((2, 3)))


def test_inception_fid_with_a_local_weights_file(tmp_path, monkeypatch):
    import torchvision.models

    monkeypatch.setattr(torchvision.models, "inception_v3", TinyInception)
    torch.manual_seed(0)
    path = tmp_path / "inception.pth"
    torch.save(TinyInception().state_dict(), path)
    net = M.load_inception(path)
    assert isinstance(net.fc, torch.nn.Identity)
    assert not net.training
    g = torch.Generator().manual_seed(0)
    real = torch.rand(5, 1, 32, 32, generator=g) * 2 - 1
    feats = M.inception_features(net, real, batch=2)
    assert feats.shape == (5, 4)
    assert net.seen[0] == (2, 3, 299, 299)  # grey repeated to 3 channels, resized to 299
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert M.inception_fid(real, real, path) == pytest.approx(0.0, abs=1e-6)
        assert M.inception_fid(real, -real, path) > 0
