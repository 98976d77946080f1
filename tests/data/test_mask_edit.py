"""Editing a mask as atrophy does: the CSF grows (k > 0) or shrinks (k < 0) by k pixels into the
tissue, never into the background; the ventricles are the CSF the background cannot reach."""

from __future__ import annotations

import pytest
import torch

from oasis_lib.data.mask_edit import EDIT_SCOPES, edit_csf, ventricles

BG, CSF, GREY, WHITE = 0, 1, 2, 3


def field(value=GREY, size=11):
    return torch.full((size, size), value, dtype=torch.long)


@pytest.mark.parametrize(("k", "count"), [(0, 1), (1, 5), (2, 13), (3, 25)])
def test_one_csf_pixel_grows_into_a_city_block_diamond(k, count):
    m = field()
    m[5, 5] = CSF
    out = edit_csf(m, k)
    assert int((out == CSF).sum()) == count  # 2k^2 + 2k + 1 pixels at |dy| + |dx| <= k
    yy, xx = torch.meshgrid(torch.arange(11), torch.arange(11), indexing="ij")
    torch.testing.assert_close(out == CSF, (yy - 5).abs() + (xx - 5).abs() <= k)
    assert set(out.unique().tolist()) <= {CSF, GREY}


def test_dilation_never_enters_the_background():
    m = field(BG)
    m[:, 6:] = WHITE
    m[:, 5] = CSF  # a CSF line between the background (left) and white matter (right)
    out = edit_csf(m, 2)
    assert torch.equal(out[:, :5], m[:, :5])  # background untouched
    assert torch.equal(out[:, 5:8], torch.full((11, 3), CSF))  # grown by 2 into the tissue
    assert torch.equal(out[:, 8:], m[:, 8:])


def test_erosion_gives_the_csf_back_to_the_surrounding_tissue():
    m = field(WHITE)
    m[4:7, 4:7] = CSF  # a 3x3 block: its ring touches white matter, its centre does not
    one = edit_csf(m, -1)
    assert int((one == CSF).sum()) == 1
    assert one[5, 5] == CSF
    assert set(one.unique().tolist()) == {CSF, WHITE}
    assert torch.equal(edit_csf(m, -2), field(WHITE))


def test_erosion_takes_the_majority_tissue_and_grey_on_a_tie():
    m = field(WHITE, 5)
    m[:, :2] = GREY
    m[2, 2] = CSF  # neighbours: grey left, white right/up/down -> white
    assert edit_csf(m, -1)[2, 2] == WHITE
    m = field(WHITE, 5)
    m[:2] = GREY
    m[:, :2] = GREY
    m[2, 2] = CSF  # neighbours: up and left grey, down and right white: a tie -> grey
    assert edit_csf(m, -1)[2, 2] == GREY


def test_dilate_then_erode_a_single_pixel_is_a_round_trip():
    m = field()
    m[5, 5] = CSF
    assert torch.equal(edit_csf(edit_csf(m, 1), -1), m)


def test_ventricles_are_the_csf_the_background_cannot_reach():
    m = field(BG, 13)
    m[1:12, 1:12] = CSF      # the outer CSF rim, touching the background
    m[2:11, 2:11] = WHITE
    m[5:8, 5:8] = CSF        # an inner CSF space
    v = ventricles(m)
    expected = torch.zeros_like(v)
    expected[5:8, 5:8] = True
    assert torch.equal(v, expected)
    out = edit_csf(m, 1, scope="ventricles")
    assert torch.equal(out[1:12, 1] == CSF, torch.ones(11, dtype=torch.bool))  # rim as it was
    assert torch.equal(out[2:11, 2] == WHITE, torch.ones(9, dtype=torch.bool))
    assert int((out == CSF).sum()) == int((m == CSF).sum()) + 12  # 3x3 -> 21-pixel cross-square
    assert int((edit_csf(m, 1) == CSF).sum()) > int((out == CSF).sum())  # all CSF grows more


def test_batch_is_edited_image_by_image():
    g = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 4, (3, 16, 16), generator=g)
    for k in (-1, 2):
        batch = edit_csf(masks, k)
        assert batch.shape == masks.shape
        assert batch.dtype == torch.long
        for i in range(3):
            assert torch.equal(batch[i], edit_csf(masks[i], k))


def test_background_is_invariant_under_any_edit():
    g = torch.Generator().manual_seed(1)
    masks = torch.randint(0, 4, (2, 16, 16), generator=g).to(torch.uint8)
    for k in (-2, 3):
        assert torch.equal(edit_csf(masks, k) == BG, masks == BG)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"unknown scope 'sulci'; choose one of \('csf', "
                                         r"'ventricles'\)"):
        edit_csf(field(), 1, scope="sulci")
    assert EDIT_SCOPES == ("csf", "ventricles")
    with pytest.raises(ValueError, match="integer tensor of classes"):
        edit_csf(field().float(), 1)
    with pytest.raises(ValueError, match=r"found \[4\]"):
        edit_csf(field(4), 1)
    with pytest.raises(ValueError, match="k must be an integer"):
        edit_csf(field(), 1.5)
    with pytest.raises(ValueError, match=r"\[H, W\] or \[B, H, W\]"):
        edit_csf(field()[None, None], 1)
