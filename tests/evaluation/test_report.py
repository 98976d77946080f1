"""End-to-end evaluation with an untrained tiny diffusion model and segmenter on fake slices."""

import json

import numpy as np
import pytest
import torch

from oasis_lib.checkpoint import export_safetensors
from oasis_lib.cli import build_parser, main
from oasis_lib.config import TrainConfig
from oasis_lib.evaluation import report as E
from oasis_lib.evaluation.segmenter import SEGMENTER_KIND, TissueSegmenter
from oasis_lib.models.factory import build_model

SIZE = 32
METRICS = ("segmenter_dice", "frechet_segmenter", "kid_segmenter", "tissue_fractions",
           "intensity_histogram", "diversity_ssim", "memorization_pixel",
           "memorization_features", "inception_fid")
ENTRY_KEYS = {"value", "floor", "subsample_range", "subsample_size", "direction", "explanation"}


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    """Fake OASIS folders of 32x32 slices: 16 train+test slices, 8 validate slices."""
    from conftest import write_fake_split

    root = tmp_path_factory.mktemp("eval_data")
    write_fake_split(root, "train", {1: 6, 2: 6}, size=SIZE)
    write_fake_split(root, "validate", {402: 4, 403: 4}, size=SIZE)
    write_fake_split(root, "test", {441: 4}, size=SIZE)
    return root


def _export_tiny(tmp_path_factory, **overrides):
    torch.manual_seed(0)
    cfg = TrainConfig.from_preset("tiny", **overrides)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return export_safetensors(build_model(cfg).state_dict(), path, config=cfg.to_dict(),
                              dtype=torch.float32)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained ``tiny`` U-Net at 32x32 (trained on train only), exported like a shared
    checkpoint."""
    return _export_tiny(tmp_path_factory)


@pytest.fixture(scope="module")
def tiny_model_train_test(tmp_path_factory):
    """The same, with ``train_splits=("train", "test")`` in its config (the seed's choice)."""
    return _export_tiny(tmp_path_factory, train_splits=("train", "test"))


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    return TissueSegmenter(channels=(8, 16), image_size=SIZE).eval()


@pytest.fixture(scope="module")
def segmenter_file(segmenter, tmp_path_factory):
    path = tmp_path_factory.mktemp("seg") / "seg.safetensors"
    meta = {"kind": SEGMENTER_KIND, "segmenter": segmenter.config.to_dict()}
    return export_safetensors(segmenter.state_dict(), path, config=meta, dtype=torch.float32)


def test_evaluate_writes_the_report_and_figures(fake_data, tiny_model, segmenter, tmp_path):
    out = tmp_path / "eval"
    report = E.evaluate(tiny_model, n=6, steps=2, seed=0, out=out, data_root=fake_data,
                        segmenter=segmenter, batch_size=4, device="cpu", progress=False,
                        n_subsets=5)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report.to_dict()))
    # The report keeps the arrays behind its numbers (notebooks draw from them).
    assert report.samples.shape == (6, 1, SIZE, SIZE)
    assert report.sample_masks.shape == (6, SIZE, SIZE)
    assert report.fractions["samples"].shape == (6, 3)
    nn = report.nearest_neighbours("pixel")
    assert len(nn["distance"]) == 6
    assert len(nn["references"]) == 2 * 12  # the train slices and their mirror images
    assert float(nn["distance"].min()) == pytest.approx(
        report["metrics"]["memorization_pixel"]["sample_min"], rel=1e-5)
    assert tuple(on_disk["metrics"]) == METRICS
    for name, entry in on_disk["metrics"].items():
        assert ENTRY_KEYS <= set(entry), name
        assert not any(k.startswith("_") for k in entry), name
    m, meta = on_disk["metrics"], on_disk["meta"]
    assert meta["n"] == 6
    # the tiny preset trains on the train split only, so test is the held-out reference
    assert (meta["train_splits"], meta["held_out"]) == (["train"], "test")
    assert meta["n_train"] == 12
    assert meta["n_held_out"] == 4
    assert meta["sampler"] == "ddim"
    assert meta["seconds_per_image"] > 0
    assert m["frechet_segmenter"]["n_compared"] == 6  # every sample, against the 4 test slices
    assert "vs all 4 test slices" in m["frechet_segmenter"]["explanation"]
    lo, hi = m["frechet_segmenter"]["subsample_range"]
    assert lo <= hi
    assert m["frechet_segmenter"]["subsample_size"] == 3  # half of the 6 compared samples
    assert m["intensity_histogram"]["subsample_range"] is None
    assert set(m["segmenter_dice"]["per_class"]) == {"background", "csf", "grey_matter",
                                                     "white_matter"}
    assert m["inception_fid"]["value"] is None
    assert "skipped" in m["inception_fid"]["explanation"]
    assert m["memorization_pixel"]["copies_training_data"] is False  # noise is no copy
    for fig in E.FIGURES:
        assert (out / fig).stat().st_size > 0
    assert "memorization (pixel):" in E.format_report(report)
    assert "held out: test (never used for training" in E.format_report(report)


