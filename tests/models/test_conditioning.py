"""The condition as data: validation, mask encodings and pooling, ablation, dropout, slices."""

from __future__ import annotations

import re

import pytest
import torch

from oasis_lib.models.condition_encoding import (
    MASK_ENCODINGS,
    SLICE_EMBEDDINGS,
    SliceEmbedding,
    condition_inputs,
    decode_mask,
    encode_mask,
    mask_channels,
)
from oasis_lib.models.conditioning import (
    NULL_SLICE,
    Condition,
    ablate_classes,
    drop_condition,
    slice_tokens,
    training_condition,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _mask(b=3, h=8, w=8, seed=0):
    return torch.randint(0, 4, (b, h, w), generator=_gen(seed))


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mask": torch.full((2, 4, 4), 4)}, r"classes in \{0, 1, 2, 3\}.*found \[4\]"),
        ({"mask": torch.full((2, 4, 4), -1)}, r"found \[-1\]"),
        ({"mask": torch.tensor([[[0, 85], [170, 255]]])}, "PNG grey levels.*divide by 85"),
        ({"mask": torch.zeros(2, 4, 4)}, "integer.*float32"),
        ({"mask": torch.zeros(2, 1, 4, 4, dtype=torch.long)}, r"shape \[B, H, W\], got \(2, 1"),
        ({"slice_index": torch.tensor([3, 32])}, r"0\.\.31; found \[32\]"),
        ({"slice_index": torch.tensor([-1])}, r"0\.\.31; found \[-1\]"),
        ({"slice_index": torch.tensor([1.0])}, "integer"),
        ({"slice_index": torch.tensor([[1]])}, r"shape \[B\]"),
        ({"mask": torch.zeros(2, 4, 4, dtype=torch.long), "slice_index": torch.tensor([1])},
         "batch size 2 but slice_index has 1"),
        ({"mask_present": torch.tensor([True])}, "mask_present given without mask"),
        ({"slice_index": torch.tensor([1, 2]), "slice_present": torch.tensor([1, 0])},
         "bool tensor of shape"),
    ],
)
def test_condition_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Condition(**kwargs)


def test_condition_accepts_good_input_and_reports_presence():
    m = _mask(b=2)
    c = Condition(mask=m, slice_index=torch.tensor([0, 31]))
    assert c.batch_size == 2
    assert c.present("mask").tolist() == [True, True]
    null = c.null_like()
    assert null.present("mask").tolist() == [False, False]
    assert slice_tokens(null).tolist() == [NULL_SLICE, NULL_SLICE]
    assert slice_tokens(c).tolist() == [0, 31]
    assert slice_tokens(Condition(mask=m)).tolist() == [NULL_SLICE, NULL_SLICE]
    both = Condition.cat([c, null])
    assert both.batch_size == 4
    assert both.present("slice").tolist() == [True, True, False, False]
    assert torch.equal(both.mask[:2], m)
    with pytest.raises(ValueError, match="same fields"):
        Condition.cat([c, Condition(mask=m)])
    with pytest.raises(ValueError, match="unknown condition field"):
        c.present("age")


# --------------------------------------------------------------------------- encodings
@pytest.mark.parametrize("encoding", MASK_ENCODINGS)
def test_encoding_shapes_and_round_trip(encoding):
    m = _mask(b=4, h=8, w=6)
    channels = encode_mask(m, encoding=encoding)
    assert channels.shape == (4, mask_channels(encoding), 8, 6)
    assert mask_channels(encoding) == (4 if encoding == "onehot" else 2)
    assert torch.equal(channels[:, -1], torch.ones(4, 8, 6))  # presence channel
    assert torch.equal(decode_mask(channels, encoding=encoding), m)


def test_onehot_channels_are_the_tissue_indicators_and_scalar_is_class_over_3():
    m = torch.tensor([[[0, 1], [2, 3]]])
    onehot = encode_mask(m, encoding="onehot")
    for k, cls in enumerate((1, 2, 3)):
        assert torch.equal(onehot[0, k], (m[0] == cls).float())
    scalar = encode_mask(m, encoding="scalar")
    torch.testing.assert_close(scalar[0, 0], torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]))


