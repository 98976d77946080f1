"""The training commands' flags come from the configs' knobs (oasis_lib.config_knobs), and so do
the resume rules: no hand map (issue 22, item 5)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from oasis_lib.cli.config_flags import (
    add_config_flags,
    config_flags,
    config_from_args,
    config_overrides,
    explicit_fields,
    field_of_flag,
    flag_names,
)
from oasis_lib.cli.main import build_parser, main
from oasis_lib.config import AutoencoderTrainConfig, RunConfig, TrainConfig
from oasis_lib.config_knobs import Knob, knob, knobs, resume_fields
from oasis_lib.training.resume import DERIVED, FREE, LENGTH, SAFE_OVERRIDES

# The flags of `train` and `train-autoencoder` before the knobs (main at df16ce1), each with
# the config field it set: the table the knobs must reproduce.
TRAIN_TABLE = {
    "--data-root": "data_root", "--weight-decay": "weight_decay", "--adam-betas": "adam_betas",
    "--adam-eps": "adam_eps", "--lr-schedule": "lr_schedule",
    "--lr-decay-steps": "lr_decay_steps", "--ema-power": "ema_power",
    "--ema-inv-gamma": "ema_inv_gamma", "--no-fused-optimizer": "fused_optimizer",
    "--train-splits": "train_splits", "--init-from": "init_from", "--preset": "preset",
    "--arch": "arch", "--image-size": "image_size", "--autoencoder": "autoencoder",
    "--latent-cache-dir": "latent_cache_dir", "--condition": "condition",
    "--p-uncond": "p_uncond", "--mask-ablation-p": "mask_ablation_p", "--epochs": "epochs",
    "--max-steps": "max_steps", "--max-minutes": "max_minutes",
    "--budget-clock": "budget_clock", "--optimizer": "optimizer", "--grad-clip": "grad_clip",
    "--batch-size": "batch_size", "--grad-accum": "grad_accum", "--lr": "lr",
    "--prediction": "diffusion.prediction_type", "--schedule": "diffusion.schedule",
    "--timesteps": "diffusion.timesteps", "--loss": "diffusion.loss_type",
    "--min-snr-gamma": "diffusion.min_snr_gamma", "--ema-decay": "ema_decay",
    "--warmup-steps": "warmup_steps", "--validate-every": "validate_every",
    "--sample-every": "sample_every", "--precision": "precision",
    "--channels-last": "channels_last", "--compile": "compile", "--device": "device",
    "--seed": "seed", "--checkpoint-every": "checkpoint_every", "--out": "out_dir",
    "--no-progress": "progress",
    # added with rectified flow (issue 25): the noise process and its knobs
    "--noise-process": "diffusion.noise_process", "--time-sampling": "diffusion.time_sampling",
    "--logit-loc": "diffusion.logit_loc", "--logit-scale": "diffusion.logit_scale",
    "--flow-shift": "diffusion.flow_shift",
    # added with reflow (issue 26): train on a teacher's (noise, sample) pairs
    "--reflow-pairs": "reflow_pairs"}
AUTOENCODER_TABLE = {
    "--data-root": "data_root", "--train-splits": "train_splits", "--preset": "preset",
    "--image-size": "image_size", "--crop-size": "crop_size",
    "--latent-channels": "autoencoder_overrides.latent_channels",
    "--channel-mult": "autoencoder_overrides.channel_mult", "--adversarial": "loss.adversarial",
    "--init-from": "init_from", "--disc-start": "disc_start", "--epochs": "epochs",
    "--max-steps": "max_steps", "--max-minutes": "max_minutes",
    "--budget-clock": "budget_clock", "--batch-size": "batch_size", "--lr": "lr",
    "--precision": "precision", "--device": "device", "--seed": "seed",
    "--checkpoint-every": "checkpoint_every", "--out": "out_dir", "--no-progress": "progress"}
COMMAND_FLAGS = {"-h", "--resume", "--override"}  # the command's own, not the config's
TABLES = {"train": (TrainConfig, TRAIN_TABLE),
          "train-autoencoder": (AutoencoderTrainConfig, AUTOENCODER_TABLE)}
# training/resume.py's hand lists before the knobs (main at df16ce1).
MAIN_FREE = {"epochs", "max_steps", "max_minutes", "budget_clock", "out_dir", "progress",
             "device", "channels_last", "compile", "fused_optimizer", "num_workers",
             "latent_cache_dir"}
MAIN_SAFE = {"data_root", "checkpoint_every", "log_every", "validate_every", "sample_every",
             "sample_n", "sample_steps", "sampler"}


def _subparser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _field_exists(cls, path: str) -> bool:
    """``path`` names a field of ``cls`` (a nested config's field, or a key a dict field's
    knob declares)."""
    head, _, rest = path.partition(".")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if head not in fields:
        return False
    if not rest:
        return True
    k = fields[head].metadata.get("knob")
    if k is not None and k.entries:
        return rest in k.entries
    return _field_exists(type(fields[head].default_factory()), rest)


@pytest.mark.parametrize("command", sorted(TABLES))
def test_every_flag_is_a_config_field_and_every_flagged_field_has_its_flag(command):
    config, table = TABLES[command]
    parsed = {a.option_strings[0] for a in _subparser(command)._actions} - COMMAND_FLAGS
    assert field_of_flag(config) == table  # the same flags, each on the same field
    assert parsed == set(table)  # and the parser has exactly those
    assert all(_field_exists(config, path) for path in table.values())


@pytest.mark.parametrize("command", sorted(TABLES))
def test_budget_clock_is_a_flag_and_reaches_the_config(command, tmp_path):
    """The flag the hand map once lost."""
    config, _ = TABLES[command]
    args = build_parser().parse_args([command, "--preset", "tiny", "--budget-clock", "cpu",
                                      "--out", str(tmp_path / "run")])
    assert config_from_args(config, args).budget_clock == "cpu"
    assert "budget_clock" in explicit_fields(config, args)


def test_the_resume_rules_from_the_knobs_are_the_old_hand_lists():
    assert set(FREE) == MAIN_FREE
    assert len(FREE) == len(MAIN_FREE)  # each once
    assert set(SAFE_OVERRIDES) == MAIN_SAFE
    assert len(SAFE_OVERRIDES) == len(MAIN_SAFE)
    assert set(LENGTH) == {"epochs", "max_steps", "max_minutes"}
    assert set(DERIVED) == {"latent_scale_factor", "autoencoder_sha256"}
    everything = {p for cls in (TrainConfig, AutoencoderTrainConfig) for p, *_ in knobs(cls)}
    fixed = set(resume_fields((TrainConfig, AutoencoderTrainConfig), "fixed"))
    assert fixed == everything - MAIN_FREE - MAIN_SAFE - set(DERIVED)
    assert {"lr", "batch_size", "image_size", "diffusion.timesteps", "seed"} <= fixed


def _a_value(flag) -> tuple[list[str], object]:
    """Command-line words for ``flag`` and the value they must set (never the default)."""
    k, hint = flag.knob, flag.value_type
    if flag.switch:
        return [], flag.switch_value()
    if k.choices is not None:
        return [str(k.choices[-1])], k.choices[-1]
    if flag.path.endswith("train_splits"):
        return ["train,test"], ("train", "test")
    if flag.path.endswith("channel_mult"):
        return ["1", "2", "4"], (1, 2, 4)
    if str(hint).startswith("tuple"):
        return ["0.5", "0.75"], (0.5, 0.75)
    value = {int: 7, float: 0.375, str: "some/where"}[hint or k.parse]
    return [str(value)], value


@pytest.mark.parametrize("command", sorted(TABLES))
def test_each_flag_sets_its_field(command):
    """Every flag, given alone, sets exactly its field (nested ones as nested overrides)."""
    config, _ = TABLES[command]
    for flag in config_flags(config):
        words, value = _a_value(flag)
        argv = [command, flag.flag, *words] + ([] if flag.flag == "--out" else ["--out", "o"])
        args = build_parser().parse_args(argv)
        over = config_overrides(config, args)
        if flag.path == "preset":  # names the preset the overrides apply to
            assert over == {"out_dir": "o"}
            continue
        got = over
        for part in flag.path.split("."):
            got = got[part]
        assert got == value, flag.flag
        assert len(over) == (1 if flag.flag == "--out" else 2), (flag.flag, over)


def test_the_flags_name_the_fields_in_errors():
    """``usage_phase`` shows a config error with the flag the user typed."""
    train, ae = flag_names(TrainConfig), flag_names(AutoencoderTrainConfig)
    assert train["diffusion.prediction_type"] == train["prediction_type"] == "--prediction"
    assert train["budget_clock"] == ae["budget_clock"] == "--budget-clock"
    assert ae["latent_channels"] == "--latent-channels"
    assert "progress" not in train  # a switch: "progress" stays a word in messages


@pytest.mark.parametrize(("config", "path"), [
    (cls, f.path) for cls in (TrainConfig, AutoencoderTrainConfig)
    for f in config_flags(cls) if f.knob.choices is not None and f.path != "preset"])
def test_a_flag_s_choices_are_the_names_its_config_validates(config, path):
    """A name outside the knob's choices is refused by the config itself, naming the field and
    the knob's choices (the CLI's choices= cannot drift from the library's rule)."""
    *parents, name = path.split(".")
    over = {name: "nonsense"}
    for parent in reversed(parents):
        over = {parent: over}
    with pytest.raises(ValueError, match=rf"unknown {name} 'nonsense'; choose one of") as err:
        config.from_preset("tiny", **over)
    choices = next(f.knob.choices for f in config_flags(config) if f.path == path)
    assert all(repr(c) in str(err.value) for c in choices)


