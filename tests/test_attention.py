"""The functional core: softmax with a temperature, attend (checked against an explicit computation and
against torch's scaled_dot_product_attention, values and gradients), soft and hard lookup."""

import math
import re

import pytest
import torch
import torch.nn.functional as F

from attn_course.attention import attend, hard_lookup, soft_lookup, softmax

F64 = torch.float64


def random_mask(shape, gen, p=0.5):
    """A random boolean mask with at least one True in every row (so no row is fully masked)."""
    mask = torch.rand(shape, generator=gen) < p
    keep = torch.randint(shape[-1], (*shape[:-1], 1), generator=gen)
    return mask.scatter(-1, keep, True)


def qkv(gen, batch, lq, lk, d, dv, dtype=F64, requires_grad=False):
    return tuple(torch.randn(*batch, n, size, generator=gen, dtype=dtype, requires_grad=requires_grad)
                 for n, size in ((lq, d), (lk, d), (lk, dv)))


def one_hot_argmax(scores):
    return F.one_hot(scores.argmax(-1), scores.size(-1)).to(scores.dtype)


def distinct_scores(gen, rows=4, cols=8):
    """Scores whose largest entry in each row beats the second by at least 0.9 (no near ties)."""
    perms = torch.stack([torch.randperm(cols, generator=gen) for _ in range(rows)]).to(F64)
    return perms + 0.1 * torch.rand(rows, cols, generator=gen, dtype=F64)


# --- softmax with a temperature -----------------------------------------------------------------

@pytest.mark.parametrize("temperature", [0.1, 0.5, 1, 3.7])
@pytest.mark.parametrize("dim", [-1, 0])
def test_softmax_temperature_divides_the_scores(temperature, dim):
    scores = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(softmax(scores, temperature, dim=dim), torch.softmax(scores / temperature, dim=dim))


def test_low_temperature_approaches_one_hot_argmax():
    scores = distinct_scores(torch.Generator().manual_seed(1))
    errors = [(softmax(scores, t) - one_hot_argmax(scores)).abs().max().item() for t in (3, 1, 0.3, 0.1, 0.01)]
    assert errors == sorted(errors, reverse=True) and errors[0] > 0.1
    assert errors[-1] < 1e-12


def test_high_temperature_approaches_uniform():
    scores = 3 * torch.randn(4, 8, generator=torch.Generator().manual_seed(2), dtype=F64)
    errors = [(softmax(scores, t) - 1 / 8).abs().max().item() for t in (1, 10, 1e3, 1e6)]
    assert errors == sorted(errors, reverse=True) and errors[0] > 0.05
    assert errors[-1] < 1e-5


BAD_TEMPERATURES = [
    (0, ValueError, "temperature must be > 0, got 0"),
    (-1, ValueError, "temperature must be > 0, got -1"),
    (float("nan"), ValueError, "temperature must be finite, got nan"),
    (float("inf"), ValueError, "temperature must be finite, got inf"),
    ("a", TypeError, "temperature must be a number, got str"),
    (True, TypeError, "temperature must be a number, got bool"),
    (None, TypeError, "temperature must be a number, got NoneType"),
]


@pytest.mark.parametrize(("temperature", "error", "message"), BAD_TEMPERATURES)
@pytest.mark.parametrize("fn", ["softmax", "soft_lookup"])
def test_bad_temperature(fn, temperature, error, message):
    q, k, v = qkv(torch.Generator().manual_seed(3), (), 2, 3, 4, 4)
    with pytest.raises(error, match=re.escape(message)):
        if fn == "softmax":
            softmax(q, temperature)
        else:
            soft_lookup(q, k, v, temperature)


# --- attend --------------------------------------------------------------------------------------

# (batch dims, Lq, Lk, D, Dv): with heads, without, a single query, square
SHAPES = [((2, 3), 5, 7, 8, 4), ((4,), 6, 3, 8, 2), ((3, 2), 1, 9, 5, 6), ((1, 1), 4, 4, 16, 16)]
MASKS = ["none", "padding", "random", "causal"]


def make_mask(kind, batch, lq, lk, gen):
    if kind == "none":
        return None
    if kind == "padding":  # (B, 1, ..., 1, Lk): the same keys hidden from every query
        return random_mask((*batch[:1], *(1 for _ in batch[1:]), 1, lk), gen)
    if kind == "random":
        return random_mask((*batch, lq, lk), gen)
    return torch.ones(lq, lk, dtype=torch.bool).tril()  # causal: query i sees keys 0..i


def explicit_attention(q, k, v, mask, scale):
    """Attention written out with exp and sums, as in the paper."""
    scores = torch.einsum("...qd,...kd->...qk", q, k) * scale
    e = torch.exp(scores - scores.amax(-1, keepdim=True))
    if mask is not None:
        e = e * mask
    weights = e / e.sum(-1, keepdim=True)
    return torch.einsum("...qk,...kv->...qv", weights, v), weights


