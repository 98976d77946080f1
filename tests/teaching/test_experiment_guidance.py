"""The guidance experiment of notebook 09: the reference run measures what it says, the checker
tests the direction and reports the reader's mistakes, and on the shipped conditional model the
Dice rises from s = 0 to s = 2 at the notebook's CI size."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from oasis_lib.evaluation.reference import segment
from oasis_lib.evaluation.segmenter import SegmenterConfig, TissueSegmenter
from oasis_lib.evaluation.tissue import dice_per_class
from oasis_lib.teaching.experiments import guidance as exp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "diffusion"))
from test_conditional_pipeline import SIZE, conditional_pipeline, mask_condition  # noqa: E402, I001


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    seg = TissueSegmenter(SegmenterConfig(channels=(4, 8), image_size=SIZE)).eval()
    return conditional_pipeline(), mask_condition(), seg


def test_reference_run_is_the_mean_tissue_dice_of_the_guided_samples(tiny):
    pipe, cond, seg = tiny
    out = exp.guidance_dice_experiment(pipe, cond, seg, scales=(0.0, 2.0), n=2, steps=3)
    assert set(out) == {0.0, 2.0}
    images = pipe.sample(2, steps=3, condition=cond, guidance_scale=2.0,
                         generator=torch.Generator().manual_seed(0), progress=False)
    masks = segment(seg, images)["masks"]
    want = float(dice_per_class(masks, cond.mask[0].expand_as(masks))[1:].mean())
    assert out[2.0] == pytest.approx(want)


def test_checker_passes_a_rise_and_explains_every_failure(capsys):
    assert exp.check_guidance_dice(lambda *a: {0.0: 0.4, 2.0: 0.8}, None, None, None)
    assert "passed" in capsys.readouterr().out
    cases = {
        "not implemented": lambda *a: (_ for _ in ()).throw(NotImplementedError),
        "raised ZeroDivisionError": lambda *a: 1 / 0,
        "as keys": lambda *a: {0.0: 0.4},
        "between 0 and 1": lambda *a: {0.0: 0.4, 2.0: 83.0},
        "not above": lambda *a: {0.0: 0.8, 2.0: 0.4},
    }
    for words, fn in cases.items():
        result = exp.check_guidance_dice(fn, None, None, None)
        assert not result
        assert words in capsys.readouterr().out


@pytest.mark.slow
def test_on_the_shipped_model_the_dice_rises_with_guidance():
    from oasis_lib import load_model, load_split
    from oasis_lib.evaluation.segmenter import load_segmenter
    from oasis_lib.models.conditioning import Condition
    from oasis_lib.paths import shipped_checkpoint

    pipe = load_model(shipped_checkpoint("demo_cond64_ema.safetensors"))
    val = load_split("validate", None, image_size=64, with_masks=True)
    i = next(i for i, item in enumerate(val.items) if item[1] == 16)
    cond = Condition(mask=val.masks[i:i + 1].long(), slice_index=torch.tensor([16]))
    result = exp.check_guidance_dice(exp.guidance_dice_experiment, pipe, cond, load_segmenter())
    assert result
    assert result.values[2.0] > result.values[0.0] + 0.2
