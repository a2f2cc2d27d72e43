"""masked_softmax: weights sum to 1 over the allowed keys, are exactly 0 on masked keys, and a fully-masked
row gives zeros (never NaN), in every float dtype. The mask builders: padding, causal and window masks
are what they say (checked against explicit loops and torch's own causal masks), combine as AND, follow the
device, and refuse bad input with a message naming what was expected and what came."""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right, causal_upper_left

from attn_course.attention import attend
from attn_course.masking import (
    causal_mask,
    check_mask,
    combine_masks,
    masked_softmax,
    padding_mask,
    window_mask,
)

F64 = torch.float64
SEEDS = [0, 1, 2]

# (scores shape, mask shape): same shape, key padding over (B, H), one mask for every (B, H), per-query rows
SHAPES = [
    ((5, 7), (5, 7)),
    ((3, 4, 6), (3, 4, 6)),
    ((2, 3, 4, 6), (2, 1, 1, 6)),
    ((2, 3, 5, 5), (5, 5)),
    ((2, 3, 4, 6), (2, 3, 4, 6)),
]
TOL = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float32: 1e-6, torch.float64: 1e-12}


def random_mask(shape, gen, p=0.5):
    """A random boolean mask with at least one True in every row (so no row is fully masked)."""
    mask = torch.rand(shape, generator=gen) < p
    keep = torch.randint(shape[-1], (*shape[:-1], 1), generator=gen)
    return mask.scatter(-1, keep, True)


def reference(scores, mask):
    """Softmax over the allowed keys only, in float64; a row with no allowed key is all zeros."""
    s = scores.double().masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1).nan_to_num(0.0)


@pytest.mark.parametrize(("shape", "mask_shape"), SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_rows_sum_to_one_and_masked_keys_get_exactly_zero(shape, mask_shape, seed):
    gen = torch.Generator().manual_seed(seed)
    scores = 3 * torch.randn(shape, generator=gen)
    mask = random_mask(mask_shape, gen)
    weights = masked_softmax(scores, mask)
    allowed = mask.expand(shape)
    assert weights.shape == scores.shape and weights.dtype == scores.dtype
    assert torch.all(weights[~allowed] == 0)
    assert torch.all(weights[allowed] > 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(shape[:-1]))
    torch.testing.assert_close(weights.double(), reference(scores, allowed), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_fully_masked_row_gives_zeros_not_nan(dtype):
    gen = torch.Generator().manual_seed(2)
    scores = (10 * torch.randn(2, 3, 4, 6, generator=gen)).to(dtype)
    mask = random_mask((2, 1, 4, 6), gen)
    mask[0, :, 1] = False  # query 1 of batch 0 may attend to nothing, in every head
    mask[1, :, 3] = False
    weights = masked_softmax(scores, mask)
    assert weights.dtype == dtype
    assert torch.isfinite(weights).all()
    assert torch.all(weights[0, :, 1] == 0) and torch.all(weights[1, :, 3] == 0)
    row_sums = weights.double().sum(-1)
    expected = mask.any(-1).expand(2, 3, 4).double()
    torch.testing.assert_close(row_sums, expected, rtol=0, atol=TOL[dtype] * 6)
    torch.testing.assert_close(weights.double(), reference(scores, mask.expand(scores.shape)),
                               rtol=0, atol=TOL[dtype] * 2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("magnitude", [1.0, 100.0, 3e4])
def test_half_precision_stays_finite_with_masks(dtype, magnitude):
    gen = torch.Generator().manual_seed(3)
    scores = (magnitude * torch.randn(4, 5, 8, generator=gen)).clamp(-6e4, 6e4).to(dtype)
    mask = random_mask((4, 5, 8), gen, p=0.3)
    mask[2, 0] = False
    weights = masked_softmax(scores, mask)
    assert not torch.isnan(weights).any() and torch.isfinite(weights).all()
    assert torch.all(weights[~mask] == 0) and torch.all(weights[2, 0] == 0)
    torch.testing.assert_close(weights.double(), reference(scores, mask), rtol=0, atol=TOL[dtype] * 2)


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4, 6)])
@pytest.mark.parametrize("dim", [-1, 0])
def test_no_mask_is_plain_softmax(shape, dim):
    scores = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(masked_softmax(scores, dim=dim), torch.softmax(scores, dim=dim), rtol=0, atol=0)


