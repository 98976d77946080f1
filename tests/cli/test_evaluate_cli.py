"""``evaluate --condition validate --guidance S``: the CLI scores a conditional model as the
library does, prints mask and slice faithfulness, and refuses every misuse in one line."""

from __future__ import annotations

import json
import re

import pytest
import torch
from synthetic import perturbed_export

from oasis_lib.checkpoint import export_safetensors
from oasis_lib.cli import build_parser, main
from oasis_lib.evaluation import report as E
from oasis_lib.evaluation.conditions import CONDITION_SOURCES, validate_conditions
from oasis_lib.evaluation.segmenter import SEGMENTER_KIND, TissueSegmenter, load_segmenter
from oasis_lib.evaluation.slice_level import (
    SLICE_REGRESSOR_KIND,
    SliceRegressor,
    load_slice_regressor,
)
from oasis_lib.pretrained import load_model

SIZE = 16




@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Fake 16x16 OASIS folders (8 validate slices), a mask+slice and an unconditional tiny
    model, a tiny segmenter and slice regressor, all written as the CLI reads them."""
    from conftest import write_eval_root

    d = tmp_path_factory.mktemp("eval_cli")
    root = d / "data"
    write_eval_root(root, SIZE)
    torch.manual_seed(0)
    seg = TissueSegmenter(channels=(8, 16), image_size=SIZE).eval()
    reg = SliceRegressor(channels=(4,), image_size=SIZE).eval()
    seg_file = export_safetensors(seg.state_dict(), d / "seg.safetensors", dtype=torch.float32,
                                  config={"kind": SEGMENTER_KIND,
                                          "segmenter": seg.config.to_dict()})
    reg_file = export_safetensors(reg.state_dict(), d / "reg.safetensors", dtype=torch.float32,
                                  config={"kind": SLICE_REGRESSOR_KIND,
                                          "slice_regressor": reg.config.to_dict()})
    return {"dir": d, "root": root, "seg": seg_file, "reg": reg_file,
            "cond": perturbed_export(d / "cond.safetensors", "mask+slice"),
            "plain": perturbed_export(d / "plain.safetensors", "none")}


def _argv(files, model, out, *flags):
    return ["evaluate", "--checkpoint", str(files[model]), "--n", "4", "--steps", "2",
            "--seed", "1", "--data", str(files["root"]), "--segmenter", str(files["seg"]),
            "--slice-regressor", str(files["reg"]), "--out", str(out), "--batch-size", "4",
            "--n-subsets", "5", "--device", "cpu", "--no-progress", *flags]


def test_condition_flag_and_help_come_from_the_library():
    sub = build_parser()._subparsers._group_actions[0].choices
    condition = next(a for a in sub["evaluate"]._actions if a.dest == "condition")
    assert tuple(condition.choices) == CONDITION_SOURCES
    text = sub["evaluate"].format_help()
    for flag in ("--condition", "--guidance", "--guidance-rescale", "--slice-regressor",
                 "--inception-weights"):
        assert flag in text


def test_conditioned_evaluation_is_the_library_call_and_prints_faithfulness(files, capsys):
    out = files["dir"] / "ev_cond"
    assert main(_argv(files, "cond", out, "--condition", "validate", "--guidance", "2",
                      "--guidance-rescale", "0.5")) == 0
    text = capsys.readouterr().out
    saved = json.loads((out / "report.json").read_text())
    meta = saved["meta"]
    assert (meta["condition"], meta["model_condition"]) == ("validate", "mask+slice")
    assert (meta["guidance_scale"], meta["guidance_rescale"]) == (2.0, 0.5)
    chosen = validate_conditions(4, image_size=SIZE, data_root=files["root"], seed=1)
    assert meta["validate_indices"] == chosen.indices.tolist()
    assert meta["checkpoint"] == str(files["cond"])
    # the same evaluation through the library, from the same files
    lib = E.evaluate(load_model(files["cond"], device="cpu"), n=4, steps=2, seed=1, out=None,
                     data_root=files["root"], segmenter=load_segmenter(files["seg"]),
                     slice_regressor=load_slice_regressor(files["reg"]), batch_size=4,
                     device="cpu", progress=False, n_subsets=5, condition="validate",
                     guidance_scale=2.0, guidance_rescale=0.5)
    assert saved["metrics"] == lib.to_dict()["metrics"]
    dice, mae = lib["metrics"]["mask_dice"], lib["metrics"]["slice_mae"]
    assert f"{'mask_dice':<22}{dice['value']:>11.4g}{dice['floor']:>11.4g}  higher" in text
    assert f"{'slice_mae':<22}{mae['value']:>11.4g}{mae['floor']:>11.4g}  lower" in text
    assert "condition: mask+slice of 4 validate slices spread over the split (guidance s = 2, " \
           "rescale 0.5)" in text
    line = next(x for x in text.splitlines() if x.startswith("mask faithfulness"))
    assert f"CSF {dice['per_class']['csf']:.3f} (floor {dice['floor_per_class']['csf']:.3f})" \
        in line
    assert f"mean shortfall from the floor {dice['gap']['mean']:.3f}" in line
    assert f"slice MAE: {mae['value']:.2f} slices from the requested level (floor " \
           f"{mae['floor']:.2f}" in text


def test_guidance_zero_evaluates_the_null_condition(files, capsys):
    out = files["dir"] / "ev_null"
    assert main(_argv(files, "cond", out, "--guidance", "0")) == 0
    text = capsys.readouterr().out
    meta = json.loads((out / "report.json").read_text())["meta"]
    assert (meta["condition"], meta["guidance_scale"]) == (None, 0.0)
    assert "condition: none: the unconditional samples of a mask+slice model" in text
    assert "mask_dice" not in text
    assert "slice MAE" not in text
    # an unconditional model's report is unchanged: no condition lines
    assert main(_argv(files, "plain", files["dir"] / "ev_plain")) == 0
    assert "condition" not in capsys.readouterr().out


@pytest.mark.parametrize(("model", "flags", "expected"), [
    ("plain", ["--condition", "validate"],
     r"--condition given, but .*plain.safetensors is an unconditional model; drop it"),
    ("plain", ["--guidance", "2", "--guidance-rescale", "0.3"],
     r"--guidance and --guidance-rescale given, but .* is an unconditional model; drop them"),
    ("cond", [], r"is a conditional model \(mask\+slice\): add --condition validate .* or "
                 r"--guidance 0 to score its unconditional samples"),
    ("cond", ["--guidance", "2"], r"--guidance needs a condition to guide towards: add "
                                  r"--condition validate"),
    ("cond", ["--guidance", "0", "--guidance-rescale", "0.5"],
     r"--guidance-rescale needs a condition"),
    ("cond", ["--condition", "validate", "--n", "9"],
     r"n=9 is larger than the validate split \(8 slices\)"),
    ("cond", ["--condition", "validate", "--guidance", "-1"],
     r"--guidance must be a finite scale >= 0"),
    ("cond", ["--condition", "validate", "--guidance-rescale", "2"],
     r"--guidance-rescale must be in \[0, 1\], got 2.0"),
    ("cond", ["--slice-regressor", "missing.safetensors"], r"missing.safetensors does not exist"),
])
def test_misuse_is_refused_in_one_line_before_sampling(files, capsys, model, flags, expected):
    out = files["dir"] / "never"
    assert main(_argv(files, model, out, *flags)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert re.search(expected, lines[0]), lines[0]
    assert not out.exists()


def test_evaluate_uses_the_file_sampling_defaults(files, capsys):
    from oasis_lib.diffusion.sampling_defaults import SamplingDefaults

    pipe = load_model(files["plain"], device="cpu")
    pipe.sampling_defaults = SamplingDefaults("dpm++2m", 2)
    fast = pipe.save(files["dir"] / "fast.safetensors")
    out = files["dir"] / "ev_defaults"
    argv = [a for a in _argv(files, "plain", out) if a not in ("--steps", "2")]
    argv[argv.index(str(files["plain"]))] = str(fast)
    assert main(argv) == 0
    assert ("sampling with sampler dpm++2m (the file's default), 2 steps (the file's default)"
            in capsys.readouterr().out)
    meta = json.loads((out / "report.json").read_text())["meta"]
    assert (meta["sampler"], meta["steps"]) == ("dpm++2m", 2)
