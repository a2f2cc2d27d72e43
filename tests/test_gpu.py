"""The attend and masked_softmax checks again on a CUDA device: results match the CPU, stay on the inputs'
device and dtype, and half precision stays finite with masks."""

import pytest
import torch
import torch.nn.functional as F

from attn_course.attention import attend, hard_lookup
from attn_course.masking import masked_softmax

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DEVICE = "cuda"
HALF = [torch.float16, torch.bfloat16]
ATOL = {torch.float16: 5e-3, torch.bfloat16: 3e-2, torch.float32: 1e-5}


def random_mask(shape, gen, p=0.5):
    """A random boolean mask with at least one True in every row (so no row is fully masked)."""
    mask = torch.rand(shape, generator=gen) < p
    keep = torch.randint(shape[-1], (*shape[:-1], 1), generator=gen)
    return mask.scatter(-1, keep, True)


def qkv(gen, batch=(2, 3), lq=5, lk=7, d=16, dv=8):
    return [torch.randn(*batch, n, size, generator=gen) for n, size in ((lq, d), (lk, d), (lk, dv))]


@pytest.fixture(autouse=True)
def exact_float32_matmul():
    """Keep float32 matmuls in full precision (no TF32), so CUDA results can be compared with the CPU."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize("dtype", [torch.float32, *HALF])
@pytest.mark.parametrize("masked", [False, True])
def test_attend_on_cuda_matches_cpu(dtype, masked):
    gen = torch.Generator().manual_seed(0)
    q, k, v = qkv(gen)
    mask = random_mask((2, 3, 5, 7), gen) if masked else None
    context, weights = attend(*(x.to(DEVICE, dtype) for x in (q, k, v)),
                              mask=None if mask is None else mask.to(DEVICE))
    expected_context, expected_weights = attend(q, k, v, mask=mask)
    for got, want in ((context, expected_context), (weights, expected_weights)):
        assert got.device.type == "cuda" and got.dtype == dtype
        torch.testing.assert_close(got.float().cpu(), want, rtol=0, atol=ATOL[dtype] * 2)
    if mask is not None:
        assert torch.all(weights[~mask.to(DEVICE)] == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_attend_on_cuda_matches_sdpa_values_and_gradients(dtype):
    gen = torch.Generator().manual_seed(1)
    q, k, v = (x.to(DEVICE, dtype).requires_grad_() for x in qkv(gen))
    mask = random_mask((2, 1, 5, 7), gen).to(DEVICE)
    upstream = torch.randn(2, 3, 5, 8, generator=gen).to(DEVICE, dtype)
    ours, _ = attend(q, k, v, mask=mask)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    tol = {"rtol": 0, "atol": ATOL[dtype] * 2}
    torch.testing.assert_close(ours, theirs, **tol)
    for g_ours, g_theirs in zip(torch.autograd.grad(ours, (q, k, v), upstream),
                                torch.autograd.grad(theirs, (q, k, v), upstream), strict=True):
        assert torch.isfinite(g_ours).all()
        torch.testing.assert_close(g_ours, g_theirs, **tol)


def test_hard_lookup_on_cuda_matches_cpu():
    q, k, v = qkv(torch.Generator().manual_seed(2))
    context, weights = hard_lookup(*(x.to(DEVICE) for x in (q, k, v)))
    expected_context, expected_weights = hard_lookup(q, k, v)
    assert context.device.type == weights.device.type == "cuda"
    torch.testing.assert_close(weights.cpu(), expected_weights, rtol=0, atol=0)
    torch.testing.assert_close(context.cpu(), expected_context, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, *HALF])
@pytest.mark.parametrize("magnitude", [1.0, 1e3])
def test_masked_softmax_on_cuda_is_finite_and_matches_cpu(dtype, magnitude):
    gen = torch.Generator().manual_seed(3)
    scores = (magnitude * torch.randn(2, 3, 4, 6, generator=gen))
    mask = random_mask((2, 1, 4, 6), gen)
    mask[0, :, 2] = False  # a fully-masked row
    weights = masked_softmax(scores.to(DEVICE, dtype), mask.to(DEVICE))
    assert weights.device.type == "cuda" and weights.dtype == dtype
    assert not torch.isnan(weights).any() and torch.isfinite(weights).all()
    assert torch.all(weights[0, :, 2] == 0)
    assert torch.all(weights[~mask.expand_as(weights).to(DEVICE)] == 0)
    expected = masked_softmax(scores.to(dtype).float(), mask)
    torch.testing.assert_close(weights.float().cpu(), expected, rtol=0, atol=ATOL[dtype] * 2)


@pytest.mark.parametrize("dtype", [torch.float32, *HALF])
def test_masked_softmax_gradients_on_cuda_with_a_fully_masked_row(dtype):
    gen = torch.Generator().manual_seed(4)
    scores = torch.randn(3, 4, 5, generator=gen).to(DEVICE, dtype).requires_grad_()
    mask = random_mask((3, 4, 5), gen)
    mask[1, 2] = False
    mask = mask.to(DEVICE)
    upstream = torch.randn(3, 4, 5, generator=gen).to(DEVICE, dtype)
    (grad,) = torch.autograd.grad(masked_softmax(scores, mask), scores, upstream)
    assert torch.isfinite(grad).all()
    assert torch.all(grad[~mask] == 0) and grad[mask].abs().sum() > 0
