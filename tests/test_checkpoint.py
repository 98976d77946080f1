import pytest
import torch

from oasis_lib.checkpoint import (
    CheckpointError,
    atomic_save,
    export_safetensors,
    get_rng_state,
    load_checkpoint,
    load_safetensors,
    load_state_strict,
    set_rng_state,
)
from oasis_lib.models.unet import UNet, UNetConfig


def test_atomic_save_round_trip_with_weights_only(tmp_path):
    obj = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "config": {"a": 1}, "step": 7}
    path = atomic_save(obj, tmp_path / "last.pt")
    back = load_checkpoint(path)
    assert back["step"] == 7
    assert torch.equal(back["model"]["w"], obj["model"]["w"])
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp files left


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"model": {"w": torch.ones(3)}, "config": {}, "step": 1}, path)

    def crash(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("disk pulled out mid-write")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="mid-write"):
        atomic_save({"model": {"w": torch.zeros(3)}, "config": {}, "step": 2}, path)
    monkeypatch.undo()
    back = load_checkpoint(path)
    assert back["step"] == 1
    assert torch.equal(back["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_truncated_or_foreign_files_give_clear_errors(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*broken.pt"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="checkpoint not found: .*missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an oasis_lib training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_architecture_mismatch_names_the_keys():
    small = UNet(UNetConfig.preset("tiny"))
    wider = UNet(UNetConfig.preset("tiny", base_channels=32))
    with pytest.raises(CheckpointError, match="shape mismatches: .*checkpoint .* vs model"):
        load_state_strict(wider, small.state_dict())
    state = dict(small.state_dict())
    state["extra.weight"] = torch.ones(1)
    first = next(iter(state))
    del state[first]
    with pytest.raises(CheckpointError, match=f"missing keys: {first}.*unexpected keys: extra"):
        load_state_strict(small, state)


def test_rng_state_round_trip_restores_every_stream():
    import random

    import numpy as np

    g = torch.Generator().manual_seed(3)
    state = get_rng_state(g)
    first = (random.random(), np.random.rand(),  # noqa: NPY002 (the legacy stream)
                torch.rand(1).item(), torch.rand(1, generator=g))
    set_rng_state(state, g)
    again = (random.random(), np.random.rand(),  # noqa: NPY002 (the legacy stream)
                torch.rand(1).item(), torch.rand(1, generator=g))
    assert first[:3] == again[:3]
    assert torch.equal(first[3], again[3])


def test_safetensors_export_is_fp16_and_carries_config(tmp_path):
    model = UNet(UNetConfig.preset("tiny"))
    path = export_safetensors(model.state_dict(), tmp_path / "ema.safetensors",
                              config={"preset": "tiny"})
    tensors, cfg = load_safetensors(path)
    assert cfg == {"preset": "tiny"}
    assert all(t.dtype == torch.float16 for t in tensors.values())
    ref = model.state_dict()
    for k, v in tensors.items():
        torch.testing.assert_close(v.float(), ref[k], atol=1e-3, rtol=1e-3)
