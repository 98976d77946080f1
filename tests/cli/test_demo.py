"""``make demo`` (``python -m oasis_lib demo``) end to end, on a 2-case demo dataset and a tiny
exported model."""

import json
import re

from synthetic import perturbed_export

from oasis_lib.cli import demo
from oasis_lib.diffusion.pipeline import DiffusionPipeline


def test_demo_trains_to_max_steps_and_samples_with_the_benchmarks_sampler(
        demo_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OASIS_DATA", str(demo_root))
    checkpoint = perturbed_export(tmp_path / "tiny.safetensors", "none")
    calls = []
    sample = DiffusionPipeline.sample

    def recorded(self, n, **kwargs):
        calls.append(kwargs)
        return sample(self, n, **kwargs)

    monkeypatch.setattr(DiffusionPipeline, "sample", recorded)
    written = demo.run_demo(tmp_path / "out", train_steps=6, checkpoint=checkpoint)

    assert [p.name for p in written] == ["slices_with_masks.png", "loss_curve.png",
                                         "sample_grid.png", "denoising_strip.png"]
    assert all(p.is_file() for p in written)
    out, err = capsys.readouterr()
    assert "DPM-Solver++(2M), 20 Karras steps" in out
    assert len(calls) == 1
    assert {k: calls[0][k] for k in demo.DEMO_SAMPLER} == {
        "sampler": "dpm++2m", "steps": 20, "spacing": "karras"}
    # The run stops at max_steps, and its one bar counts to it (not to the 1000 epochs).
    log = tmp_path / "out" / "demo_run" / "metrics.jsonl"
    steps = [r["step"] for r in map(json.loads, log.read_text().splitlines()) if "loss" in r]
    assert steps == [2, 4, 6]
    bars = [s for s in re.split(r"[\r\n]+", err) if s.startswith("train:")]
    assert "| 6/6 [" in bars[-1], bars[-1]
