"""mask_faithfulness: per-tissue Dice of the segmented samples against their conditioning masks,
and the same for real slices (the floor)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from oasis_lib.evaluation.faithfulness import mask_faithfulness


class IntensitySegmenter(nn.Module):
    """Class = round(1.5 (x + 1)): an image painted as mask / 1.5 - 1 is segmented exactly."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def predict(self, x):
        return (1.5 * (x[:, 0] + 1)).round().clamp(0, 3).long()

    def features(self, x):
        return x.mean(dim=(2, 3))


def paint(masks):
    return (masks.float() / 1.5 - 1)[:, None]


def test_dice_has_the_closed_form_and_the_real_floor():
    mask = torch.tensor([[1] * 4, [2] * 4, [3] * 4, [3] * 4])[None]  # CSF, grey, 2 x white
    wrong = mask.clone()
    wrong[0, 0] = 2  # the CSF row generated as grey matter
    out = mask_faithfulness(paint(wrong), mask, IntensitySegmenter(),
                            real_images=paint(mask), real_masks=mask)
    # CSF 2*0/(0+4) = 0, grey 2*4/(8+4) = 2/3, white 1; mean 5/9
    assert out["generated"] == pytest.approx({"csf": 0.0, "grey_matter": 2 / 3,
                                              "white_matter": 1.0, "mean": 5 / 9}, abs=1e-6)
    assert out["real"] == pytest.approx({"csf": 1.0, "grey_matter": 1.0, "white_matter": 1.0,
                                         "mean": 1.0})
    assert out["gap"]["mean"] == pytest.approx(4 / 9, abs=1e-6)


def test_without_real_slices_there_is_no_floor_and_bad_shapes_are_refused():
    mask = torch.randint(0, 4, (3, 8, 8), generator=torch.Generator().manual_seed(0))
    out = mask_faithfulness(paint(mask), mask, IntensitySegmenter())
    assert out["generated"]["mean"] == 1.0
    assert out["real"] is None
    assert out["gap"] is None
    with pytest.raises(ValueError, match="same N, H, W"):
        mask_faithfulness(paint(mask)[:2], mask, IntensitySegmenter())
    with pytest.raises(ValueError, match="both real_images and real_masks"):
        mask_faithfulness(paint(mask), mask, IntensitySegmenter(), real_images=paint(mask))
