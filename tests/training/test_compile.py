"""``compile=True`` with a Condition: the conditional U-Net traces as one graph (no graph
break: the condition's value checks are skipped while torch.compile traces, having run when
the Condition was built) and a compiled training run equals the eager one.

The compiler is dynamo with the ``aot_eager`` backend and ``fullgraph=True``: the graph
capture and the autograd split of the default backend, without inductor's C++ code
generation, which took 350 s of wall-clock for one step on a cold cache on the shared 2-core
CPU (warm: 3 steps in 16 s), too slow for the suite."""

from __future__ import annotations

import pytest
import torch
from synthetic import CondBlobs

from oasis_lib.config import TrainConfig
from oasis_lib.training import Trainer


def _config(out, **over) -> TrainConfig:
    return TrainConfig.from_preset("tiny", out_dir=str(out), image_size=16, max_steps=3,
                                   epochs=100, batch_size=8, validate_every=1, val_size=8,
                                   sample_every=1000, progress=False, condition="mask+slice",
                                   p_uncond=0.5, mask_ablation_p=0.5, **over)


def _data():  # 24 slices in batches of 8: the 3 steps are one epoch, then a validation
    return {"train_set": CondBlobs(24, 16, seed=0), "val_set": CondBlobs(16, 16, seed=1)}


@pytest.mark.slow
def test_conditional_run_compiles_as_one_graph_and_equals_eager(tmp_path, monkeypatch):
    real, compiled = torch.compile, []

    def strict(model, **kw):  # what the Trainer compiles, with every graph break an error
        compiled.append(model)
        return real(model, backend="aot_eager", fullgraph=True)

    torch._dynamo.reset()
    eager = Trainer(_config(tmp_path / "eager"), **_data())
    eager.fit()
    monkeypatch.setattr(torch, "compile", strict)
    comp = Trainer(_config(tmp_path / "compiled", compile=True), **_data())
    comp.fit()
    torch._dynamo.reset()
    assert compiled == [comp.raw_model]
    assert comp.step == eager.step == 3
    a, b = eager.state_dict(), comp.state_dict()
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-5, atol=1e-6,
                                   msg=lambda m, name=name: f"{name}: {m}")
    assert a["best_val_loss"] is not None  # the epoch's validation ran the compiled net too
    assert b["best_val_loss"] == pytest.approx(a["best_val_loss"], rel=1e-5)