@pytest.mark.parametrize(("batch", "lq", "lk", "d", "dv"), SHAPES)
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("scale", [None, 0.3])
def test_attend_matches_explicit_computation(batch, lq, lk, d, dv, mask_kind, scale):
    gen = torch.Generator().manual_seed(4)
    q, k, v = qkv(gen, batch, lq, lk, d, dv)
    mask = make_mask(mask_kind, batch, lq, lk, gen)
    context, weights = attend(q, k, v, mask=mask, scale=scale)
    expected_context, expected_weights = explicit_attention(q, k, v, mask, scale or 1 / math.sqrt(d))
    assert context.shape == (*batch, lq, dv) and weights.shape == (*batch, lq, lk)
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(context, expected_context)


@pytest.mark.parametrize(("batch", "lq", "lk", "d", "dv"), SHAPES)
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("scale", [None, 0.3])
def test_attend_matches_sdpa_values_and_gradients(batch, lq, lk, d, dv, mask_kind, scale):
    gen = torch.Generator().manual_seed(5)
    q, k, v = qkv(gen, batch, lq, lk, d, dv, requires_grad=True)
    mask = make_mask(mask_kind, batch, lq, lk, gen)
    upstream = torch.randn(*batch, lq, dv, generator=gen, dtype=F64)
    ours, _ = attend(q, k, v, mask=mask, scale=scale)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    torch.testing.assert_close(ours, theirs)
    grads_ours = torch.autograd.grad(ours, (q, k, v), upstream)
    grads_theirs = torch.autograd.grad(theirs, (q, k, v), upstream)
    assert grads_ours[2].abs().sum() > 0  # so the comparison below is not 0 == 0
    for name, g_ours, g_theirs in zip("qkv", grads_ours, grads_theirs, strict=True):
        torch.testing.assert_close(g_ours, g_theirs, msg=lambda m, name=name: f"grad {name}: {m}")


def test_attend_follows_input_dtype():
    gen = torch.Generator().manual_seed(6)
    for dtype in (torch.float32, torch.float64):
        context, weights = attend(*qkv(gen, (2,), 3, 4, 5, 6, dtype=dtype))
        assert context.dtype == weights.dtype == dtype


def test_masked_keys_get_zero_weight_and_their_values_do_not_matter():
    gen = torch.Generator().manual_seed(7)
    q, k, v = qkv(gen, (2, 3), 5, 7, 8, 4)
    mask = make_mask("padding", (2, 3), 5, 7, gen)
    context, weights = attend(q, k, v, mask=mask)
    hidden = ~mask.expand_as(weights)
    assert hidden.any() and torch.all(weights[hidden] == 0)
    noise = torch.randn(v.shape, generator=gen, dtype=F64) * 100
    k2 = k + noise[..., :1] * ~mask.transpose(-2, -1)  # change only the hidden keys and their values
    v2 = v + noise * ~mask.transpose(-2, -1)
    context2, weights2 = attend(q, k2, v2, mask=mask)
    torch.testing.assert_close(context2, context, rtol=0, atol=1e-12)
    torch.testing.assert_close(weights2, weights, rtol=0, atol=1e-12)


@pytest.mark.parametrize("t", [0, 2, 5])
def test_causal_mask_hides_the_future(t):
    gen = torch.Generator().manual_seed(8 + t)
    length = 7
    q, k, v = qkv(gen, (2, 3), length, length, 8, 4)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    before, _ = attend(q, k, v, mask=causal)
    future = torch.arange(length)[:, None] > t  # positions after t
    q2, k2, v2 = (x + future * torch.randn(x.shape, generator=gen, dtype=F64) for x in (q, k, v))
    after, _ = attend(q2, k2, v2, mask=causal)
    torch.testing.assert_close(after[..., : t + 1, :], before[..., : t + 1, :], rtol=0, atol=1e-12)
    assert (after[..., t + 1:, :] - before[..., t + 1:, :]).abs().min() > 0  # the future did change


# --- soft and hard lookup ----------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [0.2, 1.0, 5.0])
@pytest.mark.parametrize("mask_kind", ["none", "random"])
def test_soft_lookup_is_attend_with_scale_one_over_t(temperature, mask_kind):
    gen = torch.Generator().manual_seed(9)
    q, k, v = qkv(gen, (2,), 3, 6, 4, 5)
    mask = make_mask(mask_kind, (2,), 3, 6, gen)
    got = soft_lookup(q, k, v, temperature, mask=mask)
    want = attend(q, k, v, mask=mask, scale=1 / temperature)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def test_soft_lookup_approaches_hard_lookup_as_temperature_goes_to_zero():
    gen = torch.Generator().manual_seed(10)
    q, k, v = qkv(gen, (3,), 4, 8, 5, 2)
    top2 = (q @ k.transpose(-2, -1)).topk(2, dim=-1).values
    gap = (top2[..., 0] - top2[..., 1]).min().item()
    assert gap > 0  # no ties
    hard_context, hard_weights = hard_lookup(q, k, v)
    errors = []
    for t in sorted({1.0, gap, gap / 10, gap / 100}, reverse=True):
        context, weights = soft_lookup(q, k, v, t)
        errors.append((weights - hard_weights).abs().max().item())
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-30
    torch.testing.assert_close(context, hard_context)


