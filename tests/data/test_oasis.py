"""oasis_lib.data on tiny fake OASIS folders (8x8 PNGs written with PIL in tmp_path)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from oasis_lib import paths
from oasis_lib.data import (
    SEED_TRAIN_SPLITS,
    DataError,
    OASISDataset,
    default_transform,
    held_out_split,
    image_dir,
    load_split,
    load_splits,
    mask_dir,
    resolve_data_root,
    summarize,
    tissue_fractions,
)


def split_dataset(root, split="train", **kwargs) -> OASISDataset:
    return OASISDataset(image_dir(root, split), mask_dir(root, split), **kwargs)


# --- pairing, order, values -------------------------------------------------------------------

def test_pairs_by_id_not_by_sorted_position(tmp_path, write_split, item_ids):
    # slices 0..11: name order is 0, 1, 10, 11, 2, ...; case 7's masks are not zero-padded
    write_split(tmp_path, "train", {12: 12, 3: 2})
    write_split(tmp_path, "train", {7: 3}, mask_fmt="seg_{case}_slice_{slice}")
    ds = split_dataset(tmp_path)
    expected = [(c, s) for c, n in ((3, 2), (7, 3), (12, 12)) for s in range(n)]
    assert [(c, s) for c, s, *_ in ds.items] == expected
    assert ds.case_ids == [3, 7, 12]
    for index, (case, slice_, image_path, mask_path) in enumerate(ds.items):
        image, mask = ds[index]
        assert item_ids(image, mask) == ((case, slice_), (case, slice_))
        assert image_path.name == f"case_{case:03d}_slice_{slice_}.nii.png"
        assert mask_path.parent == mask_dir(tmp_path, "train")


def test_output_types_and_exact_range(fake_root):
    ds = split_dataset(fake_root)
    image, mask = ds[0]
    assert image.shape == (1, 8, 8)
    assert image.dtype == torch.float32
    assert mask.shape == (8, 8)
    assert mask.dtype == torch.long
    assert type(image) is torch.Tensor
    assert type(mask) is torch.Tensor
    assert image[0, 0, 3].item() == -1.0
    assert image[0, 0, 4].item() == 1.0
    assert image.min() == -1.0
    assert image.max() == 1.0
    assert set(mask.unique().tolist()) <= {0, 1, 2, 3}
    only_images = OASISDataset(image_dir(fake_root, "train"))
    assert torch.equal(only_images[0], image)


def test_uncached_and_cached_agree(fake_root):
    cached, lazy = split_dataset(fake_root), split_dataset(fake_root, cache=False)
    assert lazy.images is None
    assert cached.images.dtype == torch.uint8
    for i in range(len(cached)):
        assert all(torch.equal(a, b) for a, b in zip(cached[i], lazy[i], strict=True))


# --- transforms -------------------------------------------------------------------------------

def test_flip_moves_image_and_mask_together(fake_root):
    ds = split_dataset(fake_root, transform=default_transform(augment=True))
    flips = 0
    for _ in range(30):
        image, mask = ds[3]
        body = ((image[0, 1:] + 1) * 127.5).round().long()
        assert torch.equal(body, 10 + 30 * mask[1:])  # the relation survives the flip
        flips += int(mask[1, 0] == 3)  # unflipped column 0 is class 0
    assert 0 < flips < 30


def test_resize_masks_nearest_and_cache_resize_equals_transform(fake_root):
    up = split_dataset(fake_root, transform=default_transform(16))
    image, mask = up[1]
    assert image.shape == (1, 16, 16)
    assert mask.shape == (16, 16)
    raw = split_dataset(fake_root)[1][1]
    assert torch.equal(mask, raw.repeat_interleave(2, 0).repeat_interleave(2, 1))
    down_t = split_dataset(fake_root, transform=default_transform(5))
    down_c = split_dataset(fake_root, image_size=5)
    assert down_c.images.shape == (6, 5, 5)
    for i in range(len(down_c)):
        (a, m), (b, n) = down_t[i], down_c[i]
        assert torch.equal(a, b)
        assert torch.equal(m, n)
        assert set(m.unique().tolist()) <= {0, 1, 2, 3}
        assert -1 <= a.min()
        assert a.max() <= 1


def test_float_transform_output_is_rejected(fake_root):
    to_float = v2.ToDtype(torch.float32, scale=True)
    ds = OASISDataset(image_dir(fake_root, "train"), transform=to_float)
    with pytest.raises(TypeError, match="keep it uint8"):
        ds[0]


# --- splits and roots -------------------------------------------------------------------------

def test_load_splits_keeps_test_out_unless_asked_as_the_seed_did(fake_root):
    only, _ = load_splits(fake_root, image_size=4)
    assert [d.case_ids for d in only.datasets] == [[1, 2]]  # test stays held out
    assert len(only) == 6
    train, validate = load_splits(fake_root, image_size=4, with_masks=True,
                                  train_splits=SEED_TRAIN_SPLITS)
    assert len(train) == 6 + 3
    assert len(validate) == 3
    assert [d.case_ids for d in train.datasets] == [[1, 2], [441]]
    assert validate.case_ids == [402]
    image, mask = train[0]
    assert image.shape == (1, 4, 4)
    assert mask.shape == (4, 4)
    assert all(isinstance(d.transform.transforms[0], v2.RandomHorizontalFlip)
               for d in train.datasets)
    assert isinstance(validate.transform, v2.Identity)  # never augmented
    plain, _ = load_splits(fake_root, image_size=None, augment=False, train_splits="train,test")
    assert plain[0].shape == (1, 8, 8)
    assert isinstance(plain.datasets[0].transform, v2.Identity)


@pytest.mark.parametrize("splits", [("validate",), (), ("train", "train"), "train,valid"])
def test_train_splits_are_checked_by_name(fake_root, splits):
    with pytest.raises(ValueError, match=r"invalid train_splits.*\('train', 'test'\)"):
        load_splits(fake_root, train_splits=splits)


def test_held_out_split_is_test_unless_trained_on():
    assert held_out_split(("train",)) == "test"
    assert held_out_split(("train", "test")) == "validate"


def test_case_in_two_splits_is_a_data_error(fake_root, write_split):
    write_split(fake_root, "validate", {2: 1})
    with pytest.raises(DataError, match=r"\[2\].*train and validate"):
        load_splits(fake_root)


def test_load_split_names(fake_root):
    assert load_split("test", fake_root).case_ids == [441]
    assert isinstance(load_split("train", fake_root).transform.transforms[0],
                      v2.RandomHorizontalFlip)
    with pytest.raises(ValueError, match=r"unknown split 'val'.*'train', 'validate', 'test'"):
        load_split("val", fake_root)


def test_resolve_data_root(fake_root, tmp_path, monkeypatch):
    monkeypatch.delenv("OASIS_DATA", raising=False)
    assert resolve_data_root(fake_root) == fake_root
    with pytest.raises(DataError, match="nowhere.*does not exist"):
        resolve_data_root(tmp_path / "nowhere")
    monkeypatch.setenv("OASIS_DATA", str(fake_root))
    assert resolve_data_root() == fake_root
    monkeypatch.setenv("OASIS_DATA", str(tmp_path / "gone"))
    with pytest.raises(DataError, match="gone.*OASIS_DATA"):
        resolve_data_root()
    monkeypatch.delenv("OASIS_DATA")
    calls = []
    monkeypatch.setattr("oasis_lib.data.roots.ensure_demo_dataset", lambda p: calls.append(p) or p)
    assert resolve_data_root() == calls[0] == paths.repo_root() / "data" / "demo"
    assert (paths.repo_root() / "pyproject.toml").is_file()


def test_summary_and_tissue_fractions(fake_root):
    masks = torch.tensor([[0, 0, 1, 3], [2, 2, 3, 3]])
    assert torch.allclose(tissue_fractions(masks), torch.tensor([0.25, 0.125, 0.25, 0.375]))
    with pytest.raises(ValueError, match="0..3"):
        tissue_fractions(torch.tensor([0, 4]))
    summary = summarize(fake_root)
    assert summary["splits"]["train"] == {"cases": 2, "slices": 6, "case_range": (1, 2),
                                          "masks": True}
    assert summary["image_size"] == (8, 8)
    assert sum(summary["class_fractions"].values()) == pytest.approx(1, abs=1e-3)
    assert "validate" in str(summary)
    assert "8x8" in str(summary)


# --- bad inputs -------------------------------------------------------------------------------

def test_missing_split_folder(tmp_path, write_split):
    write_split(tmp_path, "train", {1: 1})
    with pytest.raises(DataError, match="keras_png_slices_validate does not exist"):
        load_split("validate", tmp_path)
    (tmp_path / "keras_png_slices_data").mkdir()
    with pytest.raises(DataError, match="did you mean root=.*keras_png_slices_data"):
        load_split("validate", tmp_path)


def test_split_folder_without_pngs(tmp_path):
    folder = image_dir(tmp_path, "train")
    folder.mkdir()
    (folder / "Thumbs.db").write_bytes(b"\0")
    with pytest.raises(DataError, match="holds no PNG files"):
        OASISDataset(folder)


def test_image_without_mask_and_mask_without_image(fake_root):
    (mask_dir(fake_root, "train") / "seg_002_slice_1.nii.png").unlink()
    with pytest.raises(DataError, match="case_002_slice_1.nii.png.*expected e.g. seg_002_slice_1"):
        split_dataset(fake_root)
    (image_dir(fake_root, "test") / "case_441_slice_0.nii.png").unlink()
    with pytest.raises(DataError, match=r"mask\(s\) in .*seg_test have no image.*seg_441_slice_0"):
        split_dataset(fake_root, "test")


def test_not_a_png(fake_root):
    bad = image_dir(fake_root, "train") / "case_001_slice_1.nii.png"
    bad.write_text("not an image")
    with pytest.raises(DataError, match="case_001_slice_1.nii.png is not a valid PNG"):
        split_dataset(fake_root)
    Image.new("L", (8, 8)).save(bad, format="JPEG")
    with pytest.raises(DataError, match="is a JPEG file, not a PNG"):
        split_dataset(fake_root)


def test_mask_with_values_outside_the_four_classes(fake_root):
    path = mask_dir(fake_root, "train") / "seg_001_slice_2.nii.png"
    values = np.zeros((8, 8), np.uint8)
    values[0, :3] = (100, 3, 85)
    Image.fromarray(values).save(path)
    with pytest.raises(DataError, match=r"seg_001_slice_2.nii.png: mask pixel values 3, 100 "):
        split_dataset(fake_root)
    with pytest.raises(DataError, match="seg_001_slice_2"):  # also found when decoding lazily
        split_dataset(fake_root, cache=False)[2]


def test_images_of_unequal_size(fake_root):
    Image.new("L", (9, 8)).save(image_dir(fake_root, "train") / "case_002_slice_0.nii.png")
    with pytest.raises(DataError, match="differ in size.*8x8.*case_002_slice_0.nii.png is 8x9"):
        split_dataset(fake_root)
    Image.new("L", (9, 8)).save(image_dir(fake_root, "test") / "case_441_slice_0.nii.png")
    Image.new("L", (9, 8)).save(image_dir(fake_root, "test") / "case_441_slice_1.nii.png")
    Image.new("L", (9, 8)).save(image_dir(fake_root, "test") / "case_441_slice_2.nii.png")
    with pytest.raises(DataError, match="mask .*seg_441_slice_0.nii.png is 8x8 but its image"):
        split_dataset(fake_root, "test")


def test_non_grey_pngs_become_grey_with_one_warning(fake_root):
    folder = image_dir(fake_root, "train")
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., :] = 77
    Image.fromarray(rgb).save(folder / "case_001_slice_0.nii.png")
    Image.fromarray(np.dstack([rgb, np.full((8, 8), 9, np.uint8)])).save(
        folder / "case_001_slice_1.nii.png")  # RGBA: alpha dropped
    Image.fromarray(np.full((8, 8), 200 * 257, np.uint16)).save(folder / "case_002_slice_0.nii.png")
    with pytest.warns(UserWarning, match=r"case_001_slice_0.nii.png is a mode 'RGB' PNG") as rec:
        ds = split_dataset(fake_root)
    assert len([w for w in rec if "not 8-bit grey" in str(w.message)]) == 1
    assert ds.images.shape == (6, 8, 8)
    assert (ds.images[0] == 77).all()
    assert (ds.images[1] == 77).all()
    assert (ds.images[3] == 200).all()
    assert ds[0][0].shape == (1, 8, 8)


def test_stray_files_are_ignored(fake_root):
    folder = image_dir(fake_root, "train")
    (folder / "Thumbs.db").write_bytes(b"\0\1")
    (folder / ".DS_Store").write_bytes(b"\0\1")
    (folder / "._case_001_slice_0.nii.png").write_bytes(b"\0\1")  # macOS resource fork
    (folder / "notes").mkdir()
    assert len(split_dataset(fake_root)) == 6


def test_png_with_a_foreign_name_raises(fake_root):
    Image.new("L", (8, 8)).save(image_dir(fake_root, "train") / "preview.png")
    with pytest.raises(DataError, match="do not match the image name pattern.*preview.png"):
        split_dataset(fake_root)


def test_swapped_folders_and_duplicate_ids(fake_root):
    with pytest.raises(DataError, match="image and mask folders swapped"):
        OASISDataset(mask_dir(fake_root, "train"), image_dir(fake_root, "train"))
    Image.new("L", (8, 8)).save(image_dir(fake_root, "train") / "case_1_slice_0.nii.png")
    with pytest.raises(DataError, match="both case 1 slice 0"):
        split_dataset(fake_root)


def test_errors_are_value_errors_and_warnings_clean_for_good_data(fake_root):
    assert issubclass(DataError, ValueError)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_splits(fake_root, with_masks=True)