def test_dim_argument_applies_the_mask_along_that_dim():
    gen = torch.Generator().manual_seed(5)
    scores = torch.randn(2, 6, 4, generator=gen)
    mask = random_mask((2, 4, 6), gen).transpose(-2, -1)  # every column has an allowed entry
    weights = masked_softmax(scores, mask, dim=-2)
    expected = masked_softmax(scores.transpose(-2, -1), mask.transpose(-2, -1)).transpose(-2, -1)
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(weights.sum(-2), torch.ones(2, 4))


def test_gradients_are_finite_with_a_fully_masked_row():
    gen = torch.Generator().manual_seed(6)
    scores = torch.randn(3, 4, 5, generator=gen, requires_grad=True)
    mask = random_mask((3, 4, 5), gen)
    mask[1, 2] = False
    weights = masked_softmax(scores, mask)
    (weights * torch.randn(3, 4, 5, generator=gen)).sum().backward()
    grad = scores.grad
    assert torch.isfinite(grad).all()
    assert torch.all(grad[~mask] == 0)
    assert grad[mask].abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.float32])
def test_non_boolean_mask_is_a_type_error(dtype):
    scores = torch.randn(2, 3)
    with pytest.raises(TypeError, match=rf"torch\.bool.*got {dtype}"):
        masked_softmax(scores, torch.ones(2, 3, dtype=dtype))


@pytest.mark.parametrize("mask_shape", [(2, 4), (3, 3), (1, 2, 3), (4,)])
def test_mask_that_does_not_broadcast_names_both_shapes(mask_shape):
    scores = torch.randn(2, 3)
    mask = torch.ones(mask_shape, dtype=torch.bool)
    with pytest.raises(ValueError, match=re.escape(f"{tuple(mask_shape)}") + r".*" + re.escape("(2, 3)")):
        masked_softmax(scores, mask)


@pytest.mark.parametrize("mask", [[[True, False, True]], (True, False, True), 1, "mask"])
def test_non_tensor_mask_is_a_type_error(mask):
    with pytest.raises(TypeError, match=rf"boolean torch\.Tensor, got {type(mask).__name__}"):
        check_mask(mask, torch.randn(1, 3))


@pytest.mark.parametrize(("scores", "error", "message"), [
    ([[1.0, 2.0]], TypeError, "scores must be a torch.Tensor, got list"),
    (torch.ones(2, 3, dtype=torch.long), TypeError, "scores must be a floating-point tensor, got dtype torch.int64"),
])
def test_bad_scores(scores, error, message):
    with pytest.raises(error, match=re.escape(message)):
        masked_softmax(scores, torch.ones(2, 3, dtype=torch.bool))


# --- padding masks ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_padding_mask_keeps_the_first_length_keys(seed):
    gen = torch.Generator().manual_seed(seed)
    max_len = int(torch.randint(1, 10, (1,), generator=gen))
    lengths = torch.randint(0, max_len + 1, (5,), generator=gen)
    mask = padding_mask(lengths, max_len)
    assert mask.shape == (5, 1, max_len) and mask.dtype == torch.bool
    expected = torch.tensor([[j < n for j in range(max_len)] for n in lengths.tolist()])
    assert torch.equal(mask[:, 0], expected)
    assert torch.equal(mask.sum(-1)[:, 0], lengths)


def test_padding_mask_defaults_to_the_longest_length_and_allows_empty_sequences():
    mask = padding_mask(torch.tensor([3, 0, 5]))
    assert mask.shape == (3, 1, 5)
    assert mask[0, 0].tolist() == [True, True, True, False, False]
    assert not mask[1].any() and mask[2].all()
    assert padding_mask(torch.tensor([], dtype=torch.long)).shape == (0, 1, 0)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8])
def test_padding_mask_accepts_any_integer_lengths(dtype):
    mask = padding_mask(torch.tensor([1, 2], dtype=dtype), 3)
    assert mask[:, 0].tolist() == [[True, False, False], [True, True, False]]


