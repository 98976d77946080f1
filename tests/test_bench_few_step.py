"""benchmarks/bench_few_step.py: the table and goal logic on made-up rows, and one end-to-end run
of a tiny 128x128 latent rectified flow on fake slices (two names for the same file: paired rows
from the same noises must then be identical)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_few_step as B  # noqa: E402

from oasis_lib.checkpoint import export_safetensors  # noqa: E402
from oasis_lib.config import TrainConfig  # noqa: E402
from oasis_lib.evaluation.segmenter import SEGMENTER_KIND, TissueSegmenter  # noqa: E402
from oasis_lib.models.autoencoder import AutoencoderKL  # noqa: E402
from oasis_lib.models.factory import build_pipeline  # noqa: E402

SIZE = 128  # the benchmark scores at 128x128: samples of this size are scored as they are


def _row(model="student", steps=2, ratio=1.05, fp32=3.0, bf16=1.5, reference=False):
    return {"model": model, "steps": steps, "spacing": "trailing", "calls": steps,
            "reference": reference, "frechet": 0.5 * ratio, "frechet_floor": 0.1, "kid": 0.004,
            "kid_floor": 0.001, "frechet_ratio": ratio, "laplacian": 0.8, "laplacian_floor": 1.0,
            "hf_share": 0.7, "hf_share_floor": 1.0, "rms_to_reference": 0.0 if reference else 0.2,
            "texture_size": 256, "seconds_fp32": fp32, "seconds_bf16": bf16}


def test_the_goal_needs_both_the_time_and_the_frechet_ratio():
    assert B.goal(_row(ratio=1.10, bf16=2.0), native_bf16=True) == "met"
    assert B.goal(_row(ratio=1.11, bf16=1.0), native_bf16=True) == "not met"
    assert B.goal(_row(ratio=1.00, bf16=2.01), native_bf16=True) == "not met"
    # without native bf16 the fp32 time counts
    assert B.goal(_row(ratio=1.0, fp32=3.0, bf16=None), native_bf16=False) == "not met"
    assert B.goal(_row(ratio=1.0, fp32=1.9, bf16=None), native_bf16=False) == "met"
    assert B.goal(_row(fp32=None, bf16=None), native_bf16=True) == "not timed"


def test_the_table_has_one_line_per_row_and_says_why_bf16_is_empty():
    rows = [_row("teacher", 20, 1.0, 9.0, None, reference=True), _row("student", 1, 1.3, 0.9,
                                                                      None)]
    for r in rows:
        r["goal"] = B.goal(r, native_bf16=False)
    meta = {"n": 8, "command": "python benchmarks/bench_few_step.py --n 8", "machine": "cpu",
            "bf16_flags": [], "reference": "teacher", "timed": True, "load_before": 1.0,
            "load_after": 2.0}
    text = B.build_table(rows, meta)
    lines = [ln for ln in text.splitlines() if ln.startswith("| teacher") or
             ln.startswith("| student")]
    assert [ln.split("|")[1:3] for ln in lines] == [[" teacher (reference) ", " 20 "],
                                                     [" student ", " 1 "]]
    assert " 1.30x " in lines[1]
    assert " 0.200 " in lines[1]
    assert lines[0].rstrip(" |").endswith(B.NO_BF16)
    assert "- teacher, 20 steps, trailing (reference): not met" in text
    assert "- student, 1 step, trailing: not met" in text  # 0.9 s, but Fréchet 1.3x
    assert "`python benchmarks/bench_few_step.py --n 8`" in text
    assert "before timing 1.00, after 2.00" in text


def test_bad_model_lists_are_refused():
    assert B.parse_models(["a=x.safetensors", "b=y"]) == {"a": "x.safetensors", "b": "y"}
    with pytest.raises(ValueError, match="NAME=FILE"):
        B.parse_models(["x.safetensors"])
    with pytest.raises(ValueError, match="given twice"):
        B.parse_models(["a=x", "a=y"])
    with pytest.raises(SystemExit):
        B.main(["--models", "a=x", "--reference", "b"])


def test_a_decoder_of_an_unknown_model_is_refused(capsys):
    with pytest.raises(SystemExit):
        B.main(["--models", "a=x", "--decoder", "b=lite.safetensors"])
    assert "--decoder names ['b'] are not in --models ('a',)" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_flow(tmp_path_factory):
    """A tiny latent rectified flow at 128x128, exported: untrained, its weights jittered so
    that its velocity is not the zero of a zero-initialised output layer (the step count then
    changes the samples)."""
    torch.manual_seed(0)
    cfg = TrainConfig.from_preset("tiny", image_size=SIZE, autoencoder="(in memory)",
                                  latent_scale_factor=1.5, precision="fp32", diffusion={
                                      "noise_process": "rectified-flow",
                                      "prediction_type": "velocity", "min_snr_gamma": None})
    pipe = build_pipeline(cfg, autoencoder=AutoencoderKL("tiny").eval(), warn=False).eval()
    with torch.no_grad():
        for p in pipe.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("flow") / "tiny_flow.safetensors"
    pipe.save(path)
    return path


@pytest.fixture(scope="module")
def segmenter128(tmp_path_factory):
    torch.manual_seed(0)
    seg = TissueSegmenter(channels=(8, 16), image_size=SIZE).eval()
    path = tmp_path_factory.mktemp("seg") / "seg128.safetensors"
    meta = {"kind": SEGMENTER_KIND, "segmenter": seg.config.to_dict()}
    return export_safetensors(seg.state_dict(), path, config=meta, dtype=torch.float32)


def test_an_end_to_end_run_pairs_every_row_with_the_reference(tiny_flow, segmenter128, tmp_path,
                                                              monkeypatch, write_split):
    root = tmp_path / "data"
    write_split(root, "train", {1: 3, 2: 3}, size=SIZE)
    write_split(root, "validate", {402: 4}, size=SIZE)
    write_split(root, "test", {441: 3}, size=SIZE)
    monkeypatch.setenv("OASIS_DATA", str(root))
    out, grids = tmp_path / "few.md", tmp_path / "grids"
    B.main(["--models", f"a={tiny_flow}", f"b={tiny_flow}", "--steps", "1", "2", "--n", "4",
            "--spacings", "trailing",
            "--reference-steps", "3", "--segmenter128", str(segmenter128), "--skip-timing",
            "--out", str(out), "--grids", str(grids)])
    data = json.loads(out.with_suffix(".json").read_text())
    assert {"command", "machine", "n", "seed", "sampler", "reference", "goal", "timed",
            "bf16_flags", "rows"} <= set(data)
    rows = data["rows"]
    assert [(r["model"], r["steps"], r["reference"]) for r in rows] == [
        ("a", 3, True), ("a", 1, False), ("a", 2, False), ("b", 1, False), ("b", 2, False)]
    assert [r["calls"] for r in rows] == [3, 1, 2, 1, 2]
    ref = rows[0]
    assert ref["rms_to_reference"] == 0.0
    assert ref["frechet_ratio"] == 1.0
    assert all(r["rms_to_reference"] > 0 for r in rows[1:])  # other step counts differ
    # the same file under two names, from the same noises: the same samples, the same scores
    for ra, rb in ((rows[1], rows[3]), (rows[2], rows[4])):
        for key in ("rms_to_reference", "frechet", "kid", "laplacian", "hf_share"):
            assert ra[key] == rb[key], key
    assert all(r["goal"] == "not timed" and r["seconds_fp32"] is None for r in rows
               if "seconds_fp32" in r)
    assert all(r["frechet_ratio"] == pytest.approx(r["frechet"] / ref["frechet"]) for r in rows)
    text = out.read_text()
    assert text.count("\n| a") == 3
    assert text.count("\n| b") == 2
    assert "Not timed (--skip-timing)" in text
    for name in ("a", "b"):
        png = grids / f"{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
        assert png.stat().st_size < B.GRID_MAX_BYTES


def test_the_rows_start_from_the_same_noises(tiny_flow):
    """What pairs the rows: generate_samples with one seed draws the same x_T whatever the
    step count (recorded at the network's first call)."""
    from oasis_lib.evaluation.report import generate_samples
    from oasis_lib.pretrained import load_model

    pipe = load_model(tiny_flow, device="cpu")
    calls: list[torch.Tensor] = []
    hook = pipe.model.register_forward_pre_hook(lambda m, inputs: calls.append(inputs[0].clone()))
    firsts = []
    for steps in (1, 4):
        calls.clear()
        generate_samples(pipe, 2, sampler="flow-euler", steps=steps, seed=0, progress=False)
        assert len(calls) == steps
        firsts.append(calls[0])
    hook.remove()
    assert torch.equal(firsts[0], firsts[1])
