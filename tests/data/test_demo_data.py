"""oasis_lib.data.demo: layout, realism checks and byte-for-byte determinism (few cases)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from oasis_lib.data import SPLITS, image_dir, load_splits, mask_dir, summarize
from oasis_lib.data.demo import (
    MANIFEST,
    build_demo_dataset,
    ensure_demo_dataset,
    main,
    template_paths,
)


def files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_template_ships_with_nilearn():
    paths = template_paths()
    assert set(paths) == {"t1", "gm", "wm"}
    assert all(p.is_file() and "nilearn" in str(p) for p in paths.values())


def test_layout_and_naming(demo_root):
    expected = {"train": [1, 2], "validate": [402], "test": [441]}
    for split in SPLITS:
        names = [f"case_{c:03d}_slice_{s}.nii.png" for c in expected[split] for s in range(32)]
        assert files(image_dir(demo_root, split)) == sorted(names)
        masks = sorted(n.replace("case_", "seg_") for n in names)
        assert files(mask_dir(demo_root, split)) == masks
    manifest = json.loads((demo_root / MANIFEST).read_text())
    assert manifest["cases"] == [2, 1, 1]
    assert manifest["seed"] == 0
    assert manifest["complete"]
    with Image.open(image_dir(demo_root, "train") / "case_001_slice_16.nii.png") as im:
        assert (im.format, im.mode, im.size) == ("PNG", "L", (256, 256))
    with Image.open(mask_dir(demo_root, "train") / "seg_001_slice_16.nii.png") as im:
        assert (im.mode, im.size) == ("L", (256, 256))
        assert set(np.unique(np.asarray(im)).tolist()) == {0, 85, 170, 255}


def test_slices_look_like_brains(demo_root):
    train, validate = load_splits(demo_root, image_size=None, with_masks=True, augment=False)
    assert len(train) == 2 * 32  # the train split's two cases; test (441) is held out
    assert len(validate) == 32
    ds = train.datasets[0]
    images, masks = ds.images.float(), ds.masks
    brain = masks > 0
    assert (images[~brain] == 0).all()
    assert (images[brain] > 0).all()
    for index in (8, 16, 24):  # ventricle level to upper cortex: all four classes present
        assert set(masks[index].unique().tolist()) == {0, 1, 2, 3}
        rows = brain[index].any(1).nonzero()[:, 0]
        assert 0.55 < (rows.max() - rows.min()) / 256 < 0.9  # brain fills most of the frame
    means = [images[masks == c].mean().item() for c in (1, 2, 3)]
    assert means[0] < means[1] < means[2]  # T1: CSF dark, grey mid, white bright
    summary = summarize(demo_root)
    fractions = summary["class_fractions"]
    assert 0.5 < fractions["background"] < 0.8
    assert fractions["csf"] > 0.01
    assert summary["splits"]["test"] == {"cases": 1, "slices": 32, "case_range": (441, 441),
                                         "masks": True}


def test_build_is_byte_identical_and_seeded_per_case(demo_root, tmp_path):
    again = build_demo_dataset(tmp_path / "again", cases=(2, 0, 0), progress=False)
    for folder in (image_dir, mask_dir):
        names = files(folder(again, "train"))
        assert len(names) == 64
        for name in names:
            assert (folder(again, "train") / name).read_bytes() == \
                (folder(demo_root, "train") / name).read_bytes(), name
    assert not image_dir(again, "validate").exists()
    other = main(["--out", str(tmp_path / "seed1"), "--cases", "1", "0", "0", "--seed", "1"])
    name = "case_001_slice_16.nii.png"
    assert (image_dir(other, "train") / name).read_bytes() != \
        (image_dir(demo_root, "train") / name).read_bytes()


def test_build_keeps_refuses_and_overwrites(demo_root, tmp_path):
    threads = torch.get_num_threads()
    stamp = (image_dir(demo_root, "train") / "case_001_slice_0.nii.png").stat().st_mtime_ns
    assert build_demo_dataset(demo_root, cases=(2, 1, 1), progress=False) == demo_root
    assert ensure_demo_dataset(demo_root) == demo_root
    assert (image_dir(demo_root, "train") / "case_001_slice_0.nii.png").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="different or unfinished demo build"):
        build_demo_dataset(demo_root, cases=(1, 1, 1), progress=False)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a demo dataset"):
        build_demo_dataset(foreign, cases=(1, 0, 0), overwrite=True, progress=False)
    assert (foreign / "thesis.tex").read_text() == "keep me"
    small = build_demo_dataset(tmp_path / "small", cases=(1, 0, 0), seed=3, progress=False)
    build_demo_dataset(small, cases=(0, 0, 1), seed=3, overwrite=True, progress=False)
    assert not image_dir(small, "train").exists()
    assert len(files(image_dir(small, "test"))) == 32
    assert torch.get_num_threads() == threads  # the build runs single-threaded, then restores


@pytest.mark.parametrize("cases", [(1, 2), (-1, 0, 0), (0, 40, 0)])
def test_bad_case_counts(cases, tmp_path):
    with pytest.raises(ValueError, match="cases|at most"):
        build_demo_dataset(tmp_path / "x", cases=cases)
