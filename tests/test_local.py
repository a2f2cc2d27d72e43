"""Local attention: local-m and local-p (Luong et al. 2015) against global attention, and the banded
sliding window against its dense reference (values and gradients, with masks)."""

import contextlib
import math
import os
import re

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from attn_course import local
from attn_course.attention import attend
from attn_course.masking import causal_mask, padding_mask, window_mask

F64 = torch.float64
SEEDS = [0, 1, 2]


def qkv(gen, lead, lq, lk, d=4, dv=3, dtype=F64, requires_grad=False):
    return tuple(torch.randn(*lead, n, size, generator=gen, dtype=dtype, requires_grad=requires_grad)
                 for n, size in ((lq, d), (lk, d), (lk, dv)))


def random_mask(shape, gen, p=0.6):
    return torch.rand(shape, generator=gen) < p


# --- windows, Gaussian, predicted position ---------------------------------------------------------

def test_window_around_keeps_2d_plus_1_keys_and_is_cut_at_the_ends():
    positions = torch.tensor([0, 3, 9])
    window = local.window_around(positions, 10, 2)  # (3, 10)
    assert window.sum(-1).tolist() == [3, 5, 3]
    assert window[1].nonzero().flatten().tolist() == [1, 2, 3, 4, 5]
    real = local.window_around(torch.tensor([3.5]), 10, 2)
    assert real[0].nonzero().flatten().tolist() == [2, 3, 4, 5]  # |s - 3.5| <= 2


def test_gaussian_window_is_one_at_the_centre_and_exp_minus_two_at_the_edge():
    g = local.gaussian_window(torch.tensor([4.0], dtype=F64), 10, 4)[0]
    assert g[4] == 1.0
    torch.testing.assert_close(g[[0, 8]], torch.full((2,), math.exp(-2), dtype=F64))
    assert g.dtype == F64


@pytest.mark.parametrize("seed", SEEDS)
def test_predict_position_is_eq_9_and_stays_inside_the_sentence(seed):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(3, 5, 6, generator=gen, dtype=F64)
    W_p, v_p = 2 * torch.randn(4, 6, generator=gen, dtype=F64), 3 * torch.randn(4, generator=gen, dtype=F64)
    p = local.predict_position(h, W_p, v_p, 11)
    assert p.shape == (3, 5)
    expected = torch.stack([torch.stack([11 * torch.sigmoid(v_p @ torch.tanh(W_p @ h_t)) for h_t in row])
                            for row in h])
    torch.testing.assert_close(p, expected)
    assert (p > 0).all() and (p < 11).all()
    lengths = torch.tensor([4, 11, 7])
    per_sentence = local.predict_position(h, W_p, v_p, lengths)
    torch.testing.assert_close(per_sentence, expected / 11 * lengths[:, None])


def test_predicted_positions_have_a_gradient_through_the_gaussian():
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(2, 4, 5, generator=gen, dtype=F64)
    W_p = torch.randn(3, 5, generator=gen, dtype=F64, requires_grad=True)
    v_p = torch.randn(3, generator=gen, dtype=F64, requires_grad=True)
    q, k, v = qkv(gen, (2,), 4, 9)
    p = local.predict_position(h, W_p, v_p, 9)
    context, _ = local.local_p(q, k, v, p, 2)
    context.sum().backward()
    assert W_p.grad.abs().sum() > 0 and v_p.grad.abs().sum() > 0
    assert torch.isfinite(W_p.grad).all()


# --- local-m -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("lq", "lk"), [(6, 6), (4, 9), (9, 4), (1, 1)])
def test_local_m_with_a_window_covering_the_sentence_is_global_attention(seed, lq, lk):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = qkv(gen, (2,), lq, lk)
    mask = random_mask((2, lq, lk), gen)
    for half_width in (lk - 1, lk + 5):  # D >= S - 1: every p_t in [0, S-1] sees every key
        got = local.local_m(q, k, v, half_width, mask=mask)
        torch.testing.assert_close(got, attend(q, k, v, mask=mask))


@pytest.mark.parametrize("seed", SEEDS)
def test_local_m_is_the_sliding_window_with_window_d_plus_1(seed):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = qkv(gen, (2, 3), 11, 11)
    for half_width in (0, 1, 3):
        context, weights = local.local_m(q, k, v, half_width)
        ref_context, ref_weights = local.sliding_window_attention(q, k, v, half_width + 1, return_weights=True)
        torch.testing.assert_close((context, weights), (ref_context, ref_weights))


@pytest.mark.parametrize("seed", SEEDS)
def test_local_m_weights_live_in_the_window_and_sum_to_one(seed):
    gen = torch.Generator().manual_seed(seed)
    scores = 3 * torch.randn(2, 9, 6, generator=gen, dtype=F64)
    weights = local.local_m_weights(scores, 1)
    p = torch.arange(9).clamp(max=5)  # held at the last source word
    inside = (torch.arange(6) - p[:, None]).abs() <= 1
    assert torch.all(weights[:, ~inside] == 0) and torch.all(weights[:, inside] > 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 9, dtype=F64))
    # inside the window the weights are the softmax over the window's scores
    row = scores[0, 3, 2:5]
    torch.testing.assert_close(weights[0, 3, 2:5], torch.softmax(row, -1))


