"""Issue 24, data loss and silent wrong results: no output replaces an input of any command
(one guard, :mod:`oasis_lib.cli.guard`), ``evaluate`` checks every input before sampling and
keeps its samples when scoring fails, conditional flags with ``--guidance 0`` are refused, a
latent ``--init-from`` file at another image size is refused, and an inpainting region shrunk
to the model grid covers every cell the user painted.

``CASES`` is the table: an id, a function that prepares the case and returns the argv, the
exit code, regexes the one-line message must match; every file the case protects must keep its
bytes, and nothing may have been sampled (no ``s.png``, no ``samples.pt``)."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import perturbed_export

from oasis_lib.__main__ import main
from oasis_lib.checkpoint import export_safetensors
from oasis_lib.cli.conditional import read_region_png
from oasis_lib.data import image_dir
from oasis_lib.evaluation.segmenter import SEGMENTER_KIND, TissueSegmenter
from oasis_lib.evaluation.slice_level import SLICE_REGRESSOR_KIND, SliceRegressor

SIZE = 16


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Fake 16x16 OASIS folders, a mask+slice and an unconditional tiny model, a tiny
    segmenter and slice regressor, a mask, a slice and a region PNG."""
    from conftest import write_eval_root

    d = tmp_path_factory.mktemp("io")
    root = d / "data"
    write_eval_root(root, SIZE)
    torch.manual_seed(0)
    seg = TissueSegmenter(channels=(8, 16), image_size=SIZE).eval()
    reg = SliceRegressor(channels=(4,), image_size=SIZE).eval()
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48], mask[24:40, 24:40] = 170, 255
    Image.fromarray(mask).save(d / "mask.png")
    image = (np.random.default_rng(0).random((SIZE, SIZE)) * 255).astype(np.uint8)
    Image.fromarray(image).save(d / "image.png")
    region = np.zeros((SIZE, SIZE), np.uint8)
    region[4:10, 5:12] = 255
    Image.fromarray(region).save(d / "region.png")
    return {
        "dir": d, "root": root, "image": image,
        "seg": export_safetensors(seg.state_dict(), d / "seg.safetensors", dtype=torch.float32,
                                  config={"kind": SEGMENTER_KIND,
                                          "segmenter": seg.config.to_dict()}),
        "reg": export_safetensors(reg.state_dict(), d / "reg.safetensors", dtype=torch.float32,
                                  config={"kind": SLICE_REGRESSOR_KIND,
                                          "slice_regressor": reg.config.to_dict()}),
        "cond": perturbed_export(d / "cond.safetensors", "mask+slice"),
        "plain": perturbed_export(d / "plain.safetensors", "none")}


@dataclass
class Ctx:
    tmp: Path
    f: dict
    protected: dict = field(default_factory=dict)

    def copy(self, key: str, name: str | None = None) -> Path:
        """A private copy of a fixture file, protected (its bytes must not change)."""
        source = Path(self.f[key]) if key in self.f else self.f["dir"] / key
        path = self.tmp / (name or source.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, path)
        self.protected[path] = digest(path)
        return path

    def sample(self, *extra: str) -> list[str]:
        return ["sample", "--checkpoint", str(self.f["cond"]), "--steps", "2", "--n", "1",
                "--no-progress", *extra]

    def inpaint(self, *extra: str, out: Path | None = None) -> list[str]:
        return ["inpaint", "--checkpoint", str(self.f["plain"]), "--no-progress",
                "--out", str(out or self.tmp / "s.png"), *extra]

    def evaluate(self, *extra: str, model: str = "cond") -> list[str]:
        return ["evaluate", "--checkpoint", str(self.f[model]), "--n", "4", "--steps", "2",
                "--data", str(self.f["root"]), "--segmenter", str(self.f["seg"]),
                "--slice-regressor", str(self.f["reg"]), "--out", str(self.tmp / "ev"),
                "--batch-size", "4", "--n-subsets", "5", "--device", "cpu", "--no-progress",
                *extra]


# ------------------------------------------------------------------ case builders
def sample_over_mask(c: Ctx) -> list[str]:
    mask = c.copy("mask.png")
    return c.sample("--mask", str(mask), "--slice", "3", "--out", str(mask))


def sample_over_symlinked_mask(c: Ctx) -> list[str]:
    mask = c.copy("mask.png")
    (c.tmp / "link.png").symlink_to(mask)
    return c.sample("--mask", str(mask), "--slice", "3", "--out", str(c.tmp / "link.png"))


def sample_through_symlinked_folder(c: Ctx) -> list[str]:
    mask = c.copy("mask.png", "real/mask.png")
    (c.tmp / "alias").symlink_to(c.tmp / "real")
    return c.sample("--mask", str(mask), "--slice", "3", "--out", str(c.tmp / "alias/mask.png"))


def sample_individual_over_mask(c: Ctx) -> list[str]:
    mask = c.copy("mask.png", "grid/sample_000.png")
    return c.sample("--mask", str(mask), "--slice", "3", "--individual", "--out",
                    str(c.tmp / "grid.png"))