def test_an_unknown_choice_is_a_one_line_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--budget-clock", "sundial", "--out", str(tmp_path / "run")])
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: argument --budget-clock: invalid choice: 'sundial'" in last
    assert "'wall'" in last  # the choices, on the same line
    assert "'cpu'" in last
    assert not (tmp_path / "run").exists()


def test_a_bad_knob_is_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown resume rule 'sometimes'; choose one of"):
        knob(1, resume="sometimes")
    with pytest.raises(ValueError, match=r"unknown run kinds \['gan'\]"):
        Knob(runs=("gan",))
    with pytest.raises(ValueError, match="a flag starts with '--'"):
        Knob(flag="-x")
    with pytest.raises(ValueError, match=r"unknown config class 'RunConfig'; choose a subclass"):
        config_flags(RunConfig)  # which command's flags? (a run kind's config only)


def test_a_new_knob_is_one_field(tmp_path):
    """Adding a config knob with a flag: one field with its knob, nothing else."""

    @dataclasses.dataclass
    class AgeConfig(TrainConfig):
        age_bins: int = knob(4, flag=True, help="age groups the condition knows")
        age_source: str = knob("csv", flag=True, choices=("csv", "header"), resume="safe")

    parser = argparse.ArgumentParser()
    add_config_flags(parser, AgeConfig)
    args = parser.parse_args(["--out", "o", "--age-bins", "7", "--age-source", "header"])
    assert config_overrides(AgeConfig, args) == {"out_dir": "o", "age_bins": 7,
                                                 "age_source": "header"}
    assert explicit_fields(AgeConfig, args) == {"out_dir", "age_bins", "age_source"}
    assert "age groups the condition knows" in parser.format_help()
    assert "age_bins" in resume_fields((AgeConfig,), "fixed")
    assert resume_fields((AgeConfig,), "safe")[-1] == "age_source"
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "o", "--age-source", "dicom"])
