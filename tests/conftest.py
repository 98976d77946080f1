"""Shared data fixtures: tiny fake OASIS folders written with PIL, and a small demo build."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oasis_lib.data import image_dir, mask_dir


def fake_slice(case: int, slice_: int, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """An (image, mask) pair that both encode their case and slice.

    Image row 0: case % 256, case // 256, slice, 0, 255; mask row 0: case * 32 + slice in
    base-4 digits (as PNG values 0/85/170/255). Rows 1+: the mask class is ``column // 2 % 4``
    and the image value ``10 + 30 * class``, so flipping only one of them breaks the relation.
    """
    classes = np.tile((np.arange(size) // 2) % 4, (size, 1)).astype(np.uint8)
    image = (10 + 30 * classes).astype(np.uint8)
    image[0, :5] = (case % 256, case // 256, slice_, 0, 255)
    code = case * 32 + slice_
    classes[0, :7] = [(code // 4**k) % 4 for k in range(7)]
    return image, (classes * 85).astype(np.uint8)


def decode_ids(image, mask) -> tuple[tuple[int, int], tuple[int, int]]:
    """(case, slice) read back from a dataset item (image in [-1, 1], mask classes)."""
    pixels = ((np.asarray(image)[0] + 1) * 127.5).round().astype(int)
    digits = np.asarray(mask)[0, :7].astype(int)
    code = int(sum(d * 4**k for k, d in enumerate(digits)))
    return (int(pixels[0, 0] + 256 * pixels[0, 1]), int(pixels[0, 2])), divmod(code, 32)


def write_fake_split(root: Path, split: str, cases: dict[int, int], *, size: int = 8,
                     masks: bool = True, image_fmt: str = "case_{case:03d}_slice_{slice}",
                     mask_fmt: str = "seg_{case:03d}_slice_{slice}") -> Path:
    """Write ``{case: n_slices}`` into ``root`` in the OASIS layout; returns ``root``."""
    image_dir(root, split).mkdir(parents=True, exist_ok=True)
    if masks:
        mask_dir(root, split).mkdir(parents=True, exist_ok=True)
    for case, n in cases.items():
        for s in range(n):
            image, mask = fake_slice(case, s, size)
            name = image_fmt.format(case=case, slice=s) + ".nii.png"
            Image.fromarray(image).save(image_dir(root, split) / name)
            if masks:
                name = mask_fmt.format(case=case, slice=s) + ".nii.png"
                Image.fromarray(mask).save(mask_dir(root, split) / name)
    return root


@pytest.fixture
def fake_root(tmp_path) -> Path:
    """A complete tiny OASIS tree: train cases 1-2, validate 402, test 441; 3 slices each."""
    write_fake_split(tmp_path, "train", {1: 3, 2: 3})
    write_fake_split(tmp_path, "validate", {402: 3})
    write_fake_split(tmp_path, "test", {441: 3})
    return tmp_path


@pytest.fixture(scope="module")
def oasis32(tmp_path_factory) -> Path:
    """A fake OASIS tree of 32x32 slices: train cases 1-2 (6 slices each), validate 402 (4
    slices), test 441 (2): for tiny latent runs (the tiny autoencoder's latents are 2 x 8 x 8)."""
    root = tmp_path_factory.mktemp("oasis32")
    write_fake_split(root, "train", {1: 6, 2: 6}, size=32)
    write_fake_split(root, "validate", {402: 4}, size=32)
    write_fake_split(root, "test", {441: 2}, size=32)
    return root


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """The demo dataset with 2 train, 1 validate and 1 test case (built once per session)."""
    from oasis_lib.data.demo import build_demo_dataset

    return build_demo_dataset(tmp_path_factory.mktemp("demo"), cases=(2, 1, 1), progress=False)


@pytest.fixture
def write_split():
    """:func:`write_fake_split`, for tests that build their own fake folders."""
    return write_fake_split


@pytest.fixture
def item_ids():
    """:func:`decode_ids`: ((case, slice) from the image, (case, slice) from the mask)."""
    return decode_ids


def assert_error_line(err: str, patterns: list[str]) -> str:
    """The CLI's last stderr line: ``error: ...``, matching every regex of ``patterns``, with
    no traceback and nothing a user should never see (a pickle hint); returns the line."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines, "no message on stderr"
    last = lines[-1]
    assert last.startswith("error: "), err
    for pattern in patterns:
        assert re.search(pattern, last), (pattern, last)
    assert "Traceback" not in err
    assert "weights_only=False" not in err
    return last


def write_eval_root(root: Path, size: int) -> Path:
    """A fake OASIS root for the evaluation CLI's tests: 12 train, 8 validate (cases 402 and
    403) and 4 test slices of ``size`` pixels."""
    write_fake_split(root, "train", {1: 6, 2: 6}, size=size)
    write_fake_split(root, "validate", {402: 4, 403: 4}, size=size)
    write_fake_split(root, "test", {441: 4}, size=size)
    return root
