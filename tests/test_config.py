import re

import pytest

from oasis_lib.config import TRAIN_PRESETS, DiffusionConfig, TrainConfig


def test_presets_build_and_round_trip_through_dict():
    for name in TRAIN_PRESETS:
        cfg = TrainConfig.from_preset(name)
        assert cfg.preset == name
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_overrides_reach_nested_diffusion_config():
    cfg = TrainConfig.from_preset("tiny", epochs=3, diffusion={"prediction_type": "eps"})
    assert cfg.epochs == 3
    assert cfg.diffusion.prediction_type == "eps"
    assert cfg.diffusion.schedule == DiffusionConfig().schedule


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"optimizer": "sgd"}, "unknown optimizer 'sgd'; choose one of ('adamw', 'adam')"),
        ({"precision": "int8"}, "unknown precision 'int8'"),
        ({"arch": "vit"}, "unknown arch 'vit'"),
        ({"diffusion": {"prediction_type": "score"}}, "unknown prediction_type 'score'"),
        ({"diffusion": {"schedule": "exp"}}, "unknown schedule 'exp'"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"ema_decay": 1.0}, "ema_decay must be in [0, 1)"),
        ({"learning_rate": 1e-3}, "unknown TrainConfig fields ['learning_rate']"),
    ],
)
def test_bad_options_raise_value_error_listing_valid_ones(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig.from_preset("tiny", **overrides)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        TrainConfig.from_preset("huge")


def test_train_splits_default_keeps_test_held_out_and_old_configs_read_as_trained():
    """New runs train on the train split only; a stored config without the field (every run
    before it existed, the shipped demo checkpoint included) trained on train + test."""
    assert TrainConfig().train_splits == ("train",)
    old = TrainConfig.from_preset("tiny").to_dict()
    del old["train_splits"]
    assert TrainConfig.from_dict(old).train_splits == ("train", "test")
    as_json = {**old, "train_splits": ["test", "train"]}  # safetensors metadata is JSON
    assert TrainConfig.from_dict(as_json).train_splits == ("test", "train")
    with pytest.raises(ValueError, match="invalid train_splits"):
        TrainConfig.from_preset("tiny", train_splits=("validate",))


def test_resuming_an_old_checkpoint_keeps_its_train_and_test_splits():
    from oasis_lib.training.resume import ResumeMismatchError, merge_for_resume

    saved = TrainConfig.from_preset("tiny").to_dict()
    del saved["train_splits"]
    new = TrainConfig.from_preset("tiny").to_dict()  # the new default: train only
    merged = merge_for_resume(saved, new, checkpoint="a/last.pt", explicit=set())
    assert TrainConfig.from_dict(merged).train_splits == ("train", "test")
    with pytest.raises(ResumeMismatchError, match="train_splits"):
        merge_for_resume(saved, new, checkpoint="a/last.pt", explicit={"train_splits"})


def test_cli_train_splits_flag():
    from oasis_lib.cli import build_parser

    args = build_parser().parse_args(["train", "--out", "x", "--train-splits", "train,test"])
    assert args.train_splits == ("train", "test")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--out", "x", "--train-splits", "validate"])
