"""The tissue segmenter: Dice and tissue fractions by hand, shapes, determinism, the shipped
weights on demo validate slices, loading errors, and a tiny training run."""

from __future__ import annotations

import pytest
import torch
from synthetic import BlobSlices
from torch.utils.data import Dataset

from oasis_lib.checkpoint import CheckpointError, export_safetensors
from oasis_lib.cli import build_parser, main
from oasis_lib.data import load_split
from oasis_lib.evaluation.segmenter import (
    SEGMENTER_CHECKPOINT,
    SegmenterConfig,
    TissueSegmenter,
    dice_per_class,
    load_segmenter,
    tissue_fractions,
    train_segmenter,
)
from oasis_lib.pretrained import DEMO_CHECKPOINT


class BlobsWithMasks(Dataset):
    """:class:`BlobSlices` with a mask: three tissue rings by brightness, background outside."""

    def __init__(self, n: int, size: int, seed: int) -> None:
        self.images = BlobSlices(n, size, seed).images
        self.masks = torch.bucketize(self.images[:, 0], torch.tensor([-0.9, -0.2, 0.5]))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.masks[i]


# ---------------------------------------------------------------- metrics by hand
def test_dice_of_identical_and_disjoint_masks():
    mask = torch.tensor([[[0, 1], [2, 3]]])
    assert torch.equal(dice_per_class(mask, mask), torch.ones(4))
    pred, target = torch.tensor([[0, 0], [1, 1]]), torch.tensor([[2, 2], [3, 3]])
    # classes 0, 1 only in pred, 2, 3 only in target: no overlap anywhere
    assert torch.equal(dice_per_class(pred, target), torch.zeros(4))


def test_dice_partial_overlap_and_empty_classes():
    pred = torch.tensor([[1, 1, 1, 0],
                         [0, 0, 0, 0]])
    target = torch.tensor([[1, 1, 0, 0],
                           [1, 0, 0, 0]])
    # class 1: |A| = 3, |B| = 3, |A n B| = 2 -> 4/6; class 0: |A| = 5, |B| = 5, overlap 4 -> 8/10
    # classes 2 and 3 appear in neither mask -> 1.0 by definition
    expected = torch.tensor([0.8, 4 / 6, 1.0, 1.0])
    assert torch.allclose(dice_per_class(pred, target), expected)
    assert dice_per_class(pred, target, num_classes=2).shape == (2,)
    with pytest.raises(ValueError, match="differ"):
        dice_per_class(pred, target[:1])


def test_tissue_fractions_by_hand():
    masks = torch.tensor([[[0, 1, 2, 2],
                           [3, 3, 3, 0]],
                          [[0, 0, 0, 0],
                           [0, 0, 0, 0]]])
    fractions = tissue_fractions(masks)
    # slice 0: 6 brain pixels: 1 CSF, 2 grey, 3 white; slice 1: no brain -> zeros
    assert torch.allclose(fractions, torch.tensor([[1 / 6, 2 / 6, 3 / 6], [0.0, 0.0, 0.0]]))
    assert fractions.dtype == torch.float32
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        tissue_fractions(masks[0])


# ---------------------------------------------------------------- the network
def test_shapes_features_and_determinism():
    torch.manual_seed(0)
    model = TissueSegmenter()
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    x = torch.rand(3, 1, 64, 64) * 2 - 1
    assert model(x).shape == (3, 4, 64, 64)
    pred = model.predict(x)
    assert pred.shape == (3, 64, 64)
    assert pred.dtype == torch.long
    feats = model.features(x)
    assert feats.shape == (3, model.config.feature_dim) == (3, 160)
    assert feats.dtype == torch.float32
    assert not feats.requires_grad
    assert torch.equal(feats, model.features(x))
    # no BatchNorm or dropout: the same in train mode, and each image on its own
    model.train()
    assert torch.allclose(model.features(x), feats)
    assert torch.allclose(model.features(x[1:2]), feats[1:2], atol=1e-5)
    with pytest.raises(ValueError, match="multiple of 8"):
        model(torch.zeros(1, 1, 60, 60))
    with pytest.raises(ValueError, match="norm_groups"):
        SegmenterConfig(channels=(6, 16, 32, 128))


