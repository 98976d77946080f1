"""The conditional sliders: each frame is the pipeline's own sample (or inpainting) from the fixed
noise at the slider's value, figures have a fixed size and a title naming the value, and moving a
slider redraws with the new value."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from oasis_lib.data.mask_edit import edit_csf  # noqa: E402
from oasis_lib.diffusion.inpainting import border_step  # noqa: E402
from oasis_lib.evaluation.segmenter import SegmenterConfig, TissueSegmenter  # noqa: E402
from oasis_lib.evaluation.tissue import dice_per_class, tissue_fractions  # noqa: E402
from oasis_lib.models.conditioning import Condition  # noqa: E402
from oasis_lib.viz import conditional as cv  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "diffusion"))
from test_conditional_pipeline import SIZE, conditional_pipeline  # noqa: E402, I001


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def pipe():
    return conditional_pipeline()


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    return TissueSegmenter(SegmenterConfig(channels=(4, 8), image_size=SIZE)).eval()


@pytest.fixture(scope="module")
def x_T():
    return torch.randn((2, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def masks():
    """32 masks of one "case": a disc of white matter with a CSF core growing with the slice."""
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    r = ((yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2).sqrt()
    out = torch.zeros(32, SIZE, SIZE, dtype=torch.long)
    for i in range(32):
        out[i][r < 7] = 2
        out[i][r < 5] = 3
        out[i][r < 1 + i / 16] = 1
    return out


def _title(fig) -> str:
    return fig._suptitle.get_text()


def test_guidance_frame_is_the_guided_sample(pipe, x_T, masks, segmenter):
    cond = Condition(mask=masks[10:11], slice_index=torch.tensor([10]))
    for s in (0.0, 1.0, 2.5):
        frame = cv.guidance_frame(pipe, x_T, cond, s, steps=4, segmenter=segmenter)
        want = pipe.sample(2, steps=4, x_T=x_T, condition=cond, guidance_scale=s, progress=False)
        torch.testing.assert_close(frame["images"], want, rtol=0, atol=0)
        assert frame["scale"] == s
        assert frame["slice"] == 10
        assert torch.equal(frame["mask"], masks[10])
        seg = frame["segmentations"]
        assert seg.shape == (2, SIZE, SIZE)
        for i in range(2):
            assert float(frame["dice"][i]) == pytest.approx(
                float(dice_per_class(seg[i], masks[10])[1:].mean()))
    uncond = pipe.sample(2, steps=4, x_T=x_T, guidance_scale=0.0, progress=False)
    torch.testing.assert_close(cv.guidance_frame(pipe, x_T, cond, 0.0, steps=4)["images"],
                               uncond, rtol=0, atol=0)
    with pytest.raises(ValueError, match="must be >= 0"):
        cv.guidance_frame(pipe, x_T, cond, -1.0)


def test_guidance_slider_redraws_at_the_chosen_scale(pipe, x_T, masks, segmenter):
    cond = Condition(mask=masks[:1], slice_index=torch.tensor([0]))
    w = cv.guidance_slider(pipe, x_T, cond, steps=3, segmenter=segmenter)
    slider = w.children[0]
    assert (slider.min, slider.max, slider.step, slider.value) == (0.0, 5.0, 0.5, 1.0)
    assert slider.continuous_update is False
    assert _title(w.result).startswith("guidance scale s = 1.0 (w = 0.0, conditional), mean Dice")
    size = tuple(w.result.get_size_inches())
    slider.value = 3.0
    assert _title(w.result).startswith("guidance scale s = 3.0 (w = 2.0, guided)")
    assert tuple(w.result.get_size_inches()) == size
    slider.value = 0.0
    assert "unconditional" in _title(w.result)
    assert plt.get_fignums() == []


def test_slice_level_frame_conditions_on_that_slice_and_its_mask(pipe, x_T, masks):
    frame = cv.slice_level_frame(pipe, x_T, 20, masks=masks, steps=3)
    cond = Condition(mask=masks[20:21], slice_index=torch.tensor([20]))
    want = pipe.sample(2, steps=3, x_T=x_T, condition=cond, progress=False)
    torch.testing.assert_close(frame["images"], want, rtol=0, atol=0)
    alone = cv.slice_level_frame(pipe, x_T, 20, steps=3)
    assert alone["mask"] is None
    assert alone["dice"] is None
    want = pipe.sample(2, steps=3, x_T=x_T, condition=Condition(slice_index=torch.tensor([20])),
                       progress=False)
    torch.testing.assert_close(alone["images"], want, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"slice_index must be in 0\.\.31"):
        cv.slice_level_frame(pipe, x_T, 32)
    with pytest.raises(ValueError, match="the 32 slices of a case"):
        cv.slice_level_frame(pipe, x_T, 3, masks=masks[:5])


def test_slice_level_slider_title_names_the_slice(pipe, x_T, masks):
    w = cv.slice_level_slider(pipe, x_T, masks=masks, steps=2)
    slider = w.children[0]
    assert (slider.min, slider.max, slider.value) == (0, 31, 16)
    assert _title(w.result) == "slice 16 of 0..31 (mask and slice)"
    slider.value = 31
    assert _title(w.result) == "slice 31 of 0..31 (mask and slice)"


def test_mask_edit_frame_samples_the_edited_mask(pipe, x_T, masks, segmenter):
    mask = masks[31]
    for k in (-1, 0, 2):
        frame = cv.mask_edit_frame(pipe, x_T, mask, 31, k, scope="csf", steps=3,
                                   segmenter=segmenter)
        edited = edit_csf(mask, k)
        assert torch.equal(frame["mask"], edited)
        assert torch.equal(frame["original"], mask)
        cond = Condition(mask=edited[None], slice_index=torch.tensor([31]))
        want = pipe.sample(2, steps=3, x_T=x_T, condition=cond, progress=False)
        torch.testing.assert_close(frame["images"], want, rtol=0, atol=0)
        assert frame["csf_mask"] == pytest.approx(float(tissue_fractions(edited[None])[0, 0]))
        assert frame["csf_generated"] == pytest.approx(
            float(tissue_fractions(frame["segmentations"])[:, 0].mean()))
    assert cv.mask_edit_frame(pipe, x_T, mask, None, 2, scope="csf", steps=2)["csf_mask"] > \
        cv.mask_edit_frame(pipe, x_T, mask, None, 0, scope="csf", steps=2)["csf_mask"]
    with pytest.raises(ValueError, match="unknown scope"):
        cv.mask_edit_frame(pipe, x_T, mask, 0, 1, scope="all")


def test_mask_edit_slider_title_names_the_edit(pipe, x_T, masks):
    w = cv.mask_edit_slider(pipe, x_T, masks[31], 31, scope="csf", steps=2)
    slider = w.children[0]
    assert (slider.min, slider.max, slider.value) == (-2, 4, 0)
    assert _title(w.result).startswith("CSF as drawn: CSF")
    slider.value = 2
    assert _title(w.result).startswith("CSF dilated by 2 px: CSF")
    slider.value = -1
    assert _title(w.result).startswith("CSF eroded by 1 px")


def test_inpaint_frame_keeps_the_known_part_and_measures_the_border(pipe):
    g = torch.Generator().manual_seed(3)
    image = torch.rand((1, SIZE, SIZE), generator=g) * 2 - 1
    region = cv.block_region(SIZE, 4, 4, 6, 8)
    assert int(region.sum()) == 48
    frame = cv.inpaint_frame(pipe, image, region, 2, n=2, steps=5, jump_length=2)
    keep = region == 0
    assert frame["inpainted"].shape == (2, 1, SIZE, SIZE)
    for img in frame["inpainted"]:
        torch.testing.assert_close(img[:, keep], image[:, keep], rtol=0, atol=0)
    want = pipe.inpaint(image[None].expand(2, -1, -1, -1).clone(), region, steps=5,
                        jump_length=2, resample=2, generator=torch.Generator().manual_seed(0),
                        progress=False)
    torch.testing.assert_close(frame["inpainted"], want, rtol=0, atol=0)
    torch.testing.assert_close(frame["border"], border_step(want, region))
    assert frame["border_real"] == pytest.approx(float(border_step(image[None], region)))
    with pytest.raises(ValueError, match="resample must be a positive integer"):
        cv.inpaint_frame(pipe, image, region, 0)
    with pytest.raises(ValueError, match="not inside"):
        cv.block_region(SIZE, 10, 10, 8, 8)


def test_inpaint_slider_redraws_at_the_chosen_resample_count(pipe):
    image = torch.zeros(1, SIZE, SIZE)
    w = cv.inpaint_slider(pipe, image, cv.block_region(SIZE, 2, 2, 4, 4), n=1, steps=4,
                          jump_length=2)
    slider = w.children[0]
    assert (slider.min, slider.max, slider.value, slider.continuous_update) == (1, 8, 1, False)
    assert _title(w.result) == "RePaint, resample = 1 (jump 2, 4 steps)"
    slider.value = 3
    assert _title(w.result) == "RePaint, resample = 3 (jump 2, 4 steps)"
    assert len(w.result.axes) == 2


def test_condition_frame_passes_the_x0_rule_to_the_sampler(pipe, x_T, masks, segmenter):
    from oasis_lib.diffusion.guidance import DynamicThreshold

    cond = Condition(mask=masks[10:11], slice_index=torch.tensor([10]))
    rule = DynamicThreshold(0.9)
    frame = cv.condition_frame(pipe, x_T, cond, scale=3.0, steps=3, segmenter=segmenter,
                               clip_x0=rule)
    want = pipe.sample(2, steps=3, x_T=x_T, condition=cond, guidance_scale=3.0,
                       progress=False, clip_x0=rule)
    assert torch.equal(frame["images"], want)
    frames = {"static": cv.condition_frame(pipe, x_T, cond, scale=3.0, steps=3,
                                           segmenter=segmenter), "dynamic": frame}
    fig = cv.threshold_figure(frames)
    assert len(fig.axes) == 2 * 3
    assert [a.get_title() for a in fig.axes[:3]][1].startswith("sample 1, Dice")


def test_sweep_table_drops_the_timing_column_and_the_prose():
    text = ("CPU flags: avx\n\n| s (n) | s/img | Dice mean |\n|---|---|---|\n"
            "| 0 (8) | 6.052 | 0.356 |\n\nbest scale s = 2: fine\n")
    assert cv.sweep_table(text) == "| s (n) | Dice mean |\n|---|---|\n| 0 (8) | 0.356 |"
    with pytest.raises(ValueError, match="no markdown table"):
        cv.sweep_table("no table here")