@pytest.mark.parametrize("encoding", MASK_ENCODINGS)
def test_null_mask_is_distinct_from_an_all_background_mask(encoding):
    m = torch.zeros(2, 4, 4, dtype=torch.long)  # a real, all-background mask
    real = encode_mask(m, encoding=encoding)
    null = encode_mask(m, encoding=encoding, present=torch.tensor([True, False]))
    assert torch.equal(null[0], real[0])
    assert torch.equal(null[1], torch.zeros_like(null[1]))
    assert not torch.equal(real[1], null[1])  # told apart by the presence channel
    empty = encode_mask(None, encoding=encoding, batch_size=2, size=4)
    assert torch.equal(empty, torch.zeros(2, mask_channels(encoding), 4, 4))
    with pytest.raises(ValueError, match="needs batch_size and size"):
        encode_mask(None, encoding=encoding)


def test_area_pooling_gives_tissue_fractions_and_majority_decodes():
    # 8x8 mask, 4x4 cells -> 2x2 latent grid; cell (0, 0) holds 4 CSF pixels out of 16
    m = torch.zeros(1, 8, 8, dtype=torch.long)
    m[0, :2, :2] = 1
    m[0, :4, 4:] = 2  # cell (0, 1) all grey
    m[0, 4:, :] = 3  # bottom cells all white
    pooled = encode_mask(m, size=2)  # default for one-hot: area
    assert pooled.shape == (1, 4, 2, 2)
    torch.testing.assert_close(pooled[0, 0, 0, 0], torch.tensor(0.25))  # CSF fraction
    torch.testing.assert_close(pooled[0, :, 0, 1], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert torch.equal(pooled[0, -1], torch.ones(2, 2))
    assert decode_mask(pooled).tolist() == [[[0, 2], [3, 3]]]  # majority per cell
    with pytest.raises(ValueError, match="divisible"):
        encode_mask(torch.zeros(1, 6, 6, dtype=torch.long), size=4, pooling="area")


def test_pooled_round_trip_on_cell_constant_masks():
    coarse = _mask(b=2, h=4, w=4, seed=3)
    fine = coarse.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)  # 16x16
    for encoding in MASK_ENCODINGS:
        for pooling in ("area", "nearest"):
            enc = encode_mask(fine, encoding=encoding, size=4, pooling=pooling)
            assert torch.equal(decode_mask(enc, encoding=encoding), coarse)


def test_nearest_pooling_samples_cell_centres():
    m = _mask(b=2, h=16, w=16, seed=5)
    enc = encode_mask(m, encoding="scalar", size=4)  # default for scalar: nearest
    assert torch.equal(decode_mask(enc, encoding="scalar"), m[:, 2::4, 2::4])


def test_bad_encoding_options():
    m = _mask()
    with pytest.raises(ValueError, match=r"unknown mask encoding 'rgb'; choose one of"):
        encode_mask(m, encoding="rgb")
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        encode_mask(m, pooling="max")
    with pytest.raises(ValueError, match=r"expected channels \[B, 4"):
        decode_mask(torch.zeros(1, 2, 4, 4))


# --------------------------------------------------------------------------- ablation/dropout
def test_ablation_removes_exactly_the_dropped_classes():
    m = _mask(b=6, seed=1)
    out, dropped = ablate_classes(m, 0.5, generator=_gen(7))
    assert dropped.shape == (6, 3)
    assert dropped.any()
    assert not dropped.all()
    for b in range(6):
        for k, cls in enumerate((1, 2, 3)):
            where = m[b] == cls
            expected = 0 if dropped[b, k] else cls
            assert (out[b][where] == expected).all()
        assert (out[b][m[b] == 0] == 0).all()
    assert torch.equal(ablate_classes(m, 0.0)[0], m)
    assert torch.equal(ablate_classes(m, 1.0)[0], torch.zeros_like(m))
    again, dropped2 = ablate_classes(m, 0.5, generator=_gen(7))
    assert torch.equal(again, out)
    assert torch.equal(dropped2, dropped)
    with pytest.raises(ValueError, match=r"probability in \[0, 1\]"):
        ablate_classes(m, 1.5)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_ablation_rate_per_class(p):
    n = 4000
    _, dropped = ablate_classes(torch.ones(n, 2, 2, dtype=torch.long), p, generator=_gen(0))
    rates = dropped.float().mean(dim=0)
    sigma = (p * (1 - p) / n) ** 0.5
    assert ((rates - p).abs() < 4 * sigma).all(), rates