def test_a_checkpoint_trained_on_train_and_test_is_scored_against_validate(
        fake_data, tiny_model_train_test, segmenter):
    """The reference follows the checkpoint's own train_splits: with test trained on, the
    held-out split is validate, and the report says that no split is untouched."""
    report = E.evaluate(tiny_model_train_test, n=4, steps=2, out=None, data_root=fake_data,
                        segmenter=segmenter, batch_size=4, device="cpu", progress=False,
                        n_subsets=5)
    meta = report["meta"]
    assert (meta["train_splits"], meta["held_out"]) == (["train", "test"], "validate")
    assert (meta["n_train"], meta["n_held_out"]) == (16, 8)
    assert report.reference.held_out_split == "validate"
    assert set(report.fractions) == {"samples", "train", "validate"}
    assert "no split is untouched" in E.format_report(report)


def test_evaluate_samples_needs_the_models_train_splits(fake_data, segmenter):
    with pytest.raises(TypeError, match="train_splits"):
        E.evaluate_samples(torch.zeros(4, 1, SIZE, SIZE), data_root=fake_data,
                           segmenter=segmenter)


def test_the_floor_is_the_metric_of_as_many_train_slices(fake_data, segmenter):
    """Samples that are the floor's own train slices (the same seeded subset) score exactly
    the floor of every two-set metric: both are computed against the held-out slices."""
    ref = E.real_reference(segmenter, SIZE, data_root=fake_data, train_splits=("train",))
    n, seed = 6, 3
    pick = np.sort(np.random.default_rng(seed).choice(len(ref.train), n, replace=False))
    report = E.evaluate_samples(ref.train[pick].clone(), data_root=fake_data,
                                segmenter=segmenter, n_subsets=5, seed=seed,
                                train_splits=("train",))
    m = report["metrics"]
    for name in ("frechet_segmenter", "kid_segmenter", "tissue_fractions",
                 "intensity_histogram"):
        assert m[name]["value"] == pytest.approx(m[name]["floor"], rel=1e-6, abs=1e-9), name
    assert report.fractions["test"].shape == (4, 3)  # keyed by the held-out split's name


def test_the_diversity_floor_is_the_held_out_slices(fake_data, segmenter):
    """Diversity has no second set: its floor is the pairwise SSIM of as many held-out slices
    (all 4 test slices here), so the held-out slices themselves score their floor."""
    ref = E.real_reference(segmenter, SIZE, data_root=fake_data, train_splits=("train",))
    report = E.evaluate_samples(ref.held_out.clone(), data_root=fake_data, segmenter=segmenter,
                                n_subsets=5, train_splits=("train",))
    div = report["metrics"]["diversity_ssim"]
    assert div["value"] == pytest.approx(div["floor"], rel=1e-6)
    assert "4 test slices" in div["explanation"]


def _blur(images):
    k = torch.full((1, 1, 3, 3), 1 / 9)
    return torch.nn.functional.conv2d(torch.nn.functional.pad(images, (1,) * 4, "replicate"), k)


def test_the_texture_metrics_score_train_slices_at_their_floor_and_blur_below_it(
        fake_data, segmenter):
    """Unpaired texture ratios (sample / median held-out slice): the floor's own train slices
    score the floor exactly; blurring them lowers both ratios; the entries reach the JSON."""
    ref = E.real_reference(segmenter, SIZE, data_root=fake_data, train_splits=("train",))
    n, seed = 6, 3
    pick = np.sort(np.random.default_rng(seed).choice(len(ref.train), n, replace=False))
    kw = {"data_root": fake_data, "segmenter": segmenter, "n_subsets": 5, "seed": seed,
          "train_splits": ("train",), "texture": True}
    same = E.evaluate_samples(ref.train[pick].clone(), **kw)["metrics"]
    blurred = E.evaluate_samples(_blur(ref.train[pick]), **kw)["metrics"]
    for name in ("texture_laplacian", "texture_hf_share"):
        assert ENTRY_KEYS <= set(same[name])
        assert same[name]["value"] == pytest.approx(same[name]["floor"], rel=1e-9), name
        assert same[name]["floor"] == pytest.approx(1.0, abs=0.05), name  # alike fake slices
        assert blurred[name]["value"] < 0.9 * blurred[name]["floor"], name
        assert blurred[name]["worst"] <= blurred[name]["value"], name
    assert "test slices" in same["texture_laplacian"]["explanation"]
    assert same["texture_laplacian"]["held_out_median"] > 0


