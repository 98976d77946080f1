"""Smoke runs of ``python -m oasis_lib`` on the tiny preset and a 2-case demo dataset."""

import subprocess
import sys

import pytest
import torch
from PIL import Image

from oasis_lib.checkpoint import load_checkpoint, load_safetensors
from oasis_lib.cli import build_parser, main


@pytest.mark.parametrize(("command", "option"), [
    ("make-demo", "--cases"), ("summary", "--data-root"), ("train", "--resume"),
    ("sample", "--sampler"), ("export", "--live"), ("demo", "--train-steps"),
    ("train-segmenter", "--size"), ("evaluate", "--inception-weights"),
    ("train-slice-regressor", "--head")])
def test_every_command_has_help_with_its_options(command, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: python -m oasis_lib {command}")
    assert option in text


def test_choices_come_from_the_library_constants():
    from oasis_lib.config import PRECISIONS, TRAIN_PRESETS
    from oasis_lib.diffusion import SAMPLERS, SCHEDULE_KINDS
    from oasis_lib.diffusion.processes import ALL_PREDICTION_TYPES

    sub = build_parser()._subparsers._group_actions[0].choices
    def choices(command, dest):
        return next(a.choices for a in sub[command]._actions if a.dest == dest)
    assert tuple(choices("sample", "sampler")) == SAMPLERS
    assert tuple(choices("evaluate", "sampler")) == SAMPLERS
    assert tuple(choices("train", "schedule")) == SCHEDULE_KINDS
    assert tuple(choices("train", "prediction")) == ALL_PREDICTION_TYPES  # VP's and the flow's
    assert tuple(choices("train", "precision")) == PRECISIONS
    assert tuple(choices("train", "preset")) == tuple(TRAIN_PRESETS)


def test_bad_sampler_options_are_refused_before_sampling(capsys):
    # ddpm runs all T steps; eta belongs to ddim only: both refused, never silently dropped.
    # Refused as bad usage (exit 2, one line) before the checkpoint is even loaded.
    assert main(["sample", "--sampler", "ddpm", "--steps", "10", "--n", "1", "--no-progress"]) == 2
    assert "ddpm always runs all T steps" in capsys.readouterr().err
    assert main(["sample", "--sampler", "dpm++2m", "--eta", "0.5", "--n", "1",
                 "--no-progress"]) == 2
    assert "--eta is only read by --sampler ddim" in capsys.readouterr().err


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "oasis_lib", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("make-demo", "summary", "train", "sample", "export", "demo"):
        assert command in out


def test_train_resume_export_sample(demo_root, tmp_path, capsys):
    run = tmp_path / "run"
    common = ["train", "--data-root", str(demo_root), "--preset", "tiny", "--out", str(run),
              "--no-progress", "--checkpoint-every", "3"]
    assert main([*common, "--max-steps", "4"]) == 0
    assert load_checkpoint(run / "last.pt")["step"] == 4
    assert main([*common, "--max-steps", "6", "--resume"]) == 0
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["step"] == 6
    assert ckpt["config"]["image_size"] == 32

    weights = tmp_path / "ema.safetensors"
    assert main(["export", "--checkpoint", str(run / "last.pt"), "--out", str(weights)]) == 0
    tensors, cfg = load_safetensors(weights)
    assert cfg["preset"] == "tiny"
    assert cfg["out_dir"] == "runs/run"  # no machine paths in a shared file
    assert cfg["data_root"] is None
    assert all(t.dtype == torch.float16 for t in tensors.values())

    grid = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(weights), "--sampler", "ddim", "--steps", "3",
                 "--n", "4", "--seed", "0", "--out", str(grid), "--individual",
                 "--no-progress"]) == 0
    assert Image.open(grid).size == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2)  # 2x2 grid, padding 2
    singles = sorted((tmp_path / "grid").glob("sample_*.png"))
    assert len(singles) == 4
    assert Image.open(singles[0]).size == (32, 32)
    grid2 = tmp_path / "grid2.png"
    assert main(["sample", "--checkpoint", str(run / "last.pt"), "--sampler", "dpm++2m",
                 "--steps", "3", "--n", "4", "--out", str(grid2), "--no-progress"]) == 0
    assert grid2.is_file()
    out = capsys.readouterr().out
    assert "trained to step 6" in out
    assert f"wrote {grid}" in out


