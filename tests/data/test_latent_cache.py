"""Latent cache: a hit on the second run, a miss whenever the weights or the data change."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from oasis_lib.data import OASISDataset
from oasis_lib.data.latent_cache import (
    autoencoder_hash,
    cached_latents,
    dataset_manifest,
    encode_dataset,
)
from oasis_lib.models.autoencoder import AutoencoderKL


@pytest.fixture
def setup(tmp_path, write_split):
    root = write_split(tmp_path / "data", "train", {1: 3, 2: 2}, size=8)
    torch.manual_seed(0)
    ae = AutoencoderKL("tiny")

    def dataset():
        return OASISDataset(root / "keras_png_slices_train")
    return root, ae, dataset, tmp_path / "cache"


def test_second_run_hits_and_matches_a_fresh_encoding(setup):
    _, ae, dataset, cache = setup
    first = cached_latents(ae, dataset(), cache)
    second = cached_latents(ae, dataset(), cache)
    assert not first.hit
    assert second.hit
    assert second.path == first.path
    assert second.latents.shape == (5, 2, 2, 2)
    torch.testing.assert_close(second.latents, first.latents, rtol=0, atol=0)
    torch.testing.assert_close(second.latents, encode_dataset(ae, dataset()))
    assert first.path.with_suffix(".json").is_file()


def test_miss_on_changed_weights_but_not_on_scale_factor(setup):
    _, ae, dataset, cache = setup
    first = cached_latents(ae, dataset(), cache)
    ae.scale_factor.fill_(0.3)
    assert cached_latents(ae, dataset(), cache).hit  # latents are stored unscaled
    with torch.no_grad():
        ae.encoder.conv_in.bias[0] += 1e-3
    changed = cached_latents(ae, dataset(), cache)
    assert not changed.hit
    assert changed.key != first.key
    assert not torch.equal(changed.latents, first.latents)
    assert autoencoder_hash(ae) != autoencoder_hash(AutoencoderKL("tiny"))


def test_miss_on_a_changed_or_added_data_file(setup, write_split):
    root, ae, dataset, cache = setup
    first = cached_latents(ae, dataset(), cache)
    path = root / "keras_png_slices_train" / "case_001_slice_0.nii.png"
    pixels = np.asarray(Image.open(path)).copy()
    pixels[4, 4] ^= 1  # one pixel, same size on disk likely: the byte hash must catch it
    Image.fromarray(pixels).save(path)
    changed = cached_latents(ae, dataset(), cache)
    assert not changed.hit
    assert changed.key != first.key
    write_split(root, "train", {3: 1}, size=8)
    added = cached_latents(ae, dataset(), cache)
    assert not added.hit
    assert added.latents.shape[0] == 6
    assert cached_latents(ae, dataset(), cache).hit


def test_manifest_is_relative_and_knows_size_and_split(setup):
    root, _, dataset, _ = setup
    manifest = dataset_manifest(dataset())
    (part,) = manifest["parts"]
    assert part["split"] == "train"
    assert part["image_size"] == [8, 8]
    name, size, digest = part["files"][0]
    assert name == "keras_png_slices_train/case_001_slice_0.nii.png"
    assert size == (root / name).stat().st_size
    assert len(digest) == 64
    resized = OASISDataset(root / "keras_png_slices_train", image_size=4)
    assert dataset_manifest(resized)["parts"][0]["image_size"] == [4, 4]


def test_sampled_latents_need_a_seed_and_are_keyed_by_it(setup):
    _, ae, dataset, cache = setup
    with pytest.raises(ValueError, match="needs seed"):
        cached_latents(ae, dataset(), cache, use="sample")
    with pytest.raises(ValueError, match="choose one of \\('mean', 'sample'\\)"):
        cached_latents(ae, dataset(), cache, use="mode")
    a = cached_latents(ae, dataset(), cache, use="sample", seed=1)
    b = cached_latents(ae, dataset(), cache, use="sample", seed=2)
    assert a.key != b.key
    assert cached_latents(ae, dataset(), cache, use="sample", seed=1).hit
    mean = cached_latents(ae, dataset(), cache)
    assert not torch.equal(a.latents, mean.latents)


def test_hash_sees_scalar_buffers_and_dtype():
    m = torch.nn.Module()
    m.register_buffer("level", torch.tensor(2.0))
    before = autoencoder_hash(m)
    m.level.fill_(3.0)
    assert autoencoder_hash(m) != before
    m.level = m.level.double().fill_(2.0)
    assert autoencoder_hash(m) != before  # same value, other dtype