def test_joint_dropout_drops_mask_and_slice_together():
    n, p = 4000, 0.15
    c = Condition(mask=torch.zeros(n, 2, 2, dtype=torch.long),
                  slice_index=torch.randint(0, 32, (n,), generator=_gen(1)))
    d = drop_condition(c, p, generator=_gen(2))
    assert torch.equal(d.present("mask"), d.present("slice"))
    rate = 1 - d.present("mask").float().mean()
    assert abs(rate - p) < 4 * (p * (1 - p) / n) ** 0.5
    # already-absent samples stay absent
    dd = drop_condition(d, p, generator=_gen(3))
    assert not (dd.present("mask") & ~d.present("mask")).any()
    assert torch.equal(drop_condition(c, 0.0).present("mask"), torch.ones(n, dtype=torch.bool))


def test_independent_dropout_rates():
    n, p = 8000, 0.3
    c = Condition(mask=torch.zeros(n, 1, 1, dtype=torch.long),
                  slice_index=torch.zeros(n, dtype=torch.long))
    d = drop_condition(c, p, mode="independent", generator=_gen(4))
    mask_off, slice_off = ~d.present("mask"), ~d.present("slice")
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(mask_off.float().mean() - p) < 4 * sigma
    assert abs(slice_off.float().mean() - p) < 4 * sigma
    both = (mask_off & slice_off).float().mean()
    assert abs(both - p * p) < 4 * (p * p * (1 - p * p) / n) ** 0.5
    with pytest.raises(ValueError, match="unknown dropout mode 'per-pixel'; choose one of"):
        drop_condition(c, p, mode="per-pixel")


def test_training_condition_is_reproducible_and_orders_draws():
    m = _mask(b=5, seed=2)
    c = Condition(mask=m, slice_index=torch.arange(5))
    a = training_condition(c, ablation_p=0.5, p_uncond=0.4, generator=_gen(9))
    b = training_condition(c, ablation_p=0.5, p_uncond=0.4, generator=_gen(9))
    assert torch.equal(a.mask, b.mask)
    assert torch.equal(a.mask_present, b.mask_present)
    # documented order: the [B, 3] ablation draw, then the [B] dropout draw
    g = _gen(9)
    ablated, _ = ablate_classes(m, 0.5, generator=g)
    keep = torch.rand(5, generator=g) >= 0.4
    assert torch.equal(a.mask, ablated)
    assert torch.equal(a.mask_present, keep)


# --------------------------------------------------------------------------- slice embedding
@pytest.mark.parametrize("kind", SLICE_EMBEDDINGS)
def test_slice_embedding_starts_at_zero_and_checks_tokens(kind):
    emb = SliceEmbedding(16, kind=kind)
    tokens = torch.tensor([0, 5, 31, NULL_SLICE])
    out = emb(tokens)
    assert out.shape == (4, 16)
    assert torch.equal(out, torch.zeros(4, 16))  # adding it changes nothing before training
    for bad in (torch.tensor([33]), torch.tensor([-1])):
        with pytest.raises(ValueError, match="0..31 or NULL_SLICE=32"):
            emb(bad)
    with pytest.raises(ValueError, match="integer slice tokens"):
        emb(torch.tensor([1.0]))


def test_slice_embedding_bad_kind():
    with pytest.raises(ValueError, match=r"unknown slice embedding 'onehot'; choose one of"):
        SliceEmbedding(8, kind="onehot")


@pytest.mark.parametrize("kind", SLICE_EMBEDDINGS)
def test_null_slice_has_its_own_parameters(kind):
    torch.manual_seed(0)
    emb = SliceEmbedding(8, kind=kind)
    emb(torch.tensor([NULL_SLICE])).sum().backward()
    grads = {n: p.grad for n, p in emb.named_parameters()}
    if kind == "learned":
        g = grads["table.weight"]
        assert g[NULL_SLICE].abs().sum() > 0
        assert g[:NULL_SLICE].abs().sum() == 0
    else:
        assert grads["null"].abs().sum() > 0
        assert all(g is None or g.abs().sum() == 0 for n, g in grads.items() if n != "null")
        emb.zero_grad()
        emb(torch.tensor([3])).sum().backward()
        assert emb.null.grad.abs().sum() == 0


