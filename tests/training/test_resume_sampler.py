"""A run saved when the progress grids' sampler defaulted to "ddim" resumes with a config whose
sampler is None (the noise process's default): the checkpoint's value is kept."""

import pytest

from oasis_lib.config import TrainConfig
from oasis_lib.training.resume import ResumeMismatchError, merge_for_resume


def test_none_sampler_keeps_the_checkpoints():
    saved = TrainConfig.from_preset("tiny", sampler="ddim").to_dict()
    new = TrainConfig.from_preset("tiny").to_dict()
    assert new["sampler"] is None
    assert merge_for_resume(saved, new, checkpoint="last.pt")["sampler"] == "ddim"
    other = TrainConfig.from_preset("tiny", sampler="dpm++2m").to_dict()
    with pytest.raises(ResumeMismatchError, match="sampler: checkpoint 'ddim', now 'dpm\\+\\+2m'"):
        merge_for_resume(saved, other, checkpoint="last.pt")
