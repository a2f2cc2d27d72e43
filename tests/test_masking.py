"""masked_softmax: weights sum to 1 over the allowed keys, are exactly 0 on masked keys, and a fully-masked
row gives zeros (never NaN), in every float dtype."""

import re

import pytest
import torch

from attn_course.masking import check_mask, masked_softmax

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
