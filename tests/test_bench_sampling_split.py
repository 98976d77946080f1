"""benchmarks/bench_sampling_split.py on a tiny latent export: one row per mode and part, the
GFLOP of each part as counted on its own, and the whole sample split into calls, decode, rest."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_sampling_split  # noqa: E402

from oasis_lib.config import TrainConfig  # noqa: E402
from oasis_lib.models.autoencoder import AutoencoderKL  # noqa: E402
from oasis_lib.models.factory import build_pipeline  # noqa: E402


def test_split_table_of_a_tiny_latent_flow(tmp_path, capsys):
    torch.manual_seed(0)
    cfg = TrainConfig.from_preset("tiny", image_size=32, autoencoder="(in memory)",
                                  latent_scale_factor=1.5, precision="fp32", diffusion={
                                      "noise_process": "rectified-flow",
                                      "prediction_type": "velocity", "min_snr_gamma": None})
    pipe = build_pipeline(cfg, autoencoder=AutoencoderKL("tiny").eval(), warn=False).eval()
    path = tmp_path / "tiny_latent.safetensors"
    pipe.save(path)
    out = tmp_path / "split.md"
    bench_sampling_split.main(["--checkpoint", str(path), "--n", "2", "--steps", "3",
                               "--repeats", "1", "--modes", "fp32", "channels_last",
                               "--out", str(out)])
    text = out.read_text()
    rows = [ln for ln in text.splitlines() if re.match(r"\| (fp32|channels_last) \|", ln)]
    assert [r.split("|")[1:3] for r in rows] == [
        [" fp32 ", " network call "], [" fp32 ", " decode "],
        [" channels_last ", " network call "], [" channels_last ", " decode "]]
    assert rows[0].split("|")[4].strip() == "3"  # calls per sample: the steps
    assert "flow-euler" in text.splitlines()[0]
    assert re.search(r"Whole `pipe.sample\(2\)`, fp32: [\d.]+ s; network calls [\d.]+ s", text)
    assert "wrote" in capsys.readouterr().out