def test_local_m_accepts_explicit_positions_and_a_mask():
    gen = torch.Generator().manual_seed(4)
    scores = torch.randn(2, 3, 8, generator=gen)
    positions = torch.tensor([[0, 7, 4], [2, 2, 2]])
    mask = padding_mask(torch.tensor([8, 3]))  # (2, 1, 8)
    weights = local.local_m_weights(scores, 1, positions, mask=mask)
    assert weights[0, 1].nonzero().flatten().tolist() == [6, 7]
    assert weights[1, 0].nonzero().flatten().tolist() == [1, 2]  # key 3 is padding
    assert torch.all(weights[1, :, 3:] == 0)


# --- local-p -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_local_p_with_a_covering_window_is_global_attention_times_the_gaussian(seed):
    """What is exactly true: with D >= S the window holds every key, so the softmax is global attention's,
    and local-p's weights are global weights times the Gaussian (which never becomes 1 everywhere)."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = qkv(gen, (2,), 5, 7)
    positions = 7 * torch.rand(2, 5, generator=gen, dtype=F64)
    mask = random_mask((2, 1, 7), gen)
    half_width = 7
    context, weights = local.local_p(q, k, v, positions, half_width, mask=mask)
    _, global_weights = attend(q, k, v, mask=mask)
    expected = global_weights * local.gaussian_window(positions, 7, half_width)
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(context, expected @ v)
    assert (weights.sum(-1)[mask.any(-1).expand(2, 5)] < 1).all()  # the Gaussian takes its share


@pytest.mark.parametrize("seed", SEEDS)
def test_local_p_approaches_global_attention_as_the_window_grows(seed):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = qkv(gen, (2,), 4, 10)
    positions = 10 * torch.rand(2, 4, generator=gen, dtype=F64)
    errors = [(local.local_p(q, k, v, positions, d)[1] - attend(q, k, v)[1]).abs().max().item()
              for d in (10, 100, 1000, 10_000)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-6  # 1 - exp(-S² / (2σ²)) with σ = 5000


@pytest.mark.parametrize("seed", SEEDS)
def test_local_p_weights_are_the_window_softmax_times_the_gaussian(seed):
    gen = torch.Generator().manual_seed(seed)
    scores = 2 * torch.randn(3, 4, 12, generator=gen, dtype=F64)
    positions = 12 * torch.rand(3, 4, generator=gen, dtype=F64)
    weights = local.local_p_weights(scores, positions, 3)
    for b in range(3):
        for t in range(4):
            p = positions[b, t].item()
            keys = [s for s in range(12) if abs(s - p) <= 3]
            soft = torch.softmax(scores[b, t, keys], -1)
            gauss = torch.exp(-((torch.tensor(keys, dtype=F64) - p) ** 2) / (2 * 1.5**2))
            expected = torch.zeros(12, dtype=F64)
            expected[keys] = soft * gauss
            torch.testing.assert_close(weights[b, t], expected)


def test_local_p_module_predicts_positions_inside_each_sentence_and_learns():
    torch.manual_seed(0)
    module = local.LocalPAttention(hidden_size=6, attn_size=5, half_width=2)
    gen = torch.Generator().manual_seed(5)
    h = torch.randn(2, 3, 6, generator=gen)
    keys, values = torch.randn(2, 8, 6, generator=gen), torch.randn(2, 8, 4, generator=gen)
    lengths = torch.tensor([8, 5])
    context, weights, positions = module(h, keys, values, source_lengths=lengths)
    assert context.shape == (2, 3, 4) and weights.shape == (2, 3, 8) and positions.shape == (2, 3)
    assert (positions[1] < 5).all() and torch.all(weights[1, :, 5:] == 0)
    context.square().sum().backward()
    assert module.W_p.weight.grad.abs().sum() > 0 and module.v_p.weight.grad.abs().sum() > 0
    assert not hasattr(module, "weights")  # returned, never stashed


# --- the sliding window ------------------------------------------------------------------------------

def _parity(q, k, v, window, causal, mask, atol):
    outputs = []
    for impl in ("reference", "banded"):
        inputs = [x.detach().clone().requires_grad_() for x in (q, k, v)]
        context, weights = local.sliding_window_attention(*inputs, window, causal=causal, mask=mask,
                                                          impl=impl, return_weights=True)
        probe = torch.linspace(-1, 1, context.numel(), dtype=context.dtype).view_as(context)
        ((context * probe).sum() + weights.square().sum()).backward()
        outputs.append((context, weights, *(x.grad for x in inputs)))
    for name, ref, fast in zip(("context", "weights", "dq", "dk", "dv"), *outputs):
        torch.testing.assert_close(fast, ref, atol=atol, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("lq", "lk", "window"), [
    (16, 16, 4), (13, 13, 4), (10, 10, 1), (9, 9, 2), (7, 7, 7), (6, 6, 50), (5, 12, 3), (12, 5, 3), (1, 1, 1),
])
def test_banded_equals_the_reference_forward_and_backward_with_masks(seed, causal, lq, lk, window):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = qkv(gen, (2, 3), lq, lk)
    lengths = torch.randint(1, lk + 1, (2,), generator=gen)
    for mask in (None, padding_mask(lengths, lk)[:, None], random_mask((2, 1, lq, lk), gen), random_mask((lk,), gen)):
        _parity(q, k, v, window, causal, mask, atol=1e-10)


def test_banded_parity_in_float32_with_fully_masked_rows():
    gen = torch.Generator().manual_seed(7)
    q, k, v = qkv(gen, (2,), 20, 20, d=8, dv=8, dtype=torch.float32)
    mask = random_mask((2, 20, 20), gen)
    mask[0, 3] = False  # query 3 of batch 0 may attend nothing: zeros, not NaN, in both
    _parity(q, k, v, 5, False, mask, atol=1e-5)
    context = local.sliding_window_attention(q, k, v, 5, mask=mask, impl="banded")
    assert torch.all(context[0, 3] == 0)


@pytest.mark.parametrize("impl", local.IMPLS)
@pytest.mark.parametrize("seed", SEEDS)
def test_a_window_as_wide_as_the_sequence_is_global_attention(impl, seed):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = qkv(gen, (2,), 9, 9)
    mask = padding_mask(torch.tensor([9, 4]))
    torch.testing.assert_close(local.sliding_window_attention(q, k, v, 9, mask=mask, impl=impl),
                               attend(q, k, v, mask=mask)[0])
    torch.testing.assert_close(local.sliding_window_attention(q, k, v, 9, causal=True, impl=impl),
                               attend(q, k, v, mask=causal_mask(9))[0])


@pytest.mark.parametrize("impl", local.IMPLS)
def test_sliding_window_weights_stay_in_the_band(impl):
    gen = torch.Generator().manual_seed(8)
    q, k, v = qkv(gen, (1,), 15, 15)
    for causal in (False, True):
        _, weights = local.sliding_window_attention(q, k, v, 3, causal=causal, impl=impl, return_weights=True)
        band = window_mask(15, window=3, causal=causal)
        assert torch.all(weights[0][~band] == 0) and torch.all(weights[0][band] > 0)
        torch.testing.assert_close(weights.sum(-1), torch.ones(1, 15, dtype=F64))


@pytest.mark.parametrize("impl", local.IMPLS)
def test_causal_sliding_window_ignores_the_future_and_the_far_past(impl):
    gen = torch.Generator().manual_seed(9)
    q, k, v = qkv(gen, (2,), 12, 12)
    before = local.sliding_window_attention(q, k, v, 3, causal=True, impl=impl)
    k2, v2 = k.clone(), v.clone()
    k2[:, 8:], v2[:, 8:] = 5.0, -5.0  # the future of t = 7
    k2[:, :5], v2[:, :5] = 5.0, -5.0  # more than 2 steps back from t = 7
    after = local.sliding_window_attention(q, k2, v2, 3, causal=True, impl=impl)
    torch.testing.assert_close(after[:, 7], before[:, 7])
    assert not torch.allclose(after[:, 8], before[:, 8])


class _LargestTensor(TorchDispatchMode):
    """Records the largest memory block (in elements) behind any tensor an operation returns; a view
    such as ``expand`` shares its input's memory and costs nothing."""

    def __enter__(self):
        self.largest = 0
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.untyped_storage().nbytes() // t.element_size())
        return out


