from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

import oasis_lib.training.precision as precision
from oasis_lib.config import TrainConfig
from oasis_lib.training import Trainer
from oasis_lib.training.precision import bf16_matmul_speedup, cpu_bf16_flags, resolve_precision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from synthetic import BlobSlices  # noqa: E402


def test_explicit_choices_and_errors():
    assert resolve_precision("fp32", "cpu") == (None, "fp32 as configured")
    assert resolve_precision("bf16", "cpu")[0] is torch.bfloat16
    with pytest.raises(ValueError, match="precision 'fp16' needs CUDA"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match=r"unknown precision 'int8'; choose one of \('auto'"):
        resolve_precision("int8", "cpu")


@pytest.mark.parametrize(("flags", "speedup", "dtype", "why"), [
    ((), None, None, "no native bf16"),
    (("avx512_bf16",), 0.4, None, "avx512_bf16 but a bf16 matmul ran at 0.40x fp32"),
    (("avx512_bf16", "amx_bf16"), 6.8, torch.bfloat16, "avx512_bf16/amx_bf16), bf16 matmul 6.8x"),
])
def test_auto_on_cpu_follows_the_processor(monkeypatch, flags, speedup, dtype, why):
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: flags)

    def timed():
        assert speedup is not None, "no timing without native bf16"
        return speedup
    monkeypatch.setattr(precision, "bf16_matmul_speedup", timed)
    got, reason = resolve_precision("auto", "cpu")
    assert got is dtype
    assert why in reason


def test_cpuinfo_fallback_reads_the_flags_line(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert cpu_bf16_flags(info) == ("avx512_bf16",)
    assert cpu_bf16_flags(tmp_path / "missing") == ()


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="needs Linux /proc/cpuinfo")
def test_torch_and_cpuinfo_agree_on_this_machine(monkeypatch):
    from_torch = cpu_bf16_flags()
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    from_file = cpu_bf16_flags()
    assert ("avx512_bf16" in from_torch) == ("avx512_bf16" in from_file)


def test_matmul_timing_is_measured_once():
    first = bf16_matmul_speedup()
    assert first > 0
    assert bf16_matmul_speedup() == first  # cached: the same measurement, not a new one


def test_trainer_uses_and_reports_the_resolved_precision(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    monkeypatch.setattr(precision, "bf16_matmul_speedup", lambda: 3.0)
    cfg = TrainConfig.from_preset("tiny", out_dir=str(tmp_path), image_size=16, precision="auto",
                                  batch_size=4, val_size=4, progress=False, device="cpu")
    data = {"train_set": BlobSlices(8, 16), "val_set": BlobSlices(4, 16, seed=1)}
    trainer = Trainer(cfg, **data)
    assert trainer.amp_dtype is torch.bfloat16
    assert "bf16 autocast" in trainer.precision_reason
    x = torch.stack([data["train_set"][i] for i in range(4)])
    with torch.no_grad(), trainer._autocast():
        assert trainer.model(x, torch.zeros(4, dtype=torch.long)).dtype is torch.bfloat16
    assert math.isfinite(trainer.train_step(x))
    tiny = Trainer(TrainConfig.from_preset("tiny", out_dir=str(tmp_path / "t"), image_size=16,
                                           val_size=4, progress=False), **data)
    assert tiny.amp_dtype is None  # the tiny preset pins fp32: same numbers on every CPU