@pytest.mark.parametrize(("lengths", "max_len", "error", "message"), [
    ([2, 3], 4, TypeError, "lengths must be a torch.Tensor, got list"),
    (torch.tensor([2.0, 3.0]), 4, TypeError, "lengths must be an integer tensor, got dtype torch.float32"),
    (torch.tensor([[2, 3]]), 4, ValueError, "lengths must have 1 dimension, got shape (1, 2)"),
    (torch.tensor([2, 5]), 4, ValueError, "lengths must lie between 0 and max_len=4, got [2, 5]"),
    (torch.tensor([-1, 2]), 4, ValueError, "lengths must lie between 0 and max_len=4, got [-1, 2]"),
    (torch.tensor([2, 3]), 4.0, TypeError, "max_len must be a whole number, got float"),
    (torch.tensor([2, 3]), -1, ValueError, "max_len must be >= 0, got -1"),
])
def test_padding_mask_bad_input(lengths, max_len, error, message):
    with pytest.raises(error, match=re.escape(message)):
        padding_mask(lengths, max_len)


# --- causal masks ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("lq", "lk"), [(1, 1), (5, 5), (3, 7), (7, 3)])
def test_causal_mask_is_the_lower_triangle_aligned_top_left(lq, lk):
    mask = causal_mask(lq, lk)
    assert mask.shape == (lq, lk) and mask.dtype == torch.bool
    expected = torch.tensor([[j <= i for j in range(lk)] for i in range(lq)])
    assert torch.equal(mask, expected)
    assert torch.equal(mask, torch.ones(lq, lk, dtype=torch.bool).tril())
    assert torch.equal(mask, causal_upper_left(lq, lk)._materialize())  # torch's own, as SDPA's is_causal


@pytest.mark.parametrize(("lq", "lk"), [(1, 1), (1, 6), (3, 7), (5, 5)])
def test_causal_mask_bottom_right_is_torchs_lower_right(lq, lk):
    mask = causal_mask(lq, lk, bottom_right=True)
    expected = torch.tensor([[j <= i + lk - lq for j in range(lk)] for i in range(lq)])
    assert torch.equal(mask, expected)
    assert torch.equal(mask, causal_lower_right(lq, lk)._materialize())
    with pytest.raises(TypeError, match="bottom_right must be True or False"):
        causal_mask(lq, lk, bottom_right="yes")


def test_causal_mask_defaults_to_square():
    assert torch.equal(causal_mask(4), causal_mask(4, 4))


@pytest.mark.parametrize(("lq", "lk"), [(5, 5), (3, 6), (6, 4)])
@pytest.mark.parametrize("seed", SEEDS)
def test_causal_mask_matches_sdpa_is_causal(lq, lk, seed):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 3, n, 8, generator=gen, dtype=F64) for n in (lq, lk, lk))
    context, _ = attend(q, k, v, mask=causal_mask(lq, lk))
    torch.testing.assert_close(context, F.scaled_dot_product_attention(q, k, v, is_causal=True))


@pytest.mark.parametrize("window", [None, 1, 3])
@pytest.mark.parametrize("seed", SEEDS)
def test_causal_output_at_t_ignores_inputs_after_t(window, seed):
    """Change every query, key and value after position t: the outputs up to t do not move."""
    gen = torch.Generator().manual_seed(seed)
    length = 8
    t = int(torch.randint(0, length - 1, (1,), generator=gen))
    mask = causal_mask(length) if window is None else window_mask(length, window=window, causal=True)
    q, k, v = (torch.randn(2, 3, length, 4, generator=gen, dtype=F64) for _ in range(3))
    before, weights = attend(q, k, v, mask=mask)
    future = torch.arange(length)[:, None] > t  # (L, 1): positions after t
    q2, k2, v2 = (x + 10 * future * torch.randn(x.shape, generator=gen, dtype=F64) for x in (q, k, v))
    after, _ = attend(q2, k2, v2, mask=mask)
    torch.testing.assert_close(after[..., : t + 1, :], before[..., : t + 1, :], rtol=0, atol=0)
    assert (after[..., t + 1:, :] - before[..., t + 1:, :]).abs().amax() > 0  # the future did change
    assert torch.all(weights.triu(1) == 0)


# --- window masks ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("lq", "lk"), [(6, 6), (4, 7), (7, 4)])
@pytest.mark.parametrize("window", [1, 2, 3, 10])
@pytest.mark.parametrize("causal", [False, True])
def test_window_mask_against_an_explicit_loop(lq, lk, window, causal):
    mask = window_mask(lq, lk, window=window, causal=causal)
    expected = torch.tensor([[abs(i - j) < window and (j <= i or not causal) for j in range(lk)]
                             for i in range(lq)])
    assert mask.shape == (lq, lk) and mask.dtype == torch.bool
    assert torch.equal(mask, expected)