def inpaint_over(flag: str):
    def build(c: Ctx) -> list[str]:
        image, region = c.copy("image.png"), c.copy("region.png")
        target = {"--image": image, "--region": region}[flag]
        return c.inpaint("--image", str(image), "--region", str(region), out=target)
    return build


def evaluate_over_weights(c: Ctx) -> list[str]:
    weights = c.copy("seg", "ev/tissue_fractions.png")
    return c.evaluate("--inception-weights", str(weights), "--guidance", "0")


def segmenter_into_split(c: Ctx) -> list[str]:
    return ["train-segmenter", "--data", str(c.f["root"]), "--out",
            str(image_dir(c.f["root"], "train") / "seg.safetensors")]


def segmenter_over_existing(c: Ctx) -> list[str]:
    other = c.copy("reg", "models/other.safetensors")
    return ["train-segmenter", "--data", str(c.f["root"]), "--out", str(other)]


def evaluate_without_test_split(c: Ctx) -> list[str]:
    root = c.tmp / "partial"
    shutil.copytree(c.f["root"], root)
    shutil.rmtree(image_dir(root, "test"))
    argv = c.evaluate("--guidance", "0", model="plain")
    argv[argv.index("--guidance"):argv.index("--guidance") + 2] = []
    argv[argv.index("--data") + 1] = str(root)
    return argv


def train_init_from_latent_at_another_size(c: Ctx) -> list[str]:
    from oasis_lib.config import TrainConfig
    from oasis_lib.models.autoencoder import AutoencoderConfig, AutoencoderKL
    from oasis_lib.models.factory import build_pipeline

    cfg = TrainConfig.from_preset("tiny", image_size=32, latent_scale_factor=1.0)
    pipe = build_pipeline(cfg, autoencoder=AutoencoderKL(AutoencoderConfig.preset("tiny")),
                          warn=False)
    latent = pipe.save(c.tmp / "latent32.safetensors")
    c.protected[latent] = digest(latent)
    return ["train", "--data-root", str(c.f["root"]), "--preset", "tiny", "--image-size", "16",
            "--init-from", str(latent), "--max-steps", "1", "--out", str(c.tmp / "r0")]


CASES = [
    ("sample-out-is-mask", sample_over_mask, 2,
     [r"--out .*mask\.png is the input file itself \(--mask .*mask\.png\)"]),
    ("sample-out-symlink-to-mask", sample_over_symlinked_mask, 2,
     [r"--out .*link\.png is the input file itself \(--mask .*mask\.png\)"]),
    ("sample-out-via-symlinked-folder", sample_through_symlinked_folder, 2,
     [r"--out .*alias/mask\.png is the input file itself \(--mask .*real/mask\.png\)"]),
    ("sample-individual-over-mask", sample_individual_over_mask, 2,
     [r"--individual .*grid/sample_000\.png is the input file itself \(--mask"]),
    ("inpaint-out-is-image", inpaint_over("--image"), 2,
     [r"--out .*image\.png is the input file itself \(--image"]),
    ("inpaint-out-is-region", inpaint_over("--region"), 2,
     [r"--out .*region\.png is the input file itself \(--region"]),
    ("evaluate-out-over-input", evaluate_over_weights, 2,
     [r"--out .*ev/tissue_fractions\.png is the input file itself \(--inception-weights"]),
    ("segmenter-out-in-data", segmenter_into_split, 2,
     [r"--out .*keras_png_slices_train/seg\.safetensors is inside the data root \(--data"]),
    ("segmenter-out-exists", segmenter_over_existing, 2,
     [r"--out .*other\.safetensors already exists", r"--overwrite"]),
    ("sample-guidance-0-ignores-mask", lambda c: c.sample(
        "--mask", str(c.f["dir"] / "mask.png"), "--slice", "16", "--guidance", "0", "--out",
        str(c.tmp / "s.png")), 2, [r"--mask and --slice given with --guidance 0", r"drop them"]),
    ("sample-guidance-0-ignores-slice", lambda c: c.sample(
        "--slice", "16", "--guidance", "0", "--out", str(c.tmp / "s.png")), 2,
     [r"--slice given with --guidance 0", r"drop it"]),
    ("train-init-from-latent-other-size", train_init_from_latent_at_another_size, 2,
     [r"--init-from .*latent32\.safetensors is a latent model of 32x32", r"image size is 16",
      r"--image-size 32"]),
    ("evaluate-missing-data", lambda c: [*c.evaluate("--guidance", "0"), "--data",
                                         str(c.tmp / "missing")], 1,
     [r"data root .*missing .*does not exist"]),
    ("evaluate-data-without-test", evaluate_without_test_split, 1,
     [r"--data .*partial has no keras_png_slices_test folder", r"held-out split"]),
    ("evaluate-segmenter-is-diffusion", lambda c: [*c.evaluate("--guidance", "0"),
                                                   "--segmenter", str(c.f["plain"])], 1,
     [r"plain\.safetensors is not a tissue segmenter"]),
    ("evaluate-regressor-is-segmenter", lambda c: [*c.evaluate("--condition", "validate"),
                                                   "--slice-regressor", str(c.f["seg"])], 1,
     [r"seg\.safetensors is not a slice regressor"]),
]