def test_shipped_weights_segment_demo_validate_slices(demo_root):
    assert SEGMENTER_CHECKPOINT.parts[-2:] == ("checkpoints", "segmenter_demo64.safetensors")
    assert SEGMENTER_CHECKPOINT.stat().st_size < 2**20
    model = load_segmenter(device="cpu")
    assert not model.training
    assert model.metadata["image_size"] == 64
    val = load_split("validate", demo_root, 64, with_masks=True)
    items = [val[i] for i in range(4, 28, 3)]  # 8 slices from the cerebellum top to the cortex
    x, target = torch.stack([im for im, _ in items]), torch.stack([m for _, m in items])
    dice = dice_per_class(model.predict(x), target)
    assert dice[0] > 0.97  # background
    assert dice[2] > 0.8  # grey matter
    assert dice[3] > 0.8  # white matter
    assert dice[1] > 0.5  # CSF: thin at 64x64


def test_loading_a_wrong_file_raises_a_clear_error(tmp_path):
    missing = tmp_path / "nothing.safetensors"
    with pytest.raises(CheckpointError, match="not found: .*nothing.safetensors"):
        load_segmenter(missing)
    with pytest.raises(CheckpointError, match="not a tissue segmenter.*diffusion model"):
        load_segmenter(DEMO_CHECKPOINT)
    # metadata of the default segmenter, weights of a narrower one
    narrow = TissueSegmenter(channels=(8, 16, 32, 64)).state_dict()
    bad = tmp_path / "bad.safetensors"
    export_safetensors(narrow, bad, config={"kind": "tissue_segmenter",
                                            "segmenter": SegmenterConfig().to_dict()})
    with pytest.raises(CheckpointError, match="bad.safetensors does not match.*shape"):
        load_segmenter(bad)


# ---------------------------------------------------------------- training
def test_one_epoch_on_synthetic_blobs_writes_a_loadable_file(tmp_path):
    out = tmp_path / "seg.safetensors"
    kwargs = dict(image_size=16, epochs=1, batch_size=8, seed=3, progress=False,
                  train_set=BlobsWithMasks(16, 16, seed=0), val_set=BlobsWithMasks(4, 16, seed=1))
    metrics = train_segmenter(out=out, **kwargs)
    assert set(metrics["dice"]) == {"background", "csf", "grey_matter", "white_matter"}
    assert len(metrics["history"]) == 1
    assert "train-segmenter --size 16 --epochs 1" in metrics["command"]
    model = load_segmenter(out, device="cpu")
    assert model.config.image_size == 16
    assert model.metadata["validate_dice"] == metrics["dice"]
    assert model.predict(torch.zeros(2, 1, 16, 16)).shape == (2, 16, 16)
    # a fixed seed gives the same weights
    again = tmp_path / "again.safetensors"
    train_segmenter(out=again, **kwargs)
    other = load_segmenter(again, device="cpu").state_dict()
    assert all(torch.equal(v, other[k]) for k, v in model.state_dict().items())


def test_training_recipe_golden_losses():
    # fixed seed: the per-epoch losses of the recipe (evaluation.fitting, with its per-batch
    # bar), as measured before the loop was shared with the slice regressor
    m = train_segmenter(out=None, image_size=16, epochs=2, batch_size=8, seed=3, progress=False,
                        train_set=BlobsWithMasks(16, 16, seed=0),
                        val_set=BlobsWithMasks(4, 16, seed=1))
    assert [h["loss"] for h in m["history"]] == pytest.approx([2.10041, 1.92619], rel=1e-3)


def test_cli_train_segmenter(fake_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train-segmenter", "--help"])
    assert exit_info.value.code == 0
    assert "--epochs" in capsys.readouterr().out
    out = tmp_path / "seg.safetensors"
    assert main(["train-segmenter", "--data", str(fake_root), "--size", "16", "--epochs", "1",
                 "--batch-size", "4", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "validate Dice: background" in printed
    assert "white_matter" in printed
    assert load_segmenter(out, device="cpu").metadata["training"]["epochs"] == 1