def test_window_mask_limits():
    assert torch.equal(window_mask(5, window=1), torch.eye(5, dtype=torch.bool))  # only yourself
    assert window_mask(5, window=5).all()  # as long as the sequence: global attention
    assert torch.equal(window_mask(5, window=5, causal=True), causal_mask(5))
    counts = window_mask(9, window=3).sum(-1)
    assert counts.tolist() == [3, 4, 5, 5, 5, 5, 5, 4, 3]  # up to 2 * window - 1 keys
    assert window_mask(9, window=3, causal=True).sum(-1).tolist() == [1, 2, 3, 3, 3, 3, 3, 3, 3]


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"window": 0}, ValueError, "window must be >= 1, got 0"),
    ({"window": -2}, ValueError, "window must be >= 1, got -2"),
    ({"window": 1.5}, TypeError, "window must be a whole number, got float"),
    ({"window": True}, TypeError, "window must be a whole number, got bool"),
    ({"window": 2, "causal": 1}, TypeError, "causal must be True or False, got int"),
])
def test_window_mask_bad_input(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        window_mask(5, **kwargs)


@pytest.mark.parametrize("make", [causal_mask, lambda lq, lk: window_mask(lq, lk, window=2)])
@pytest.mark.parametrize(("lq", "lk", "message"), [
    (-1, 3, "lq must be >= 0, got -1"),
    (3, -2, "lk must be >= 0, got -2"),
    (2.0, 3, "lq must be a whole number, got float"),
    (3, "4", "lk must be a whole number, got str"),
])
def test_sizes_must_be_whole_numbers_of_at_least_zero(make, lq, lk, message):
    with pytest.raises((TypeError, ValueError), match=re.escape(message)):
        make(lq, lk)


@pytest.mark.parametrize("make", [causal_mask, lambda lq, lk: window_mask(lq, lk, window=2),
                                  lambda lq, lk: padding_mask(torch.zeros(lq, dtype=torch.long), lk)[:, 0]])
@pytest.mark.parametrize(("lq", "lk"), [(0, 0), (0, 3), (3, 0)])
def test_every_builder_accepts_empty_sizes(make, lq, lk):
    """Zero queries or zero keys (an empty sequence) give an empty mask, in all three builders alike, and
    the masked softmax of empty scores is empty too."""
    mask = make(lq, lk)
    assert mask.shape == (lq, lk) and mask.dtype == torch.bool
    weights = masked_softmax(torch.randn(2, lq, lk), mask)
    assert weights.shape == (2, lq, lk)


def test_sizes_may_be_numpy_or_tensor_integers():
    """lengths.max() is a 0-d tensor: a fine max_len (and size) without int()."""
    lengths = torch.tensor([2, 4])
    assert torch.equal(padding_mask(lengths, lengths.max()), padding_mask(lengths, 4))
    assert torch.equal(padding_mask(lengths, np.int64(5)), padding_mask(lengths, 5))
    assert torch.equal(causal_mask(lengths.max(), np.int32(6)), causal_mask(4, 6))
    assert torch.equal(window_mask(np.int64(5), window=lengths.min()), window_mask(5, window=2))


# --- combining masks -------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_combined_masks_behave_as_and(seed):
    gen = torch.Generator().manual_seed(seed)
    b, length = 3, 6
    lengths = torch.randint(1, length + 1, (b,), generator=gen)
    window = int(torch.randint(1, 4, (1,), generator=gen))
    pad, causal, local = padding_mask(lengths, length), causal_mask(length), window_mask(length, window=window)
    combined = combine_masks(pad, causal, local)
    assert combined.shape == (b, length, length) and combined.dtype == torch.bool
    for bi, i, j in torch.cartesian_prod(torch.arange(b), torch.arange(length), torch.arange(length)).tolist():
        assert bool(combined[bi, i, j]) == (j < lengths[bi] and j <= i and abs(i - j) < window)
    # and the weights under the combined mask vanish exactly where any one mask says no
    scores = torch.randn(b, length, length, generator=gen)
    weights = masked_softmax(scores, combined)
    for mask in (pad, causal, local):
        assert torch.all(weights[~mask.expand_as(weights)] == 0)
    assert torch.all((weights > 0) == combined)


def test_combine_masks_skips_none():
    causal = causal_mask(3)
    assert combine_masks() is None and combine_masks(None, None) is None
    assert torch.equal(combine_masks(causal, None, torch.ones(3, 3, dtype=torch.bool)), causal)


def test_combine_masks_copies_only_when_it_combines():
    """As documented: a single mask comes back as itself (no copy spent on combine_masks(mask, None));
    two or more give a new tensor, so writing into it leaves the inputs alone."""
    causal, local = causal_mask(4), window_mask(4, window=2)
    assert combine_masks(None, causal) is causal
    combined = combine_masks(causal, local)
    combined[3, 3] = False
    assert causal[3, 3] and local[3, 3]


def test_combine_masks_bad_input():
    causal = causal_mask(3)
    with pytest.raises(TypeError, match=re.escape("mask 1 must be a boolean torch.Tensor (True = may attend), "
                                                  "got torch.int64")):
        combine_masks(causal, torch.ones(3, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="mask 0 must be a boolean torch.Tensor .*got list"):
        combine_masks([[True]], causal)
    with pytest.raises(ValueError, match=re.escape("masks of shapes (3, 3), (2, 1, 4) do not broadcast together")):
        combine_masks(causal, padding_mask(torch.tensor([1, 4])))
    with pytest.raises(ValueError, match="masks must be on one device, got mask 1 on meta and the ones before "
                                         "it on cpu"):
        combine_masks(causal, causal_mask(3, device="meta"))


# --- devices and half precision --------------------------------------------------------------------

def test_masks_follow_the_device_asked_for():
    """The meta device has no data: a mask built there proves nothing was made on the CPU on the way."""
    for mask in (causal_mask(4, device="meta"), window_mask(4, 6, window=2, device="meta"),
                 combine_masks(causal_mask(4, device="meta"), window_mask(4, window=2, device="meta"))):
        assert mask.device.type == "meta" and mask.dtype == torch.bool
    scores = torch.randn(2, 4, 4, device="meta")
    assert masked_softmax(scores, causal_mask(4, device="meta")).device.type == "meta"


def test_mask_on_another_device_is_a_clear_error():
    with pytest.raises(ValueError, match=r"mask is on meta but the scores are on cpu.*device=scores.device"):
        masked_softmax(torch.randn(4, 4), causal_mask(4, device="meta"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", SEEDS)
def test_half_precision_attention_with_padding_and_causal_masks_is_finite(dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([0, 3, 6])  # an empty sequence: every row of it is fully masked
    mask = combine_masks(padding_mask(lengths, 6), causal_mask(6))[:, None]  # (B, 1, L, L) for heads
    q, k, v = ((2 * torch.randn(3, 2, 6, 16, generator=gen)).to(dtype) for _ in range(3))
    context, weights = attend(q, k, v, mask=mask)
    assert context.dtype == weights.dtype == dtype
    assert torch.isfinite(context).all() and torch.isfinite(weights).all()
    assert torch.all(context[0] == 0) and torch.all(weights[0] == 0)
    assert torch.all(weights[~mask.expand_as(weights)] == 0)
    expected, _ = attend(q.double(), k.double(), v.double(), mask=mask)
    torch.testing.assert_close(context.double(), expected, rtol=0, atol=0.1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_minus_1e9_is_not_a_float16_number_but_finfo_min_is(dtype):
    """Why the fill is finfo.min: -1e9 overflows to -inf in float16, where a fully-masked row is 0/0."""
    assert torch.isfinite(torch.tensor(torch.finfo(dtype).min, dtype=dtype))
    overflows = not torch.isfinite(torch.tensor(-1e9, dtype=dtype))
    assert overflows == (dtype == torch.float16)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_on_cuda_masks_and_weights_follow_the_device(dtype):
    lengths = torch.tensor([2, 5], device="cuda")
    mask = combine_masks(padding_mask(lengths, 5), causal_mask(5, device="cuda"),
                         window_mask(5, window=2, device="cuda"))
    assert mask.device.type == "cuda"
    scores = torch.randn(2, 5, 5, device="cuda", dtype=dtype)
    weights = masked_softmax(scores, mask)
    assert weights.device.type == "cuda" and weights.dtype == dtype and torch.isfinite(weights).all()
    torch.testing.assert_close(weights.cpu(), masked_softmax(scores.cpu(), mask.cpu()))