def _one_line(err: str, patterns: list[str]) -> str:
    from conftest import assert_error_line

    return assert_error_line(err, patterns)


@pytest.mark.parametrize(("case", "build", "code", "patterns"), CASES, ids=[c[0] for c in CASES])
def test_io_case(case, build, code, patterns, files, tmp_path, capsys):
    ctx = Ctx(tmp=tmp_path, f=files)
    argv = build(ctx)
    got = main(argv)
    err = capsys.readouterr().err
    assert got == code, err
    _one_line(err, patterns)
    for path, d in ctx.protected.items():
        assert digest(path) == d, f"{path} changed"
    assert not (tmp_path / "s.png").exists()  # nothing sampled before the refusal
    assert not (tmp_path / "ev" / "samples.pt").exists()
    assert not (tmp_path / "ev" / "report.json").exists()
    assert not (tmp_path / "r0" / "last.pt").exists()


# ------------------------------------------------------------------ behaving correctly
def test_evaluate_keeps_its_samples_when_scoring_fails_and_says_where(files, tmp_path,
                                                                       monkeypatch, capsys):
    from oasis_lib.data import DataError
    from oasis_lib.evaluation import report

    def fail(*args, **kwargs):
        raise DataError("the held-out slices vanished")

    monkeypatch.setattr(report, "evaluate_samples", fail)
    ctx = Ctx(tmp=tmp_path, f=files)
    assert main(ctx.evaluate(model="plain")) == 1
    kept = tmp_path / "ev" / "samples.pt"
    line = _one_line(capsys.readouterr().err, [r"the held-out slices vanished"])
    assert f"the 4 samples were saved to {kept}" in line
    samples = torch.load(kept, weights_only=True)
    assert samples.shape == (4, 1, SIZE, SIZE)
    assert samples.abs().max() <= 1


def test_evaluate_removes_the_kept_samples_after_success(files, tmp_path, capsys):
    ctx = Ctx(tmp=tmp_path, f=files)
    assert main(ctx.evaluate(model="plain")) == 0
    assert (tmp_path / "ev" / "report.json").is_file()
    assert not (tmp_path / "ev" / "samples.pt").exists()


def test_export_overwrite_replaces_only_on_request(files, tmp_path, capsys, demo_root):
    run = tmp_path / "run"
    assert main(["train", "--data-root", str(demo_root), "--preset", "tiny", "--no-progress",
                 "--max-steps", "1", "--out", str(run)]) == 0
    out = tmp_path / "w.safetensors"
    shutil.copy(files["plain"], out)
    before = digest(out)
    assert main(["export", "--checkpoint", str(run / "last.pt"), "--out", str(out)]) == 2
    assert digest(out) == before
    assert main(["export", "--checkpoint", str(run / "last.pt"), "--out", str(out),
                 "--overwrite"]) == 0
    assert digest(out) != before


def test_a_thin_stroke_regenerates_every_cell_it_touches(files, tmp_path, capsys):
    stroke = np.zeros((4 * SIZE, 4 * SIZE), np.uint8)  # painted at 4x the model's grid
    for r in range(4 * SIZE):
        stroke[r, r:r + 3] = 255  # a diagonal stroke 3 pixels wide
    Image.fromarray(stroke).save(tmp_path / "stroke.png")
    touched = stroke.reshape(SIZE, 4, SIZE, 4).max(axis=(1, 3)) > 0  # every cell it touches
    centres = stroke[2::4, 2::4] > 0  # what a nearest-neighbour shrink keeps
    assert touched.sum() > centres.sum()  # (so the test can fail)
    region = read_region_png(tmp_path / "stroke.png", (SIZE, SIZE))
    assert np.array_equal(region[0, 0].numpy() > 0, touched)
    out = tmp_path / "inpainted.png"
    image = tmp_path / "image.png"
    shutil.copy(files["dir"] / "image.png", image)
    assert main(["inpaint", "--checkpoint", str(files["plain"]), "--image", str(image),
                 "--region", str(tmp_path / "stroke.png"), "--no-progress", "--out",
                 str(out)]) == 0
    assert f"({touched.sum()} of {SIZE * SIZE} pixels regenerated" in capsys.readouterr().out
    result = np.array(Image.open(out))
    assert np.array_equal(result[~touched], files["image"][~touched])  # the rest is kept


def test_conditional_flags_with_guidance_above_0_still_sample(files, tmp_path, capsys):
    out = tmp_path / "s.png"
    assert main(Ctx(tmp=tmp_path, f=files).sample(
        "--mask", str(files["dir"] / "mask.png"), "--slice", "16", "--guidance", "1", "--out",
        str(out))) == 0
    assert out.is_file()
    assert os.path.getsize(files["dir"] / "mask.png") > 0