def test_banded_never_builds_an_l_by_l_matrix():
    n, d, window = 512, 8, 16
    q, k, v = (torch.randn(1, n, d) for _ in range(3))
    mask = padding_mask(torch.tensor([500]), n)
    with _LargestTensor() as banded:
        local.sliding_window_attention(q, k, v, window, mask=mask, impl="banded")
    with _LargestTensor() as reference:
        local.sliding_window_attention(q, k, v, window, mask=mask, impl="reference")
    assert reference.largest >= n * n
    assert banded.largest <= n * (3 * window) < n * n // 8  # O(n·w): scores (n/w blocks, w, 3w - 2)


class _Int64Sizes(TorchDispatchMode):
    """Records the number of elements of every int64 tensor an operation returns."""

    def __enter__(self):
        self.sizes = [0]
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dtype == torch.int64:
                self.sizes.append(t.untyped_storage().nbytes() // 8)
        return out


@pytest.mark.parametrize("causal", [False, True])
def test_banded_builds_no_int64_tensor_of_the_band_size(causal):
    """The band's index arithmetic compares small (nb, w, 1) and (nb, 1, span) tensors: only boolean
    tensors of the band's size (nb, w, span) are built, never int64 offsets i - j."""
    n, d, window = 512, 8, 16
    q, k, v = (torch.randn(1, n, d) for _ in range(3))
    with _Int64Sizes() as ints:
        local.sliding_window_attention(q, k, v, window, causal=causal, mask=padding_mask(torch.tensor([500]), n),
                                       impl="banded")
    blocks, span = n // window, 3 * window - 2
    assert max(ints.sizes) <= blocks * span < blocks * window * span


def test_dtype_and_device_follow_the_inputs():
    gen = torch.Generator().manual_seed(10)
    q, k, v = qkv(gen, (1,), 6, 6)
    for impl in local.IMPLS:
        assert local.sliding_window_attention(q, k, v, 2, impl=impl).dtype == F64
    assert local.local_p(q, k, v, torch.full((1, 6), 2.5, dtype=F64), 2)[1].dtype == F64
    assert local.local_m(q.float(), k.float(), v.float(), 1)[1].dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_banded_parity_on_cuda():
    gen = torch.Generator().manual_seed(11)
    q, k, v = (x.cuda() for x in qkv(gen, (2, 2), 33, 33))
    mask = padding_mask(torch.tensor([33, 20]), 33)[:, None].cuda()
    _parity(q, k, v, 4, True, mask, atol=1e-10)
    positions = torch.full((2, 2, 33), 7.5, dtype=F64, device="cuda")
    assert local.local_p(q, k, v, positions, 3)[1].device.type == "cuda"


# --- bad input -----------------------------------------------------------------------------------------

def _x(*shape, dtype=torch.float32):
    return torch.zeros(*shape, dtype=dtype)


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: local.sliding_window_attention(_x(1, 4, 2), _x(1, 4, 2), _x(1, 4, 2), 0),
     ValueError, "window must be >= 1, got 0"),
    (lambda: local.sliding_window_attention(_x(1, 4, 2), _x(1, 4, 2), _x(1, 4, 2), 2.5),
     TypeError, "window must be a whole number, got float"),
    (lambda: local.sliding_window_attention(_x(1, 4, 2), _x(1, 4, 2), _x(1, 4, 2), 2, impl="flash"),
     ValueError, "impl must be one of 'reference', 'banded', 'blocked', 'flex', got 'flash'"),
    (lambda: local.sliding_window_attention(_x(1, 4, 2), _x(1, 4, 3), _x(1, 4, 2), 2),
     ValueError, "q and k must have the same feature size D"),
    (lambda: local.sliding_window_attention(_x(1, 4, 2), _x(1, 4, 2), _x(1, 4, 2), 2, mask=torch.ones(3, 3).bool()),
     ValueError, "mask of shape (3, 3) does not broadcast to the scores' shape (1, 4, 4)"),
    (lambda: local.sliding_window_attention(_x(1, 4, 2), _x(1, 4, 2), _x(1, 4, 2), 2, causal=1),
     TypeError, "causal must be True or False, got int"),
    (lambda: local.local_m(_x(1, 4, 2), _x(1, 6, 2), _x(1, 6, 2), -1),
     ValueError, "half_width must be >= 0, got -1"),
    (lambda: local.local_m_weights(_x(2, 3, 6), 1, torch.tensor([[0, 1, 6], [0, 1, 2]])),
     ValueError, "positions must lie inside the sequence, between 0 and 5 (S = 6), got values from 0 to 6"),
    (lambda: local.local_m_weights(_x(2, 3, 6), 1, torch.tensor([0.0, 1.0, 2.0])),
     TypeError, "positions must be an integer tensor for local-m (whole source positions p_t"),
    (lambda: local.local_m_weights(_x(2, 3, 6), 1, torch.tensor([[0, 1], [0, 1]])),
     ValueError, "positions must have shape (..., Lq) = (2, 3) (one position per query), got shape (2, 2)"),
    (lambda: local.local_p_weights(_x(2, 3, 6), torch.full((2, 3), 6.5), 2),
     ValueError, "positions must lie inside the sequence, between 0 and 6 (S = 6), got values from 6.5 to 6.5"),
    (lambda: local.local_p_weights(_x(2, 3, 6), torch.full((2, 3), float("nan")), 2),
     ValueError, "positions must lie inside the sequence"),
    (lambda: local.local_p_weights(_x(2, 3, 6), torch.full((2, 3), 1.0), 0),
     ValueError, "half_width must be >= 1, got 0"),
    (lambda: local.local_p_weights(_x(6), torch.full((1,), 1.0), 1),
     ValueError, "scores must have shape (..., Lq, S), at least 2 dimensions, got shape (6,)"),
    (lambda: local.local_p(_x(1, 4, 2), _x(1, 6, 2), _x(1, 5, 2), torch.ones(1, 4), 2),
     ValueError, "k and v must have the same number of keys Lk"),
    (lambda: local.predict_position(_x(2, 3, 5), _x(4, 6), _x(4), 7),
     ValueError, "W_p and h must have the same state size Hd"),
    (lambda: local.predict_position(_x(2, 3, 5), _x(4, 5), _x(3), 7),
     ValueError, "W_p and v_p must have the same predictor size A"),
    (lambda: local.predict_position(_x(2, 3, 5), _x(4, 5), _x(4), 0),
     ValueError, "source_len must be >= 1, got 0"),
    (lambda: local.predict_position(_x(2, 3, 5), _x(4, 5), _x(4), torch.tensor([3, 4, 5])),
     ValueError, "source_len must be an int or a tensor of shape (2,)"),
])
def test_bad_input_is_named(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


# --- the fast sliding window: blocked SDPA and FlexAttention ---------------------------------------------

SHAPES = [(16, 16, 4), (13, 13, 4), (10, 10, 1), (5, 5, 8), (1, 1, 1), (1, 1, 3), (5, 12, 3), (12, 5, 3)]


@pytest.fixture
def eager_flex(monkeypatch):
    """FlexAttention uncompiled (same values; the compile would take tens of seconds per shape here)."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    monkeypatch.setattr(local, "FLEX_COMPILE", False)
    with _no_flex_warning():
        yield


@contextlib.contextmanager
def _no_flex_warning():
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        yield


def _masks(gen, lq, lk):
    """No mask; a padding mask whose first sequence is fully padded (its rows must give zeros); a random one."""
    return (None, padding_mask(torch.tensor([0, lk]), lk)[:, None], random_mask((2, 1, lq, lk), gen))


def _fast_parity(impl, q, k, v, window, causal, mask, atol, backward=True):
    outputs = []
    for name in ("reference", impl):
        inputs = [x.detach().clone().requires_grad_(backward) for x in (q, k, v)]
        context = local.sliding_window_attention(*inputs, window, causal=causal, mask=mask, impl=name)
        if backward:
            probe = torch.linspace(-1, 1, context.numel(), dtype=context.dtype).view_as(context)
            (context * probe).sum().backward()
        outputs.append((context, *(x.grad for x in inputs if backward)))
    for name, ref, fast in zip(("context", "dq", "dk", "dv"), *outputs):
        assert torch.isfinite(fast).all(), name
        torch.testing.assert_close(fast, ref, atol=atol, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("lq", "lk", "window"), SHAPES)
def test_blocked_equals_the_reference_forward_and_backward(seed, dtype, causal, lq, lk, window):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = qkv(gen, (2, 3), lq, lk, d=8, dv=5, dtype=dtype)
    for mask in _masks(gen, lq, lk):
        _fast_parity("blocked", q, k, v, window, causal, mask, atol=1e-5 if dtype == torch.float32 else 1e-10)


def test_blocked_fully_masked_rows_are_zero_with_zero_gradients():
    gen = torch.Generator().manual_seed(3)
    q, k, v = qkv(gen, (2,), 9, 9, requires_grad=True)
    mask = padding_mask(torch.tensor([0, 9]), 9)  # batch 0: every key is padding
    context = local.sliding_window_attention(q, k, v, 3, mask=mask, impl="blocked")
    context.sum().backward()
    assert torch.all(context[0] == 0) and torch.all(q.grad[0] == 0) and torch.all(k.grad[0] == 0)


@pytest.mark.parametrize("impl", ["blocked", "flex"])
@pytest.mark.parametrize("n", [1, 7, 9])
def test_a_fast_window_as_wide_as_the_sequence_is_global_attention(impl, n, request):
    if impl == "flex":
        request.getfixturevalue("eager_flex")
    gen = torch.Generator().manual_seed(n)
    q, k, v = qkv(gen, (2,), n, n, dtype=torch.float32)
    mask = padding_mask(torch.tensor([n, max(1, n // 2)]))
    with torch.no_grad():
        for window in (n, n + 5):
            torch.testing.assert_close(local.sliding_window_attention(q, k, v, window, mask=mask, impl=impl),
                                       attend(q, k, v, mask=mask)[0])
            torch.testing.assert_close(local.sliding_window_attention(q, k, v, window, causal=True, impl=impl),
                                       attend(q, k, v, mask=causal_mask(n))[0])


def test_blocked_runs_the_fused_sdpa_kernel_and_stays_o_n_w():
    from attn_course import bench

    n, d, window = 512, 8, 16
    q, k, v = (torch.randn(1, 2, n, d) for _ in range(3))
    assert bench.sdpa_kernels(lambda: local.sliding_window_attention(q, k, v, window, impl="blocked")) \
        == "flash (CPU)"  # a 4-D mask: not the slow math fallback
    with _LargestTensor() as blocked:
        local.sliding_window_attention(q, k, v, window, mask=padding_mask(torch.tensor([500]), n)[:, None],
                                       impl="blocked")
    assert blocked.largest <= 2 * n * 3 * window < 2 * n * n // 4  # (B·H, nb, w, 3w) at most


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("lq", "lk", "window"), SHAPES)
def test_flex_equals_the_reference_forward(eager_flex, seed, causal, lq, lk, window):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = qkv(gen, (2, 3), lq, lk, d=8, dv=5, dtype=torch.float32)
    for mask in _masks(gen, lq, lk):
        with torch.no_grad():
            _fast_parity("flex", q, k, v, window, causal, mask, atol=1e-5, backward=False)


def test_flex_has_no_cpu_backward_and_says_so(eager_flex):
    gen = torch.Generator().manual_seed(4)
    q, k, v = qkv(gen, (1,), 8, 8, dtype=torch.float32, requires_grad=True)
    with pytest.raises(NotImplementedError, match="impl='flex' has no backward on the CPU.*impl='blocked'"):
        local.sliding_window_attention(q, k, v, 3, impl="flex")
    with torch.no_grad():  # the forward is fine
        local.sliding_window_attention(q, k, v, 3, impl="flex")


@pytest.mark.skipif(not os.environ.get("ATTN_COURSE_FLEX_COMPILE"),
                    reason="compiles FlexAttention (about 20 s on a 2-core CPU): set ATTN_COURSE_FLEX_COMPILE=1")
def test_compiled_flex_equals_the_reference():
    pytest.importorskip("torch.nn.attention.flex_attention")
    gen = torch.Generator().manual_seed(5)
    q, k, v = qkv(gen, (1, 2), 40, 40, d=16, dv=16, dtype=torch.float32)
    with torch.no_grad():
        _fast_parity("flex", q, k, v, 8, True, None, atol=1e-5, backward=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("impl", ["blocked", "flex"])
@pytest.mark.parametrize("causal", [False, True])
def test_fast_impls_on_cuda_forward_and_backward(impl, causal):
    if impl == "flex":
        pytest.importorskip("torch.nn.attention.flex_attention")
    gen = torch.Generator().manual_seed(12)
    q, k, v = (x.cuda() for x in qkv(gen, (2, 2), 300, 300, d=16, dv=16, dtype=torch.float32))
    mask = padding_mask(torch.tensor([300, 0]), 300)[:, None].cuda()
    for m in (None, mask):
        _fast_parity(impl, q, k, v, 64, causal, m, atol=1e-4)


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: local.sliding_window_attention(_x(1, 4, 2), _x(1, 4, 2), _x(1, 4, 2), 2, impl="blocked",
                                            return_weights=True),
     ValueError, "impl='blocked' never builds the attention weights, so return_weights=True is not available "
                 "with it: use impl='reference' or impl='banded'"),
    (lambda: local.sliding_window_attention(_x(1, 4, 2), _x(1, 4, 2), _x(1, 4, 2), 2, impl="flex",
                                            return_weights=True),
     ValueError, "impl='flex' never builds the attention weights"),
    (lambda: local.sliding_window_attention(*(_x(1, 4, 2, dtype=F64),) * 3, 2, impl="flex"),
     TypeError, "impl='flex' supports the dtypes float16, bfloat16, float32, got torch.float64"),
    (lambda: local.sliding_window_attention(*(_x(1, 4, 2, dtype=torch.float8_e4m3fn),) * 3, 2, impl="blocked"),
     TypeError, "impl='blocked' supports the dtypes float16, bfloat16, float32, float64, got torch.float8_e4m3fn"),
    (lambda: local.sliding_window_attention(_x(1, 4, 2), _x(1, 4, 2), _x(1, 4, 2), 0, impl="blocked"),
     ValueError, "window must be >= 1, got 0"),
])
def test_fast_impls_bad_input_is_named(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_flex_without_flexattention_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_flex(name, *args, **kwargs):
        if name == "torch.nn.attention" and args[2] and "flex_attention" in args[2]:
            raise ImportError("no flex_attention")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_flex)
    with pytest.raises(RuntimeError, match=re.escape("impl='flex' needs FlexAttention (torch >= 2.5)")):
        local.sliding_window_attention(_x(1, 4, 2), _x(1, 4, 2), _x(1, 4, 2), 2, impl="flex")


# --- impl="blocked" on the CPU: the keys as overlapping views, the fused kernel called directly ------------

# (70, 70, 9), (70, 61, 6): middle chunks that share one band between end chunks with their own masks
AWKWARD = [(13, 13, 4), (3, 3, 8), (1, 1, 1), (1, 1, 3), (5, 12, 3), (12, 5, 3), (37, 37, 8), (70, 70, 9),
           (70, 61, 6)]


@pytest.fixture(params=["cpu flash", "sdpa"])
def blocked_path(request, monkeypatch):
    """Small chunks (c = 4 < w) and backward groups of one or two chunks, so the awkward shapes cross chunk
    and group edges; "cpu flash" is _FlashChunksCPU, "sdpa" the plain SDPA call on the window views (any
    other device, or the CPU with flash switched off)."""
    monkeypatch.setattr(local, "BLOCKED_CHUNK", 4)
    monkeypatch.setattr(local, "BACKWARD_KEY_ROWS", 24)
    if request.param == "sdpa":
        monkeypatch.setattr(local, "_use_cpu_flash", lambda q, v: False)
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("lq", "lk", "window"), AWKWARD)
def test_blocked_views_equal_the_reference_forward_and_backward(blocked_path, dtype, causal, lq, lk, window):
    gen = torch.Generator().manual_seed(lq * 100 + lk)
    q, k, v = qkv(gen, (2, 3), lq, lk, d=8, dv=8, dtype=dtype)  # D = Dv: the CPU flash kernel's case
    assert local._use_cpu_flash(q, v) == (blocked_path == "cpu flash")
    for mask in _masks(gen, lq, lk):  # no mask, padding with a fully padded sequence, random
        _fast_parity("blocked", q, k, v, window, causal, mask, atol=1e-5 if dtype == torch.float32 else 1e-10)


def test_blocked_cpu_path_runs_the_flash_kernel_and_takes_the_switch():
    from attn_course import bench

    q, k, v = (torch.randn(1, 2, 64, 8) for _ in range(3))
    assert bench.sdpa_kernels(lambda: local.sliding_window_attention(q, k, v, 8, impl="blocked")) == "flash (CPU)"
    before = torch.backends.cuda.flash_sdp_enabled()
    torch.backends.cuda.enable_flash_sdp(False)
    try:  # flash switched off: not called behind the switch's back, SDPA picks (its math path)
        assert not local._use_cpu_flash(q, v)
        assert bench.sdpa_kernels(lambda: local.sliding_window_attention(q, k, v, 8, impl="blocked")) == "math"
    finally:
        torch.backends.cuda.enable_flash_sdp(before)


class _LargestFeatureTensor(TorchDispatchMode):
    """The largest memory block (in elements) behind any tensor with last dimension ``size`` that an
    operation returns: the copies of the keys and values, and their gradients."""

    def __init__(self, size):
        super().__init__()
        self.size, self.largest = size, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dim() and t.size(-1) == self.size:
                self.largest = max(self.largest, t.untyped_storage().nbytes() // t.element_size())
        return out


@pytest.mark.parametrize("path", ["cpu flash", "sdpa"])
@pytest.mark.parametrize("causal", [False, True])
def test_blocked_never_copies_the_keys_per_chunk(monkeypatch, path, causal):
    """Chunks of c = 16 queries read span = (2R + 1)·c = 144 keys (R = ⌈(w - 1)/c⌉ = 4): copying each chunk's
    keys would take (B·H, nb, span, D), 9x the keys. The SDPA path's views take one padded copy, (B·H, N + 2w, D);
    the CPU path copies only the few rows at the ends (its largest new tensor is the context itself) and also
    keeps the keys' gradient at the keys' size (SDPA's own backward cannot: it returns the windows')."""
    monkeypatch.setattr(local, "BLOCKED_CHUNK", 16)
    monkeypatch.setattr(local, "BACKWARD_KEY_ROWS", 256)
    if path == "sdpa":
        monkeypatch.setattr(local, "_use_cpu_flash", lambda q, v: False)
    n, d, window, heads = 512, 24, 64, 2
    q, k, v = (torch.randn(1, heads, n, d, requires_grad=True) for _ in range(3))
    with _LargestFeatureTensor(d) as forward:
        context = local.sliding_window_attention(q, k, v, window, causal=causal, impl="blocked")
    with _LargestFeatureTensor(d) as backward:
        context.backward(torch.ones_like(context))
    bound = heads * (n + 2 * window) * d
    per_chunk_copies = heads * (n // 16) * (16 + 2 * (window - 1)) * d
    assert forward.largest <= bound < per_chunk_copies // 4
    if path == "cpu flash":
        assert forward.largest <= heads * n * d  # the context: the middle chunks read the keys in place
        assert backward.largest <= heads * n * d


# --- edge cases and guards of the fast paths ------------------------------------------------------------

@pytest.mark.parametrize("impl", local.ALL_IMPLS)
@pytest.mark.parametrize(("lq", "lk"), [(0, 5), (5, 0), (0, 0)])
def test_no_query_or_no_key_gives_an_empty_or_zero_context_in_every_impl(impl, lq, lk):
    """Lk = 0: every query has nothing to attend, a zero context (as a fully masked row); Lq = 0: nothing."""
    gen = torch.Generator().manual_seed(13)
    dtype = F64 if impl in ("reference", "banded", "blocked") else torch.float32
    grad = impl != "flex"  # flex has no CPU backward
    q, k, v = qkv(gen, (2, 3), lq, lk, d=8, dv=5, dtype=dtype, requires_grad=grad)
    for mask in (None, torch.ones(lq, lk, dtype=torch.bool)):
        context = local.sliding_window_attention(q, k, v, 3, causal=True, mask=mask, impl=impl)
        assert context.shape == (2, 3, lq, 5) and context.dtype == dtype
        assert torch.all(context == 0)
    if grad:  # still part of the graph: a loss through it backpropagates (zeros)
        context.sum().backward()
        assert all(x.grad.shape == x.shape and torch.all(x.grad == 0) for x in (q, k, v))
    if impl in local.IMPLS:
        _, weights = local.sliding_window_attention(q, k, v, 3, impl=impl, return_weights=True)
        assert weights.shape == (2, 3, lq, lk)


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("causal", [False, True])
def test_blocked_cpu_backward_in_half_precision_matches_the_sdpa_path(monkeypatch, dtype, atol, causal):
    """_FlashChunksCPU in fp16/bf16, forward and backward, against the plain SDPA call on the same windows
    (and both against the float64 reference, loosely)."""
    monkeypatch.setattr(local, "BLOCKED_CHUNK", 4)
    monkeypatch.setattr(local, "BACKWARD_KEY_ROWS", 24)
    gen = torch.Generator().manual_seed(14)
    q, k, v = qkv(gen, (2, 3), 37, 37, d=8, dv=8, dtype=torch.float32)
    mask = padding_mask(torch.tensor([0, 30]), 37)[:, None]
    results = []
    for use_flash, kind in ((True, dtype), (False, dtype), (False, F64)):
        monkeypatch.setattr(local, "_use_cpu_flash", lambda q, v, on=use_flash: on)
        inputs = [x.detach().to(kind).requires_grad_() for x in (q, k, v)]
        context = local.sliding_window_attention(*inputs, 5, causal=causal, mask=mask,
                                                 impl="blocked" if kind != F64 else "reference")
        probe = torch.linspace(-1, 1, context.numel(), dtype=kind).view_as(context)
        (context * probe).sum().backward()
        results.append([x.double() for x in (context, *(x.grad for x in inputs))])
        assert context.dtype == kind and inputs[0].grad.dtype == kind
    for name, flash, sdpa, reference in zip(("context", "dq", "dk", "dv"), *results):
        torch.testing.assert_close(flash, sdpa, atol=atol, rtol=1e-2, msg=lambda m, n=name: f"{n}: {m}")
        torch.testing.assert_close(flash, reference, atol=atol, rtol=1e-2, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("needed", [(True, False, False), (False, True, False), (False, False, True),
                                    (False, True, True)])
def test_blocked_cpu_backward_computes_only_the_gradients_asked_for(monkeypatch, needed):
    monkeypatch.setattr(local, "BLOCKED_CHUNK", 4)
    gen = torch.Generator().manual_seed(15)
    q, k, v = qkv(gen, (2,), 13, 13, d=8, dv=8)
    results = []
    for impl in ("blocked", "reference"):
        inputs = [x.detach().clone().requires_grad_(n) for x, n in zip((q, k, v), needed)]
        local.sliding_window_attention(*inputs, 4, impl=impl).square().sum().backward()
        results.append([x.grad for x in inputs])
    for fast, ref, n in zip(*results, needed):
        assert (fast is None) == (not n)
        if n:
            torch.testing.assert_close(fast, ref, atol=1e-10, rtol=1e-7)


def test_blocked_cpu_backward_cannot_be_differentiated_again():
    gen = torch.Generator().manual_seed(16)
    q, k, v = qkv(gen, (2,), 9, 9, d=8, dv=8, requires_grad=True)
    assert local._use_cpu_flash(q, v)
    context = local.sliding_window_attention(q, k, v, 3, impl="blocked")
    (grad_q,) = torch.autograd.grad(context.square().sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad_q.sum().backward()


def test_cpu_flash_needs_both_private_ops_with_masks(monkeypatch):
    from types import SimpleNamespace

    def op(schema):
        return SimpleNamespace(default=SimpleNamespace(_schema=schema))

    forward, backward = local.CPU_FLASH_OPS
    with_mask = "aten::op(Tensor query, *, Tensor? attn_mask=None, float? scale=None)"
    without_mask = "aten::op(Tensor query, *, float? scale=None)"
    assert local._has_cpu_flash_ops()  # this torch (see pyproject: >= 2.1, so not every torch)
    assert local._has_cpu_flash_ops(SimpleNamespace(**{forward: op(with_mask), backward: op(with_mask)}))
    assert not local._has_cpu_flash_ops(SimpleNamespace(**{forward: op(with_mask)}))  # no backward
    assert not local._has_cpu_flash_ops(SimpleNamespace(**{forward: op(with_mask), backward: op(without_mask)}))
    assert not local._has_cpu_flash_ops(SimpleNamespace(**{forward: op(without_mask), backward: op(with_mask)}))


def test_blocked_falls_back_to_plain_sdpa_without_the_cpu_flash_ops(monkeypatch):
    gen = torch.Generator().manual_seed(17)
    q, k, v = qkv(gen, (2, 2), 21, 21, d=8, dv=8, dtype=torch.float32)
    mask = random_mask((2, 1, 21, 21), gen)
    expected = local.sliding_window_attention(q, k, v, 4, mask=mask, impl="blocked")
    monkeypatch.setattr(local, "CPU_FLASH_OPS", (local.CPU_FLASH_OPS[0], "_no_such_backward_op"))
    monkeypatch.setattr(local, "_CPU_FLASH_OPS_OK", None)  # look again, at the patched names

    def never(*args):
        raise AssertionError("_FlashChunksCPU must not run without its backward op")

    monkeypatch.setattr(local._FlashChunksCPU, "apply", never)
    assert not local._use_cpu_flash(q, v)
    got = local.sliding_window_attention(q, k, v, 4, mask=mask, impl="blocked")
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    _fast_parity("blocked", q, k, v, 4, False, mask, atol=1e-5)  # and its gradients, via SDPA's


@pytest.mark.parametrize(("mask_shape", "expected"), [
    ((2, 1, 6, 6), (2, None)),  # a padding-like mask: one per batch entry, the same for every head
    ((1, 3, 6, 6), (None, 3)),
    ((6, 6), (None, None)),
    ((2, 3, 6, 6), (2, 3)),
])
def test_flex_builds_its_block_mask_only_over_the_dimensions_the_mask_varies(eager_flex, monkeypatch,
                                                                              mask_shape, expected):
    flex = local._flex_module()
    calls = []
    real = flex.create_block_mask

    def spy(mask_mod, B, H, *args, **kwargs):
        calls.append((B, H))
        return real(mask_mod, B, H, *args, **kwargs)

    monkeypatch.setattr(flex, "create_block_mask", spy)
    gen = torch.Generator().manual_seed(18)
    q, k, v = qkv(gen, (2, 3), 6, 6, d=8, dv=8, dtype=torch.float32)
    mask = random_mask(mask_shape, gen)
    with torch.no_grad():
        _fast_parity("flex", q, k, v, 2, False, mask, atol=1e-5, backward=False)
    assert calls == [expected]


def test_flex_warns_once_when_the_shapes_pass_the_recompile_limit(eager_flex, monkeypatch):
    """Past dynamo's recompile limit the compiled flex silently runs uncompiled: say so (no compile here:
    the 'compiled' function is the eager one)."""
    monkeypatch.setattr(local, "FLEX_COMPILE", True)
    monkeypatch.setattr(local, "_flex_compiled", local._flex_module().flex_attention)
    monkeypatch.setattr(local, "_flex_layouts", set())
    monkeypatch.setattr(local, "_flex_warned", False)
    monkeypatch.setattr(local, "_recompile_limit", lambda: 2)
    import warnings
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in (4, 4, 5, 6, 7, 8):
            local.sliding_window_attention(*(torch.randn(1, n, 8),) * 3, 2, impl="flex")
    ours = [w for w in caught if "recompile limit" in str(w.message)]
    assert len(ours) == 1 and "different shapes" in str(ours[0].message)
    assert ours[0].filename == __file__  # points at the caller
