"""benchmarks/bench_decoder.py on a tiny latent export and a light decoder distilled from its
autoencoder (untrained): one cost row per decoder with the GFLOP counted by hand, the
fidelity rows, and a decoder of another autoencoder refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_decoder  # noqa: E402

from oasis_lib.checkpoint import CheckpointError  # noqa: E402
from oasis_lib.config import TrainConfig  # noqa: E402
from oasis_lib.models.autoencoder import AutoencoderKL  # noqa: E402
from oasis_lib.models.factory import build_pipeline  # noqa: E402
from oasis_lib.models.lite_decoder import LiteDecoder  # noqa: E402
from oasis_lib.pretrained import autoencoder_sha256, export_decoder  # noqa: E402


def test_cost_and_fidelity_of_a_tiny_light_decoder(fake_root, tmp_path):
    torch.manual_seed(0)
    ae = AutoencoderKL("tiny").eval()
    cfg = TrainConfig.from_preset("tiny", image_size=32, autoencoder="(in memory)",
                                  latent_scale_factor=1.5, precision="fp32")
    model = build_pipeline(cfg, autoencoder=ae, warn=False).save(tmp_path / "ldm.safetensors",
                                                                 dtype=torch.float32)
    light = LiteDecoder("tiny", latent_scale=1.5)
    lite = export_decoder(light, tmp_path / "lite.safetensors", dtype=torch.float32,
                          autoencoder_sha256=autoencoder_sha256(ae))
    out = tmp_path / "decoder.md"
    bench_decoder.main(["--model", str(model), "--decoder", str(lite), "--data-root",
                        str(fake_root), "--repeats", "1", "--out", str(out)])
    data = json.loads(out.with_suffix(".json").read_text())
    assert list(data["cost"]) == ["full", "light"]
    # the tiny light decoder on a 2 x 64 x 64 latent (256x256 slices): conv_in at 64x64, a
    # Block (2 convs) at 64x64, a sub-pixel conv to 4 x 8 channels at 64x64, a Block at 128x128,
    # a sub-pixel conv to 4 x 1 channels at 128x128
    px0, px1 = 64 * 64, 128 * 128
    by_hand = 2 * 9 * (2 * 8 * px0 + 2 * 8 * 8 * px0 + 8 * 32 * px0 + 2 * 8 * 8 * px1
                       + 8 * 4 * px1)
    assert data["cost"]["light"]["gflop_per_slice"] == pytest.approx(by_hand / 1e9)
    assert data["cost"]["light"]["params"] == sum(p.numel() for p in light.parameters())
    assert data["cost"]["full"]["params"] == sum(p.numel() for p in ae.decoder.parameters())
    assert set(data["fidelity"]) == {"light vs full decoder", "full decoder vs slices",
                                     "light decoder vs slices"}
    assert [(r["decoder"], r["layout"]) for r in data["whole_samples"]] == [
        ("full", "NCHW"), ("light", "NCHW"), ("full", "channels_last"),
        ("light", "channels_last")]
    text = out.read_text()
    assert "| light | " in text
    assert "channels_last" in text
    other = export_decoder(light, tmp_path / "other.safetensors",
                           autoencoder_sha256="0" * 64)
    with pytest.raises(CheckpointError, match="another autoencoder"):
        bench_decoder.main(["--model", str(model), "--decoder", str(other), "--data-root",
                            str(fake_root), "--out", str(out)])