def test_the_texture_metrics_are_on_from_128_pixels(fake_data, segmenter, monkeypatch, capsys):
    """``texture=None`` adds them for S >= TEXTURE_MIN_SIZE (latent models' 256x256); the
    printed report lists them like the other metrics."""
    kw = {"data_root": fake_data, "segmenter": segmenter, "n_subsets": 5,
          "train_splits": ("train",)}
    ref = E.real_reference(segmenter, SIZE, data_root=fake_data, train_splits=("train",))
    samples = ref.held_out.clone()
    assert "texture_laplacian" not in E.evaluate_samples(samples, **kw)["metrics"]  # 32 < 128
    monkeypatch.setattr(E, "TEXTURE_MIN_SIZE", SIZE)
    report = E.evaluate_samples(samples, **kw)
    assert tuple(report["metrics"])[-3:] == ("texture_laplacian", "texture_hf_share",
                                             "inception_fid")
    assert "texture_hf_share" in E.format_report(report)
    assert "texture_laplacian" in report.table()
    assert "texture_laplacian" not in E.evaluate_samples(samples, texture=False, **kw)["metrics"]


def test_evaluate_samples_flags_copied_training_slices(fake_data, segmenter):
    ref = E.real_reference(segmenter, SIZE, data_root=fake_data, train_splits=("train",))
    copies = ref.train[:5].clone()
    report = E.evaluate_samples(copies, data_root=fake_data, segmenter=segmenter, n_subsets=5,
                                train_splits=("train",))
    assert report["meta"]["held_out"] == "test"
    assert E.real_reference(segmenter, SIZE, data_root=fake_data,
                            train_splits=("train",)) is ref  # cached
    mem = report["metrics"]["memorization_pixel"]
    assert mem["copies_training_data"]
    assert mem["exact_copies"] == 5
    assert report["verdict"].startswith("pixels: COPIES")


def test_evaluate_samples_rejects_bad_shapes(segmenter):
    with pytest.raises(ValueError, match=r"\[n >= 2, 1, S, S\]"):
        E.evaluate_samples(torch.zeros(4, 3, SIZE, SIZE), segmenter=segmenter,
                           train_splits=("train",))


def test_evaluate_command_has_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["evaluate", "--help"])
    assert exit_info.value.code == 0
    assert "--inception-weights" in capsys.readouterr().out


def test_evaluate_cli_prints_the_table(fake_data, tiny_model, segmenter_file, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["evaluate", "--checkpoint", str(tiny_model), "--n", "4", "--steps", "2",
                 "--data", str(fake_data), "--segmenter", str(segmenter_file), "--out", str(out),
                 "--batch-size", "4", "--n-subsets", "5", "--device", "cpu", "--no-progress"]) == 0
    text = capsys.readouterr().out
    for name in ("metric", "frechet_segmenter", "memorization (features)", "report.json"):
        assert name in text
    assert json.loads((out / "report.json").read_text())["meta"]["n"] == 4


def test_metrics_table_rounds_and_lists_every_metric():
    report = {"metrics": {
        "frechet_segmenter": {"value": 0.350212, "floor": 0.29295,
                              "subsample_range": [0.3450, 0.56283], "subsample_size": 16,
                              "direction": "lower"},
        "inception_fid": {"value": None, "floor": None, "subsample_range": None,
                          "subsample_size": None, "direction": "lower"}}}
    lines = E.metrics_table(report).splitlines()
    assert lines[0].split()[:3] == ["metric", "value", "floor"]
    assert lines[1].split() == ["frechet_segmenter", "0.35", "0.293", "[0.345,", "0.563]",
                                "k=16", "lower"]
    assert lines[2].split() == ["inception_fid", "-", "-", "-", "lower"]


def test_metrics_table_keeps_a_negative_floor_apart_from_the_value():
    # an unbiased KID can come out below 0 (notebook 06: floor -1.48e-05 next to 0.00241)
    report = {"metrics": {"kid_segmenter": {
        "value": 0.0024121, "floor": -1.4812e-05, "subsample_range": [0.000253, 0.006641],
        "subsample_size": 16, "direction": "lower"}}}
    line = E.metrics_table(report).splitlines()[1]
    assert line.split() == ["kid_segmenter", "0.00241", "-1.48e-05", "[0.000253,", "0.00664]",
                            "k=16", "lower"]


def test_plot_segmentation_shows_slices_true_and_predicted_masks(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    images = torch.rand(3, 1, SIZE, SIZE) * 2 - 1
    masks = torch.randint(0, 4, (3, SIZE, SIZE))
    from oasis_lib.viz.evaluation import plot_segmentation

    fig = plot_segmentation(images, masks, masks, figsize=(6.0, 5.0))
    assert len(fig.axes) == 9
    assert tuple(fig.get_size_inches()) == (6.0, 5.0)
    assert fig.axes[0].get_title() == "Dice 1.00"  # identical masks
    path = tmp_path / "seg.png"
    plot_segmentation(images, masks, masks, save_to=path)
    assert path.stat().st_size > 0
