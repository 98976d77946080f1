"""The worked example of a new condition field (issue 22, item 3; docs/INTERFACES.md "Adding a
condition field"): a subject's age, a scalar in years, defined in this one file and registered.

It is then encoded (a small MLP of (age / 100, presence), added to the time embedding like the
slice level's), dropped for classifier-free guidance, read from the data and batched by name,
trained for a step by the Trainer (``condition="age"``) and used in guided sampling, with no
other file changed."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from oasis_lib.config import TrainConfig
from oasis_lib.data.conditional import ConditionalSlices
from oasis_lib.models.condition_encoding import field_inputs
from oasis_lib.models.conditioning import Condition, drop_condition, training_condition
from oasis_lib.models.fields import (
    ConditionField,
    condition_specs,
    get_condition_field,
    parse_condition,
    register_condition_field,
    unregister_condition_field,
)
from oasis_lib.models.fields.base import values_checkable
from oasis_lib.models.unet import UNet, UNetConfig
from oasis_lib.training import Trainer

SIZE = 16


class AgeEmbedding(nn.Module):
    """(age / 100, presence) -> [B, dim]: Linear -> SiLU -> Linear, the last layer at zero (a
    new field leaves a trained network's output unchanged until trained)."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2, dim), nn.SiLU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, code: Tensor) -> Tensor:
        return self.mlp(code.to(self.mlp[0].weight.dtype))


class AgeField(ConditionField):
    """A subject's age in years: float ``[B]`` in [0, 120]; the null age is (0, presence 0)."""

    name = "age"
    kind = "embedding"
    encodings = ("linear",)
    default_encoding = "linear"

    def check(self, value: Tensor) -> None:
        if not isinstance(value, Tensor) or not value.dtype.is_floating_point \
                or value.ndim != 1:
            raise ValueError(f"age must be a float tensor [B] of years, got {value!r}")
        if values_checkable(value) and ((value < 0) | (value > 120)).any():
            raise ValueError(f"age must be in 0..120 years; found {value.tolist()}")

    def collate(self, values) -> Tensor:
        return super().collate(values).float().reshape(-1)

    def embedding(self, dim: int, encoding: str) -> nn.Module:
        return AgeEmbedding(dim)

    def encode(self, value, present, *, encoding, batch_size, size, device, **options):
        if value is None:
            return torch.zeros(batch_size, 2, device=device)
        flag = torch.ones_like(value) if present is None else present.to(value.dtype)
        return torch.stack([value / 100 * flag, flag], dim=1).to(device)


def _randomise(net: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for p in net.parameters():
        p.add_(0.1 * torch.randn(p.shape, generator=g))


@pytest.fixture
def age():
    field = register_condition_field(AgeField())
    yield field
    unregister_condition_field("age")


class AgedBlobs(Dataset):
    """Dict items ``{"image", "age"}``: a blob whose brightness grows with the age."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.ages = torch.rand(n, generator=g) * 80 + 20
        yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
        blob = (((yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2) < (SIZE / 3) ** 2).float()
        self.images = (blob * self.ages[:, None, None] / 100 * 2 - 1)[:, None]

    def __len__(self) -> int:
        return len(self.ages)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "age": self.ages[i]}


def test_the_registry_knows_the_field_only_while_registered(age):
    assert get_condition_field("age") is age
    assert condition_specs() == ("none", "mask", "slice", "age", "mask+slice", "mask+age",
                                 "slice+age", "mask+slice+age")
    assert parse_condition("mask+age") == (get_condition_field("mask"), age)
    with pytest.raises(ValueError, match="already registered"):
        register_condition_field(AgeField())
    with pytest.raises(ValueError, match=r"unknown condition 'age\+mask'; choose one of"):
        parse_condition("age+mask")
    with pytest.raises(ValueError, match="age must be in 0..120"):
        Condition(age=torch.tensor([130.0]))
    unregister_condition_field("age")
    with pytest.raises(ValueError, match=r"unknown condition field 'age'; choose one of "
                                         r"\('mask', 'slice'\)"):
        get_condition_field("age")
    with pytest.raises(ValueError, match="unknown Condition keyword 'age'"):
        Condition(age=torch.tensor([30.0]))
    register_condition_field(age)  # (for the fixture's teardown)


def test_age_is_encoded_and_dropped_for_guidance(age):
    cond = Condition(age=torch.tensor([30.0, 70.0]))
    assert cond.fields == ("age",)
    assert cond.batch_size == 2
    x = torch.zeros(2, 1, SIZE, SIZE)
    code = field_inputs(cond, x, {"age": "linear"})["age"]
    torch.testing.assert_close(code, torch.tensor([[0.3, 1.0], [0.7, 1.0]]))
    null = cond.null_like()  # the unconditional twin of classifier-free guidance
    assert null.present("age").tolist() == [False, False]
    assert torch.equal(field_inputs(null, x, {"age": "linear"})["age"], torch.zeros(2, 2))
    assert torch.equal(field_inputs(None, x, {"age": "linear"})["age"], torch.zeros(2, 2))
    both = Condition.cat([cond, null])
    assert both.present("age").tolist() == [True, True, False, False]
    dropped = drop_condition(cond, 1.0, generator=torch.Generator().manual_seed(0))
    assert not dropped.present("age").any()
    kept = training_condition(cond, p_uncond=0.0, ablation_p=0.5)  # (no ablation for an age)
    assert torch.equal(kept.age, cond.age)
    assert kept.present("age").all()
    with pytest.raises(ValueError, match="not age-conditioned"):
        field_inputs(cond, x, {"slice": "learned"})


def test_a_unet_takes_the_age_next_to_the_mask(age):
    cfg = UNetConfig.preset("tiny", image_size=SIZE, mask_encoding="onehot",
                            extra_conditions=("age:linear",))
    assert cfg.condition_encodings == {"mask": "onehot", "age": "linear"}
    net = UNet(cfg)
    assert net.conv_in.in_channels == 1 + 4  # the mask's channels; the age is an embedding
    assert "age_embed.mlp.2.weight" in net.state_dict()
    mask = torch.randint(0, 4, (2, SIZE, SIZE), generator=torch.Generator().manual_seed(0))
    x, t = torch.randn(2, 1, SIZE, SIZE), torch.tensor([3, 7])
    with torch.no_grad():
        _randomise(net)
        young = net(x, t, Condition(mask=mask, age=torch.tensor([20.0, 20.0])))
        old = net(x, t, Condition(mask=mask, age=torch.tensor([90.0, 90.0])))
    assert not torch.allclose(young, old)  # the age reaches the output
    with pytest.raises(ValueError, match="extra_conditions entries"):
        UNetConfig.preset("tiny", extra_conditions=("age",))
    with pytest.raises(ValueError, match="is set by mask_encoding"):
        UNetConfig.preset("tiny", extra_conditions=("mask:onehot",))


def test_age_is_read_batched_trained_and_guided(age, tmp_path):
    data = ConditionalSlices(AgedBlobs(16, seed=0), {"age": age.read})
    batch = next(iter(DataLoader(data, batch_size=4)))
    assert sorted(batch) == ["age", "image"]
    assert batch["age"].shape == (4,)
    assert torch.equal(age.read(AgedBlobs(16, seed=0)), AgedBlobs(16, seed=0).ages)

    cfg = TrainConfig.from_preset(
        "tiny", out_dir=str(tmp_path), image_size=SIZE, condition="age", max_steps=3,
        epochs=10, batch_size=8, validate_every=1, val_size=8, sample_every=1000,
        checkpoint_every=1000, progress=False, p_uncond=0.2, diffusion={"timesteps": 20})
    trainer = Trainer(cfg, train_set=AgedBlobs(16, seed=0), val_set=AgedBlobs(8, seed=1))
    start = trainer.raw_model.age_embed.mlp[2].weight.detach().clone()
    seen, loss = [], trainer.pipeline.loss

    def spy(x0, **kw):
        if torch.is_grad_enabled():  # a training step (validation runs under no_grad)
            seen.append(kw["condition"])
        return loss(x0, **kw)

    trainer.pipeline.loss = spy
    result = trainer.fit()
    del trainer.pipeline.loss
    assert result.step == 3
    assert len(seen) == 3
    train_ages = set(AgedBlobs(16, seed=0).ages.tolist())
    assert all(set(c.age.tolist()) <= train_ages and len(c.age) == 8 for c in seen)
    # (the zero-initialised output layers let the gradient reach the embedding at step 3)
    assert torch.equal(trainer.val_cond.age, AgedBlobs(8, seed=1).ages)
    assert not torch.equal(trainer.raw_model.age_embed.mlp[2].weight, start)  # trained

    pipe = trainer.pipeline.eval()
    with torch.no_grad():
        _randomise(pipe.model)  # away from the zero-initialised layers: the age matters
    noise = torch.randn(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))

    def draw(years, scale):
        return pipe.sample(2, steps=3, x_T=noise, progress=False, guidance_scale=scale,
                           condition=Condition(age=torch.tensor([years])))

    assert not torch.allclose(draw(25.0, 3.0), draw(85.0, 3.0))  # guided by the age
    torch.testing.assert_close(draw(25.0, 0.0), draw(85.0, 0.0))  # s = 0: unconditional
    with pytest.raises(ValueError, match="takes no mask"):
        pipe.sample(1, steps=2, progress=False,
                    condition=Condition(mask=torch.zeros(1, SIZE, SIZE, dtype=torch.long)))
