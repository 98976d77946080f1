"""The conditional U-Net: mask channels into conv_in, slice embedding into the time embedding;
the unconditional network, its state-dict keys and the shipped checkpoint unchanged."""

from __future__ import annotations

import pytest
import torch

from oasis_lib.models.condition_encoding import mask_channels
from oasis_lib.models.conditioning import Condition
from oasis_lib.models.unet import UNet, UNetConfig
from oasis_lib.paths import DEMO_CHECKPOINT, shipped_checkpoint


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-zero weights everywhere (the zero-initialised layers would make every output 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def condition(b=2, size=32, seed=0) -> Condition:
    g = torch.Generator().manual_seed(seed)
    return Condition(mask=torch.randint(0, 4, (b, size, size), generator=g),
                     slice_index=torch.randint(0, 32, (b,), generator=g))


@pytest.mark.parametrize("mask_encoding", ["onehot", "scalar"])
@pytest.mark.parametrize("slice_embedding", ["learned", "sinusoidal"])
def test_conditional_forward_shapes(mask_encoding, slice_embedding):
    net = UNet("tiny", mask_encoding=mask_encoding, slice_embedding=slice_embedding)
    assert net.conv_in.in_channels == 1 + mask_channels(mask_encoding)
    x = torch.randn(2, 1, 32, 32)
    out = net(x, torch.tensor([3, 900]), condition())
    assert out.shape == x.shape
    assert net(x, torch.tensor([3, 900])).shape == x.shape  # None: the null condition


def test_latent_grid_takes_a_pixel_mask():
    """A latent U-Net (4 channels at 8x8) pools a 32x32 pixel mask to its grid."""
    net = randomise(UNet("tiny", image_size=8, in_channels=4, out_channels=4,
                         mask_encoding="onehot"))
    z = torch.randn(2, 4, 8, 8)
    cond = Condition(mask=condition().mask)
    assert net(z, torch.tensor([1, 2]), cond).shape == z.shape


def test_null_condition_is_none_and_differs_from_a_real_one():
    net = randomise(UNet("tiny", mask_encoding="onehot", slice_embedding="learned")).eval()
    x, t, c = torch.randn(2, 1, 32, 32), torch.tensor([5, 50]), condition()
    with torch.no_grad():
        null = net(x, t, c.null_like())
        assert torch.equal(null, net(x, t, None))
        assert torch.equal(null, net(x, t, Condition()))
        assert not torch.allclose(null, net(x, t, c))
        # an all-background mask is a real condition, told apart from the null mask
        background = Condition(mask=torch.zeros(2, 32, 32, dtype=torch.long))
        assert not torch.allclose(net(x, t, background), null)


def test_adding_a_slice_embedding_keeps_the_output_until_trained():
    """The slice table starts at zero: an unconditional net's weights in a slice-conditioned
    net give the same output, for every slice."""
    plain = randomise(UNet("tiny")).eval()
    sliced = UNet("tiny", slice_embedding="learned").eval()
    missing = sliced.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing == ["slice_embed.table.weight"]
    x, t = torch.randn(2, 1, 32, 32), torch.tensor([7, 700])
    with torch.no_grad():
        out = sliced(x, t, Condition(slice_index=torch.tensor([0, 31])))
        assert torch.equal(out, plain(x, t))


def test_unconditional_state_dict_keys_are_unchanged():
    plain, cond = UNet("tiny"), UNet("tiny", mask_encoding="onehot", slice_embedding="learned")
    extra = set(cond.state_dict()) - set(plain.state_dict())
    assert extra == {"slice_embed.table.weight"}
    assert set(plain.state_dict()) <= set(cond.state_dict())


def test_shipped_checkpoint_loads_and_gives_the_same_outputs():
    """Strict loading and the network's maths are unchanged. The golden numbers were first
    computed with the library before conditioning was added (main a29b24c) on the checkpoint of
    that time, and held through every later change; they were recomputed once, on the same
    input, when the checkpoint was retrained on the train split only (session 5)."""
    from oasis_lib.pretrained import load_model

    pipe = load_model(shipped_checkpoint(DEMO_CHECKPOINT.name), device="cpu")
    assert pipe.condition is None
    assert not pipe.model.config.conditional
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = pipe.model(x, torch.tensor([10, 500])).double()
    assert float(y.sum()) == pytest.approx(2449.6132519054227, rel=1e-5)
    assert float(y.abs().sum()) == pytest.approx(6326.936598215252, rel=1e-5)


def test_condition_errors():
    plain = UNet("tiny")
    with pytest.raises(ValueError, match="unconditional"):
        plain(torch.randn(1, 1, 32, 32), torch.tensor([1]), condition(b=1))
    cond = UNet("tiny", mask_encoding="onehot")
    with pytest.raises(ValueError, match="takes a Condition"):
        cond(torch.randn(1, 1, 32, 32), torch.tensor([1]), torch.zeros(1, 4, 32, 32))
    with pytest.raises(ValueError, match="not slice-conditioned"):
        cond(torch.randn(2, 1, 32, 32), torch.tensor([1, 2]), condition())


def test_config_validates_the_condition_fields():
    with pytest.raises(ValueError, match=r"unknown mask_encoding 'binary'; choose one of "
                                         r"\('none', 'onehot', 'scalar'\)"):
        UNetConfig(mask_encoding="binary")
    with pytest.raises(ValueError, match="slice_embedding"):
        UNetConfig(slice_embedding="table")
    with pytest.raises(ValueError, match="cond_channels"):
        UNetConfig(mask_encoding="onehot", cond_channels=2)
    cfg = UNetConfig.preset("tiny", mask_encoding="scalar")
    assert cfg.mask_input_channels == 2
    assert cfg.conditional
    assert not UNetConfig().conditional
    assert UNetConfig().mask_input_channels == 0


@pytest.mark.parametrize("kind", ["learned", "sinusoidal"])
def test_the_memory_probe_runs_conditional_networks_on_the_meta_device(kind):
    from oasis_lib.cli.validate import activation_bytes

    params, total, largest = activation_bytes(UNet("tiny", mask_encoding="onehot",
                                                   slice_embedding=kind), (1, 32, 32))
    plain = activation_bytes(UNet("tiny"), (1, 32, 32))
    assert params > plain[0]
    assert largest == plain[2]
