"""The conditional CLI: ``sample --mask/--slice/--guidance``, ``inpaint``, ``train
--condition``; every refusal is one line naming the flag, the file and the way out."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from synthetic import perturbed_export

from oasis_lib.cli import build_parser, main
from oasis_lib.models.conditioning import CONDITIONS

SIZE = 16




@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48], mask[24:40, 24:40], mask[30:34, 30:34] = 170, 255, 85
    Image.fromarray(mask).save(d / "mask.png")
    bad = mask.copy()
    bad[0, :2] = (100, 7)
    Image.fromarray(bad).save(d / "bad_values.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(d / "odd_size.png")
    image = (np.random.default_rng(0).random((SIZE, SIZE)) * 255).astype(np.uint8)
    Image.fromarray(image).save(d / "image.png")
    region = np.zeros((SIZE, SIZE), np.uint8)
    region[4:10, 5:12] = 255
    Image.fromarray(region).save(d / "region.png")
    Image.fromarray((region // 2).astype(np.uint8)).save(d / "grey_region.png")
    return {"dir": d, "cond": perturbed_export(d / "cond.safetensors", "mask+slice"),
            "mask_only": perturbed_export(d / "mask.safetensors", "mask"),
            "plain": perturbed_export(d / "plain.safetensors", "none"), "image": image,
            "region": region}


def one_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    return lines[0]


def test_choices_and_help_come_from_the_library():
    sub = build_parser()._subparsers._group_actions[0].choices
    condition = next(a for a in sub["train"]._actions if a.dest == "condition")
    assert tuple(condition.choices) == CONDITIONS
    for command, flag in (("sample", "--mask"), ("inpaint", "--region"), ("inpaint", "--jump"),
                          ("train", "--p-uncond")):
        assert flag in sub[command].format_help()


def test_sample_with_mask_slice_and_guidance_writes_the_grid(files, capsys):
    out = files["dir"] / "samples.png"
    assert main(["sample", "--checkpoint", str(files["cond"]), "--mask",
                 str(files["dir"] / "mask.png"), "--slice", "12", "--guidance", "2",
                 "--n", "2", "--steps", "3", "--out", str(out), "--no-progress"]) == 0
    assert out.is_file()
    assert main(["sample", "--checkpoint", str(files["cond"]), "--guidance", "0", "--n", "2",
                 "--steps", "3", "--out", str(out), "--no-progress"]) == 0


@pytest.mark.parametrize(("model", "flags", "expected"), [
    ("cond", ["--mask", "bad_values.png"],
     r"bad_values.png: pixel values 7, 100 are not OASIS mask levels 0/85/170/255"),
    ("cond", ["--mask", "odd_size.png"], "odd_size.png is 20x20; the model works at 16x16"),
    ("cond", ["--mask", "missing.png"], "missing.png does not exist"),
    ("cond", ["--slice", "32"], "--slice 32 is outside 0..31"),
    ("cond", ["--slice", "-1"], "--slice -1 is outside 0..31"),
    ("cond", [], r"conditional model \(mask\+slice\): give --mask and --slice.*--guidance 0"),
    ("cond", ["--slice", "3", "--guidance", "-1"], "--guidance must be a finite scale >= 0"),
    ("mask_only", ["--slice", "3"], "--slice given, but .* is conditioned on mask only"),
    ("plain", ["--slice", "3"], "--slice given, but .* is an unconditional model; drop it"),
    ("plain", ["--guidance", "3"], "--guidance given, but .* is an unconditional model"),
])
def test_sample_refusals_are_one_line(files, capsys, model, flags, expected):
    import re

    flags = [str(files["dir"] / f) if f.endswith(".png") else f for f in flags]
    code = main(["sample", "--checkpoint", str(files[model]), "--n", "1", "--steps", "2",
                 "--out", str(files["dir"] / "x.png"), "--no-progress", *flags])
    assert code == 2
    assert re.search(expected, one_error(capsys))


def test_inpaint_keeps_the_known_region_of_the_input(files, capsys):
    out = files["dir"] / "inpainted.png"
    for extra in ([], ["--mask", str(files["dir"] / "mask.png"), "--slice", "5",
                       "--guidance", "2"]):
        assert main(["inpaint", "--checkpoint", str(files["cond"]), "--image",
                     str(files["dir"] / "image.png"), "--region",
                     str(files["dir"] / "region.png"), "--jump", "4", "--resample", "2",
                     "--out", str(out), "--no-progress", *extra]) == 0
        assert "42 of 256 pixels regenerated" in capsys.readouterr().out
        result = np.asarray(Image.open(out))
        keep = files["region"] == 0
        assert result.shape == (SIZE, SIZE)
        np.testing.assert_array_equal(result[keep], files["image"][keep])
        assert (result[~keep] != files["image"][~keep]).any()


@pytest.mark.parametrize(("flags", "expected"), [
    (["--region", "grey_region.png"], "grey_region.png: pixel values 127 found; a region is 0"),
    (["--region", "image.png"], "a region is 0 \\(keep\\) and 255"),
    (["--guidance", "2"], "--guidance needs a condition"),
    (["--jump", "0"], "--jump must be >= 1"),
    (["--jump", "20"], "--jump 20 must be below the model's T=20"),
    (["--out", "image.png"], "is the input file itself"),
])
def test_inpaint_refusals_are_one_line(files, capsys, flags, expected):
    import re

    args = {"--checkpoint": str(files["cond"]), "--image": str(files["dir"] / "image.png"),
            "--region": str(files["dir"] / "region.png"),
            "--out": str(files["dir"] / "y.png")}
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        args[flag] = str(files["dir"] / value) if value.endswith(".png") else value
    code = main(["inpaint", "--no-progress", *[x for kv in args.items() for x in kv]])
    assert code == 2
    assert re.search(expected, one_error(capsys))


def test_train_condition_flags_reach_the_run(tmp_path, capsys):
    from conftest import write_fake_split

    from oasis_lib.checkpoint import load_checkpoint

    root = tmp_path / "data"
    write_fake_split(root, "train", {1: 4, 2: 4}, size=SIZE)
    write_fake_split(root, "validate", {402: 2}, size=SIZE)
    write_fake_split(root, "test", {441: 2}, size=SIZE)
    out = tmp_path / "run"
    base = ["train", "--preset", "tiny", "--data-root", str(root), "--image-size", str(SIZE),
            "--batch-size", "4", "--out", str(out), "--no-progress", "--max-steps"]
    assert main([*base, "2", "--condition", "mask+slice", "--p-uncond", "1.5"]) == 2
    assert "--p-uncond must be a probability in [0, 1], got 1.5" in one_error(capsys)
    assert main([*base, "2", "--condition", "mask+slice", "--p-uncond", "0.2",
                 "--mask-ablation-p", "0.25"]) == 0
    cfg = load_checkpoint(out / "last.pt")["config"]
    assert (cfg["condition"], cfg["p_uncond"], cfg["mask_ablation_p"]) == ("mask+slice", 0.2,
                                                                          0.25)
    assert main([*base, "3", "--resume", "--condition", "mask"]) == 2
    assert "condition" in one_error(capsys)
