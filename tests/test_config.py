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