def test_sinusoidal_slice_embedding_is_smooth_in_the_index():
    torch.manual_seed(0)
    emb = SliceEmbedding(32, kind="sinusoidal")
    torch.nn.init.normal_(emb.mlp[2].weight)  # as if trained: a non-zero last layer
    e = emb(torch.arange(32))
    near = (e[10] - e[11]).norm()
    far = (e[10] - e[25]).norm()
    assert near < 0.5 * far


# --------------------------------------------------------------------------- network inputs
def test_condition_inputs_pool_to_the_latent_grid_and_fill_nulls():
    m = _mask(b=2, h=16, w=16, seed=6)
    x = torch.zeros(2, 4, 4, 4, dtype=torch.float64)  # a latent [B, 4, 4, 4]
    cond = Condition(mask=m, mask_present=torch.tensor([True, False]))
    channels, tokens = condition_inputs(cond, x, use_mask=True, use_slice=True)
    assert channels.shape == (2, 4, 4, 4)
    assert channels.dtype == torch.float64
    torch.testing.assert_close(channels[0], encode_mask(m[:1], size=4)[0].double())
    assert torch.equal(channels[1], torch.zeros(4, 4, 4, dtype=torch.float64))
    assert tokens.tolist() == [NULL_SLICE, NULL_SLICE]
    nothing, _ = condition_inputs(None, x, use_mask=True, use_slice=False)
    assert torch.equal(nothing, torch.zeros(2, 4, 4, 4, dtype=torch.float64))


def test_condition_inputs_errors():
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="not mask-conditioned"):
        condition_inputs(Condition(mask=_mask(b=2)), x, use_mask=False, use_slice=True)
    with pytest.raises(ValueError, match="not slice-conditioned"):
        condition_inputs(Condition(slice_index=torch.tensor([1, 2])), x, use_mask=True,
                         use_slice=False)
    with pytest.raises(ValueError, match="batch size 3 but x_t has 2"):
        condition_inputs(Condition(mask=_mask(b=3)), x, use_mask=True, use_slice=False)


# --------------------------------------------------------------------------- the field registry
def test_specs_are_split_on_plus_and_looked_up_in_the_registry():
    from oasis_lib.models.conditioning import CONDITIONS, parse_condition

    assert CONDITIONS == ("none", "mask", "slice", "mask+slice")
    assert [f.name for f in parse_condition("mask+slice")] == ["mask", "slice"]
    assert parse_condition(None) == parse_condition("none") == ()
    for bad in ("masks", "mask+mask", "slice+mask", "mask+", "tissue mask"):
        with pytest.raises(ValueError, match=re.escape(f"unknown condition {bad!r}; choose one")):
            parse_condition(bad)


def test_condition_keywords_replace_and_pickle():
    import pickle

    c = Condition(mask=_mask(b=2), slice_index=torch.tensor([3, 4]),
                  slice_present=torch.tensor([True, False]))
    assert c.fields == ("mask", "slice")
    assert sorted(c.keywords()) == ["mask", "slice_index", "slice_present"]
    back = pickle.loads(pickle.dumps(c))
    assert torch.equal(back.mask, c.mask)
    assert back.slice_present.tolist() == [True, False]
    moved = c.replace(slice_index=torch.tensor([5, 6]))
    assert moved.slice_index.tolist() == [5, 6]
    assert torch.equal(moved.mask, c.mask)
    with pytest.raises(ValueError, match="unknown Condition keyword 'slice'; choose one of"):
        Condition(slice=torch.tensor([1]))
    with pytest.raises(AttributeError, match="immutable"):
        c.mask = None


def test_named_items_and_columns():
    from oasis_lib.data.conditional import ConditionalSlices, condition_tensors, read_column
    from oasis_lib.data.layout import DataError

    items = [(torch.zeros(1, 4, 4), _mask(b=1, h=4, w=4)[0], torch.tensor(k)) for k in range(3)]
    data = ConditionalSlices(items)  # positional (image, mask, slice index) tuples
    assert sorted(data[1]) == ["image", "mask", "slice_index"]
    assert int(data[2]["slice_index"]) == 2
    columns = condition_tensors(items)
    assert columns["mask"].dtype == torch.uint8
    assert columns["slice_index"].tolist() == [0, 1, 2]
    with pytest.raises(DataError, match="have no 'age'"):
        read_column(items, "age")