def test_summary_writes_the_overlay_figure(demo_root, tmp_path, capsys):
    assert main(["summary", "--data-root", str(demo_root), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "slices_with_masks.png").is_file()
    out = capsys.readouterr().out
    assert "validate" in out
    assert "wrote" in out


def test_train_refuses_an_existing_run_without_resume(demo_root, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data-root", str(demo_root), "--preset", "tiny", "--out", str(run),
            "--no-progress", "--max-steps", "2"]
    assert main(args) == 0
    assert main(args) == 2  # bad usage: one line, no traceback
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "already holds a run" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("flag", "value", "field", "expected"), [
    ("--budget-clock", "cpu", "budget_clock", "cpu"),  # (once parsed and silently dropped)
    ("--max-minutes", "3", "max_minutes", 3.0),
    ("--p-uncond", "0.2", "p_uncond", 0.2),
    ("--train-splits", "train,test", "train_splits", ("train", "test"))])
def test_train_flags_reach_the_config(flag, value, field, expected, tmp_path):
    from oasis_lib.cli.main import _train_config

    args = build_parser().parse_args(["train", "--preset", "tiny", flag, value,
                                      "--out", str(tmp_path / "run")])
    assert getattr(_train_config(args), field) == expected


@pytest.mark.parametrize(("flags", "expected"), [
    (["--adam-betas", "0.95", "0.999"], {"adam_betas": (0.95, 0.999)}),
    (["--adam-eps", "1e-6", "--weight-decay", "1e-6"], {"adam_eps": 1e-6, "weight_decay": 1e-6}),
    (["--lr-schedule", "cosine", "--lr-decay-steps", "1000"],
     {"lr_schedule": "cosine", "lr_decay_steps": 1000}),
    (["--ema-power", "0.75", "--ema-inv-gamma", "2"], {"ema_power": 0.75, "ema_inv_gamma": 2.0}),
    (["--no-fused-optimizer"], {"fused_optimizer": False}),
    ([], {"adam_betas": (0.9, 0.999), "lr_schedule": "constant", "ema_power": None,
          "fused_optimizer": True})])  # the preset's values when no flag is given
def test_optimizer_flags_reach_the_config(flags, expected, tmp_path):
    from oasis_lib.cli.main import _train_config
    from oasis_lib.cli.train import explicit_fields

    args = build_parser().parse_args(["train", "--preset", "tiny", *flags,
                                      "--out", str(tmp_path / "run")])
    cfg = _train_config(args)
    assert {k: getattr(cfg, k) for k in expected} == expected
    assert explicit_fields(args) >= (set(expected) if flags else set())  # checked on --resume


@pytest.mark.parametrize(("flags", "message"), [
    # (the config's field names appear as the flags that set them: cli.errors.usage_phase)
    (["--lr-schedule", "cosine"], "--lr-schedule 'cosine' needs --lr-decay-steps"),
    (["--lr-decay-steps", "100"], "--lr-decay-steps is read only by --lr-schedule 'cosine'"),
    (["--adam-betas", "0.9", "1.5"], "--adam-betas must be two numbers in [0, 1)"),
    (["--adam-eps", "0"], "--adam-eps must be a finite number > 0"),
    (["--weight-decay", "-1"], "--weight-decay must be a finite number >= 0")])
def test_bad_optimizer_flags_are_one_line_errors(flags, message, demo_root, tmp_path, capsys):
    args = ["train", "--data-root", str(demo_root), "--preset", "tiny", "--no-progress",
            "--max-steps", "1", "--out", str(tmp_path / "run"), *flags]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "last.pt").exists()
