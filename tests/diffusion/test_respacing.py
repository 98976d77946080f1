"""Respacing (Nichol & Dhariwal 2021 sec. 4): the K-step process has the training process's
marginals at its steps, all T steps give the original back, and RePaint runs on it."""

from __future__ import annotations

import pytest
import torch
from test_conditional_pipeline import SIZE, T, conditional_pipeline, gen  # noqa: I001

from oasis_lib.diffusion.inpainting import border_step, repaint_timesteps
from oasis_lib.diffusion.respacing import RespacedModel, RespacedSchedule, _buffers, respace
from oasis_lib.diffusion.schedule import _BUFFERS, NoiseSchedule


@pytest.mark.parametrize(("kind", "zero"), [("cosine", False), ("linear", False),
                                             ("cosine", True)])
def test_all_steps_reproduce_every_buffer(kind, zero):
    base = NoiseSchedule(kind, 100, zero_terminal_snr=zero, warn=False)
    full = RespacedSchedule(base, list(range(100)))
    for name in _BUFFERS:
        torch.testing.assert_close(full.f64(name), base.f64(name), rtol=1e-9, atol=1e-12,
                                   msg=name)
    assert set(_buffers(base.f64("betas"))) == set(_BUFFERS)


def test_marginals_are_the_training_marginals_at_the_chosen_steps():
    base = NoiseSchedule("cosine", 1000)
    s = respace(base, 20)
    assert s.T == 20
    assert s.timestep_map.tolist()[-1] == 999
    assert s.timestep_map[0] == 49
    torch.testing.assert_close(s.f64("alpha_bar"), base.f64("alpha_bar")[s.timestep_map],
                               rtol=1e-9, atol=0)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn((20, 1, 4, 4), generator=g), torch.randn((20, 1, 4, 4), generator=g)
    k = torch.arange(20)
    torch.testing.assert_close(s.q_sample(x0, k, noise),
                               base.q_sample(x0, s.timestep_map[k], noise))
    # one respaced forward step from k-1 to k is the jump of the base process between them
    ab = base.f64("alpha_bar")
    torch.testing.assert_close(s.f64("alphas")[5], ab[s.timestep_map[5]] / ab[s.timestep_map[4]])


def test_respaced_schedule_is_not_its_base():
    base = NoiseSchedule("cosine", 100)
    s = respace(base, 10)
    assert s != base
    assert s == respace(base, 10)
    assert hash(s) == hash(respace(base, 10))
    assert "10 of the 100 steps" in repr(s)


def test_respaced_model_asks_the_network_at_its_own_steps():
    seen = []
    net = RespacedModel(lambda x, t: seen.append(t.clone()) or x, torch.tensor([3, 7, 11]))
    net(torch.zeros(2, 1, 2, 2), torch.tensor([0, 2]))
    assert seen[0].tolist() == [3, 11]


def test_bad_timesteps_raise():
    base = NoiseSchedule("cosine", 10)
    with pytest.raises(ValueError, match="distinct"):
        RespacedSchedule(base, [1, 1, 2])
    with pytest.raises(ValueError, match=r"in 0\.\.9"):
        RespacedSchedule(base, [0, 10])


def test_inpaint_on_all_steps_is_plain_repaint_and_fewer_steps_keep_the_known_part():
    pipe = conditional_pipeline()
    g = torch.Generator().manual_seed(1)
    image = torch.rand((2, 1, SIZE, SIZE), generator=g) * 2 - 1
    region = torch.zeros(SIZE, SIZE)
    region[4:10, 5:12] = 1
    plain = pipe.inpaint(image, region, generator=gen(), progress=False)
    same = pipe.inpaint(image, region, steps=T, generator=gen(), progress=False)
    torch.testing.assert_close(plain, same, rtol=0, atol=0)
    calls = []
    hook = pipe.model.register_forward_hook(lambda m, i, o: calls.append(int(i[1][0])))
    fast = pipe.inpaint(image, region, steps=5, jump_length=2, resample=3, generator=gen(),
                        progress=False)
    hook.remove()
    keep = region == 0
    torch.testing.assert_close(fast[:, :, keep], image[:, :, keep], rtol=0, atol=0)
    assert not torch.equal(fast[:, :, ~keep], plain[:, :, ~keep])
    steps = respace(pipe.schedule, 5).timestep_map.tolist()
    down = [h for h, nxt in zip(repaint_timesteps(5, jump_length=2, resample=3)[:-1],
                                repaint_timesteps(5, jump_length=2, resample=3)[1:],
                                strict=True) if nxt < h]
    assert calls == [steps[h] for h in down]  # the network only ever sees training steps


def test_border_step_closed_forms():
    region = torch.zeros(6, 6)
    region[2:4, 2:4] = 1  # a 2x2 block: 8 neighbour pairs cross its border
    inside = region[None, None] * 1.5
    ramp = torch.arange(6.0).expand(6, 6)[None, None]  # +1 per column
    out = border_step(torch.cat([inside, torch.zeros(1, 1, 6, 6), ramp]), region)
    torch.testing.assert_close(out, torch.tensor([1.5, 0.0, 0.5]))  # ramp: 4 of 8 pairs differ
    assert border_step(inside, torch.zeros(6, 6)).tolist() == [0.0]