@pytest.mark.parametrize(("batch", "lq", "lk", "d", "dv"), SHAPES)
def test_hard_lookup_returns_the_value_of_the_best_key(batch, lq, lk, d, dv):
    gen = torch.Generator().manual_seed(11)
    q, k, v = qkv(gen, batch, lq, lk, d, dv)
    context, weights = hard_lookup(q, k, v)
    best = (q @ k.transpose(-2, -1)).argmax(-1)  # (..., Lq)
    assert weights.dtype == v.dtype and weights.shape == (*batch, lq, lk)
    assert torch.all((weights == 0) | (weights == 1)) and torch.all(weights.sum(-1) == 1)
    assert torch.equal(weights.argmax(-1), best)
    picked = torch.gather(v, -2, best[..., None].expand(*best.shape, dv))
    assert torch.equal(context, picked)


# --- errors ----------------------------------------------------------------------------------

def z(*shape, dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype)


BAD_QKV = [
    ((z(3, 4), z(5, 6), z(5, 2)), ValueError, "q and k must have the same feature size D (last dimension): "
                                              "q has shape (3, 4), k has shape (5, 6)"),
    ((z(3, 4), z(5, 4), z(6, 2)), ValueError, "k and v must have the same number of keys Lk (second-to-last "
                                              "dimension): k has shape (5, 4), v has shape (6, 2)"),
    ((z(2, 3, 4), z(2, 5, 4), z(2, 6, 2)), ValueError, "k has shape (2, 5, 4), v has shape (2, 6, 2)"),
    ((z(4), z(5, 4), z(5, 2)), ValueError, "q must have at least 2 dimensions (..., L, size), got shape (4,)"),
    ((z(3, 4), z(5, 4), z(5)), ValueError, "v must have at least 2 dimensions (..., L, size), got shape (5,)"),
    ((z(3, 4), z(5, 4, dtype=torch.long), z(5, 2)), TypeError,
     "k must be a floating-point tensor, got dtype torch.int64"),
    ((z(3, 4), z(5, 4), [[1.0, 2.0]] * 5), TypeError, "v must be a torch.Tensor, got list"),
    ((3.0, z(5, 4), z(5, 2)), TypeError, "q must be a torch.Tensor, got float"),
]


@pytest.mark.parametrize(("args", "error", "message"), BAD_QKV)
@pytest.mark.parametrize("fn", [attend, soft_lookup, hard_lookup], ids=lambda f: f.__name__)
def test_bad_inputs_name_what_was_expected(fn, args, error, message):
    with pytest.raises(error, match=re.escape(message)):
        fn(*args)


@pytest.mark.parametrize(("mask", "error", "message"), [
    (torch.ones(3, 5), TypeError, "mask must have dtype torch.bool"),
    (torch.ones(3, 4, dtype=torch.bool), ValueError, "mask of shape (3, 4) does not broadcast to the scores' "
                                                      "shape (2, 3, 5)"),
])
def test_bad_mask_in_attend(mask, error, message):
    q, k, v = qkv(torch.Generator().manual_seed(12), (2,), 3, 5, 4, 4)
    with pytest.raises(error, match=re.escape(message)):
        attend(q, k, v, mask=mask)


@pytest.mark.parametrize(("scale", "error"), [(0, ValueError), (-1.0, ValueError), ("x", TypeError)])
def test_bad_scale(scale, error):
    q, k, v = qkv(torch.Generator().manual_seed(13), (), 3, 5, 4, 4)
    with pytest.raises(error, match="scale must be"):
        attend(q, k, v, scale=scale)


def test_mixed_dtypes_are_a_type_error():
    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 5, 4, dtype=torch.float64), torch.randn(2, 5, 4)
    with pytest.raises(TypeError, match="q, k and v must share one dtype, got torch.float32, torch.float64"):
        attend(q, k, v)


def test_batch_dims_that_do_not_broadcast_are_a_value_error():
    q, k, v = torch.randn(2, 3, 4), torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    with pytest.raises(ValueError, match=r"must broadcast, got shapes \(2, 3, 4\), \(3, 5, 4\) and \(3, 5, 4\)"):
        attend(q, k, v)
