"""Multi-head attention: parity with torch.nn.MultiheadAttention after copying its weights (outputs, averaged
and per-head weights, gradients; self- and cross-attention; padding, causal and per-head masks; also its
fused eval-mode path), the reference and SDPA paths against each other, heads_attention on its own,
fully-masked queries, dropout, bfloat16, memory that never holds Lq x Lk numbers on the fast path (and the
documented case where it does), fused input projections, and clear errors."""

import re

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from attn_course.bench import OpNames
from attn_course.masking import causal_mask, padding_mask
from attn_course.multihead import (
    IMPLS,
    MultiHeadAttention,
    attention_mask,
    heads_attention,
    merge_heads,
    split_heads,
)

E, H = 16, 4
TOL = {"rtol": 1e-5, "atol": 1e-5}


def make_pair(seed=0, kdim=None, vdim=None, bias=True, impl="sdpa", device="cpu"):
    """nn.MultiheadAttention with random (non-zero) parameters, and ours with the same parameters."""
    torch.manual_seed(seed)
    theirs = nn.MultiheadAttention(E, H, kdim=kdim, vdim=vdim, bias=bias, batch_first=True)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p) / p.size(-1) ** 0.5)
    ours = MultiHeadAttention(E, H, kdim=kdim, vdim=vdim, bias=bias, impl=impl)
    ours.load_state_dict(theirs.state_dict())
    return theirs.to(device), ours.to(device)


def inputs(gen, batch=2, lq=5, lk=None, kdim=E, vdim=E, cross=False, memory=False, device="cpu"):
    """query, key, value; key = value = None for self-attention; value is key with ``memory`` (an encoder's
    output, as in a decoder's cross-attention)."""
    query = torch.randn(batch, lq, E, generator=gen).to(device).requires_grad_()
    if not cross:
        return query, None, None
    lk = lq if lk is None else lk
    key = torch.randn(batch, lk, kdim, generator=gen).to(device).requires_grad_()
    if memory:
        return query, key, key
    value = torch.randn(batch, lk, vdim, generator=gen).to(device).requires_grad_()
    return query, key, value


def unique(*tensors):
    """The distinct tensors among those given (key and value may be one tensor), Nones left out."""
    out = []
    for t in tensors:
        if t is not None and all(t is not u for u in out):
            out.append(t)
    return out


def grads(loss, tensors):
    return torch.autograd.grad(loss, tensors)


# Self-attention without and with masks; cross-attention with Lq != Lk, over one memory (key is value),
# causal, and with kdim, vdim != E. "attn": a random per-head (B, H, Lq, Lk) mask (key 0 always allowed,
# so no row is empty: nn.MultiheadAttention gives NaN there). Causal with padding: the triangle is folded
# into the mask (the fast path's O(Lq·Lk) case).
CASES = {
    "self": dict(),
    "self-padding-causal": dict(lengths=[5, 3], causal=True),
    "self-attn-4d": dict(attn=True),
    "self-all-masks": dict(lengths=[5, 3], causal=True, attn=True),
    "cross": dict(cross=True, lk=7, lengths=[7, 4]),
    "cross-memory": dict(cross=True, memory=True, lk=7, lengths=[7, 4]),
    "cross-causal-more-keys": dict(cross=True, lk=7, causal=True),
    "cross-causal-fewer-keys": dict(cross=True, lq=6, lk=4, causal=True),
    "cross-padding-causal": dict(cross=True, memory=True, lk=7, lengths=[7, 4], causal=True),
    "cross-kdim-vdim": dict(cross=True, lk=6, kdim=5, vdim=3, lengths=[2, 6]),
    "cross-kdim-vdim-no-bias": dict(cross=True, lk=6, kdim=5, vdim=3, bias=False, attn=True),
    "cross-no-bias": dict(cross=True, lk=3, bias=False),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES)
def test_matches_nn_multihead_attention_outputs_weights_and_gradients(impl, case):
    spec = CASES[case]
    kdim, vdim = spec.get("kdim"), spec.get("vdim")
    theirs, ours = make_pair(kdim=kdim, vdim=vdim, bias=spec.get("bias", True), impl=impl)
    gen = torch.Generator().manual_seed(1)
    query, key, value = inputs(gen, lq=spec.get("lq", 5), lk=spec.get("lk"), kdim=kdim or E, vdim=vdim or E,
                               cross=spec.get("cross"), memory=spec.get("memory"))
    b, lq = query.shape[:2]
    lk = lq if key is None else key.size(1)
    real = None if "lengths" not in spec else padding_mask(torch.tensor(spec["lengths"]), lk)[:, 0]  # (B, Lk)
    causal = causal_mask(lq, lk) if spec.get("causal") else None
    attn = None
    if spec.get("attn"):
        attn = random_mask((b, H, lq, lk), gen)
        attn[..., 0] = True
    # nn.MultiheadAttention: True = may NOT attend; a per-head mask is (B·H, Lq, Lk), batch-major
    allowed = attn if causal is None else causal if attn is None else attn & causal
    their_mask = None if allowed is None else ~(allowed if allowed.dim() == 2 else allowed.reshape(b * H, lq, lk))
    k, v = (query, query) if key is None else (key, value)
    leaves = unique(query, key, value) + list(ours.parameters())
    their_leaves = unique(query, key, value) + list(theirs.parameters())
    for average in (True, False):
        got, got_w = ours(query, key, value, key_padding_mask=real, attn_mask=attn, is_causal=causal is not None,
                          return_weights=True, average_weights=average)
        want, want_w = theirs(query, k, v, key_padding_mask=None if real is None else ~real,
                              attn_mask=their_mask, average_attn_weights=average)
        assert got_w.shape == ((b, lq, lk) if average else (b, H, lq, lk))
        torch.testing.assert_close(got, want, **TOL)
        torch.testing.assert_close(got_w, want_w, **TOL)
        probe = torch.randn(got.shape, generator=gen)  # a random linear loss on outputs and weights
        probe_w = torch.randn(got_w.shape, generator=gen)
        got_grads = grads((got * probe).sum() + (got_w * probe_w).sum(), leaves)
        want_grads = grads((want * probe).sum() + (want_w * probe_w).sum(), their_leaves)
        for g, w in zip(got_grads, want_grads):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    # the fast call (no weights) agrees too, values and gradients
    got, none = ours(query, key, value, key_padding_mask=real, attn_mask=attn, is_causal=causal is not None)
    want, _ = theirs(query, k, v, key_padding_mask=None if real is None else ~real, attn_mask=their_mask,
                     need_weights=False)
    assert none is None
    torch.testing.assert_close(got, want, **TOL)
    probe = torch.randn(got.shape, generator=gen)
    for g, w in zip(grads((got * probe).sum(), leaves), grads((want * probe).sum(), their_leaves)):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def random_mask(shape, gen, p=0.6):
    return torch.rand(shape, generator=gen) < p


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("masks", ["none", "causal", "padding", "attn", "all"])
def test_reference_and_sdpa_agree_forward_and_backward(seed, masks):
    gen = torch.Generator().manual_seed(seed)
    cross = seed == 1
    lq, lk = (4, 6) if cross else (6, 6)
    query, key, value = inputs(gen, batch=3, lq=lq, lk=lk, cross=cross)
    real = random_mask((3, lk), gen) if masks in ("padding", "all") else None
    attn = random_mask((3, H, lq, lk), gen) if masks in ("attn", "all") else None  # may mask whole rows
    causal = masks in ("causal", "all")
    _, ours = make_pair(seed)
    results = []
    for impl in IMPLS:
        ours.impl = impl
        output, _ = ours(query, key, value, key_padding_mask=real, attn_mask=attn, is_causal=causal)
        leaves = [t for t in (query, key, value) if t is not None] + list(ours.parameters())
        results.append((output, grads(output.square().sum(), leaves)))
    (ref, ref_grads), (fast, fast_grads) = results
    torch.testing.assert_close(fast, ref, **TOL)
    for g_fast, g_ref in zip(fast_grads, ref_grads):
        assert torch.isfinite(g_fast).all()
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_is_causal_is_the_causal_mask_and_the_future_does_not_leak(impl):
    gen = torch.Generator().manual_seed(3)
    _, ours = make_pair(impl=impl)
    x = torch.randn(2, 6, E, generator=gen)
    output, _ = ours(x, is_causal=True)
    torch.testing.assert_close(output, ours(x, attn_mask=causal_mask(6))[0], **TOL)
    changed = x.clone()
    changed[:, 4:] = torch.randn(2, 2, E, generator=gen)  # change the last two tokens
    after, _ = ours(changed, is_causal=True)
    torch.testing.assert_close(after[:, :4], output[:, :4], rtol=0, atol=1e-6)
    assert not torch.allclose(after[:, 4:], output[:, 4:])


@pytest.mark.parametrize("impl", IMPLS)
def test_a_query_with_no_key_gets_zero_weights_and_zero_context(impl):
    gen = torch.Generator().manual_seed(4)
    _, ours = make_pair(impl=impl)
    query, key, value = inputs(gen, lq=3, lk=4, cross=True)
    real = torch.tensor([[True, True, False, False], [False] * 4])  # the second sequence has no key at all
    attn = torch.ones(3, 4, dtype=torch.bool)
    attn[1] = False  # and no query may see anything from row 1
    for return_weights in (False, True):
        output, weights = ours(query, key, value, key_padding_mask=real, attn_mask=attn,
                               return_weights=return_weights, average_weights=False)
        dead = torch.tensor([[False, True, False], [True, True, True]])  # (B, Lq)
        bias = ours.out_proj.bias.expand(int(dead.sum()), E)
        torch.testing.assert_close(output[dead], bias, rtol=0, atol=0)  # zero context -> just the bias
        assert not torch.allclose(output[~dead], ours.out_proj.bias.expand(int((~dead).sum()), E))
        if return_weights:
            assert torch.all(weights.transpose(1, 2)[dead] == 0)
            alive = weights.transpose(1, 2)[~dead]  # (queries with a key, H, Lk)
            torch.testing.assert_close(alive.sum(-1), torch.ones(alive.shape[:2]))
        leaves = (query, key, value, *ours.parameters())
        assert all(torch.isfinite(g).all() for g in grads(output.sum(), leaves))


@pytest.mark.parametrize("impl", IMPLS)
def test_weights_are_rows_that_sum_to_one_and_average_over_heads(impl):
    gen = torch.Generator().manual_seed(5)
    _, ours = make_pair(impl=impl)
    x = torch.randn(2, 5, E, generator=gen)
    real = torch.tensor([[True] * 5, [True, True, True, False, False]])
    _, per_head = ours(x, key_padding_mask=real, return_weights=True, average_weights=False)
    _, averaged = ours(x, key_padding_mask=real, return_weights=True)
    assert per_head.shape == (2, H, 5, 5) and averaged.shape == (2, 5, 5)
    torch.testing.assert_close(per_head.sum(-1), torch.ones(2, H, 5))
    assert torch.all(per_head[1, :, :, 3:] == 0)  # padded keys get exactly zero weight
    torch.testing.assert_close(averaged, per_head.mean(1))


@pytest.mark.parametrize("impl", IMPLS)
def test_dropout_only_while_training(impl):
    gen = torch.Generator().manual_seed(6)
    torch.manual_seed(0)
    ours = MultiHeadAttention(E, H, dropout=0.5, impl=impl)
    plain = MultiHeadAttention(E, H, impl=impl)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(2, 5, E, generator=gen)
    ours.eval()
    first, second = ours(x)[0], ours(x)[0]
    torch.testing.assert_close(first, second, rtol=0, atol=0)  # deterministic in eval mode
    torch.testing.assert_close(first, plain(x)[0], **TOL)
    ours.train()
    torch.manual_seed(1)
    dropped, weights = ours(x, return_weights=True, average_weights=False)
    assert dropped.shape == first.shape and not torch.allclose(dropped, first)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, H, 5))  # weights are returned before dropout


def test_inputs_of_another_dtype_are_accepted_under_autocast():
    _, ours = make_pair()
    x = torch.randn(2, 5, E, generator=torch.Generator().manual_seed(8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, _ = ours(x.bfloat16(), is_causal=True)
    torch.testing.assert_close(output.float(), ours(x, is_causal=True)[0], rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("impl", IMPLS)
def test_bfloat16_on_the_cpu_is_finite_and_close_to_float32(impl):
    _, ours = make_pair(impl=impl)
    gen = torch.Generator().manual_seed(9)
    x, memory = torch.randn(2, 6, E, generator=gen), torch.randn(2, 9, E, generator=gen)
    real = torch.tensor([[True] * 9, [True] * 4 + [False] * 5])
    calls = [lambda m, x, memory: m(x, is_causal=True),
             lambda m, x, memory: m(x, memory, key_padding_mask=real, return_weights=True)]
    half = MultiHeadAttention(E, H, impl=impl).to(torch.bfloat16)
    half.load_state_dict(ours.state_dict())
    for call in calls:
        want, want_w = call(ours, x, memory)
        got, got_w = call(half, x.bfloat16(), memory.bfloat16())
        assert got.dtype == torch.bfloat16 and torch.isfinite(got).all()
        torch.testing.assert_close(got.float(), want, rtol=5e-2, atol=5e-2)
        if want_w is not None:
            torch.testing.assert_close(got_w.float(), want_w, rtol=5e-2, atol=2e-2)


@pytest.mark.parametrize("padding", [False, True])
def test_matches_nn_multihead_attention_on_its_fused_inference_path(padding):
    """In eval mode under no_grad, nn.MultiheadAttention runs its own fused kernel for self-attention."""
    theirs, ours = make_pair()
    theirs.eval()
    x = torch.randn(2, 6, E, generator=torch.Generator().manual_seed(10))
    real = torch.tensor([[True] * 6, [True] * 4 + [False] * 2]) if padding else None
    with torch.no_grad(), OpNames() as ops:
        want, _ = theirs(x, x, x, key_padding_mask=None if real is None else ~real, need_weights=False)
    assert "aten::_native_multi_head_attention" in ops.names
    with torch.no_grad():
        got, _ = ours(x, key_padding_mask=real)
    torch.testing.assert_close(got, want, **TOL)


# --- heads_attention on its own ---------------------------------------------------------------------------

def explicit_attention(q, k, v, allowed):
    """softmax(q kᵀ / sqrt(D)) v in float64, masked where ``allowed`` is False (rows all False give 0)."""
    scores = (q.double() @ k.double().transpose(-2, -1)) / q.size(-1) ** 0.5  # (B, H, Lq, Lk)
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)
    return (weights @ v.double()).to(q.dtype), weights.to(q.dtype)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mask_shape", [None, (4,), (2, 1, 1, 4), (3, 4), (2, 3, 3, 4), (1, 3, 1, 4)])
@pytest.mark.parametrize("causal", [False, True])
def test_heads_attention_is_eq_1_in_every_head(impl, mask_shape, causal):
    gen = torch.Generator().manual_seed(11)
    q, k = torch.randn(2, 3, 3, 5, generator=gen), torch.randn(2, 3, 4, 5, generator=gen)
    v = torch.randn(2, 3, 4, 7, generator=gen)  # Dv != D
    mask = None if mask_shape is None else random_mask(mask_shape, gen)
    allowed = torch.ones(2, 3, 3, 4, dtype=torch.bool)
    if mask is not None:
        allowed = allowed & mask
    if causal:
        allowed = allowed & causal_mask(3, 4)
    want, want_w = explicit_attention(q, k, v, allowed)
    for return_weights in (False, True):
        got, got_w = heads_attention(q, k, v, mask, is_causal=causal, impl=impl, return_weights=return_weights)
        assert got.shape == (2, 3, 3, 7)
        torch.testing.assert_close(got, want, **TOL)
        if return_weights:
            torch.testing.assert_close(got_w, want_w, **TOL)
        else:
            assert got_w is None


def test_heads_attention_drops_a_padding_mask_without_padding_under_causal():
    gen = torch.Generator().manual_seed(12)
    q, k, v = (torch.randn(2, 3, 6, 4, generator=gen) for _ in range(3))
    everything = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    with OpNames() as ops:
        got, _ = heads_attention(q, k, v, everything, is_causal=True)
    assert "aten::where" not in [name.split(".")[0] for name in ops.names]  # no float mask was built
    torch.testing.assert_close(got, heads_attention(q, k, v, is_causal=True)[0], rtol=0, atol=0)


def test_heads_attention_dropout_keeps_the_weights_before_dropout():
    gen = torch.Generator().manual_seed(13)
    q, k, v = (torch.randn(1, 2, 5, 4, generator=gen) for _ in range(3))
    plain, weights = heads_attention(q, k, v, impl="reference", return_weights=True)
    torch.manual_seed(0)
    dropped, dropped_weights = heads_attention(q, k, v, dropout_p=0.5, impl="reference", return_weights=True)
    torch.testing.assert_close(dropped_weights, weights, rtol=0, atol=0)
    assert not torch.allclose(dropped, plain)
    for impl in IMPLS:
        assert torch.isfinite(heads_attention(q, k, v, dropout_p=0.5, impl=impl)[0]).all()


Q4 = torch.randn(2, 3, 4, 5)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(q=torch.randn(3, 4, 5)), ValueError, "q must have 4 dimensions"),
    (dict(k=torch.randn(2, 3, 4, 6)), ValueError, "q and k"),
    (dict(mask=torch.ones(4, 4)), TypeError, "bool"),
    (dict(mask=torch.ones(4, 3, dtype=torch.bool)), ValueError, "mask"),
    (dict(return_weights="yes"), TypeError, "return_weights must be True or False"),
    (dict(is_causal=None), TypeError, "is_causal must be True or False"),
    (dict(dropout_p=-0.1), ValueError, "dropout_p must be >= 0"),
    (dict(dropout_p=1.0), ValueError, "dropout_p must be a probability below 1"),
    (dict(impl="flash"), ValueError, "impl must be one of 'reference', 'sdpa'"),
])
def test_heads_attention_bad_inputs_raise_clear_errors(kwargs, error, message):
    args = {"q": Q4, "k": Q4, "v": Q4, **kwargs}
    with pytest.raises(error, match=re.escape(message)):
        heads_attention(args.pop("q"), args.pop("k"), args.pop("v"), args.pop("mask", None), **args)


def test_fast_path_fuses_the_input_projections():
    """Self-attention: one (3E, E) product; over one memory (key is value): a query and a (2E, E) key-value
    product; else three; plus the output projection. The reference path keeps the three of the equations."""
    _, ours = make_pair()
    x, memory = torch.randn(2, 5, E), torch.randn(2, 7, E)
    calls = [(lambda: ours(x), 2), (lambda: ours(x, x, x), 2), (lambda: ours(x, memory), 3),
             (lambda: ours(x, memory, memory), 3), (lambda: ours(x, memory, memory.clone()), 4)]
    for impl, counts in (("sdpa", None), ("reference", 4)):
        ours.impl = impl
        for call, products in calls:
            with torch.no_grad(), OpNames() as ops:
                call()
            assert sum(name in ("aten::addmm", "aten::mm") for name in ops.names) == (counts or products)


@pytest.mark.parametrize("masks", [{}, {"is_causal": True}, {"key_padding_mask": True},
                                   {"is_causal": True, "key_padding_mask": "none padded"}])
def test_the_fast_path_never_holds_lq_by_lk_numbers(masks):
    """The SDPA path without weights allocates O(L·E) tensors only (the reference path holds L x L); a
    padding mask without padding is dropped, so causal attention keeps SDPA's is_causal."""
    class Largest(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):  # storage, not shape: an expanded view costs nothing
                    self.largest = max(self.largest, t.untyped_storage().nbytes() // t.element_size())
            return out

    n = 256
    ours = MultiHeadAttention(E, H)
    x = torch.randn(1, n, E)
    if masks.get("key_padding_mask"):
        masks = {**masks, "key_padding_mask": torch.arange(n)[None] < (n if masks["key_padding_mask"] == "none padded" else 200)}
    for impl, bound in (("sdpa", 3 * n * E), ("reference", H * n * n)):
        ours.impl = impl
        with torch.no_grad(), Largest() as mode:
            mode.largest = 0
            ours(x, **masks)
        assert mode.largest == bound if impl == "reference" else mode.largest <= bound


def test_causal_with_real_padding_is_the_documented_lq_by_lk_case():
    """Known cost, documented in the docstrings: SDPA takes a mask or is_causal, not both, so the triangle is
    folded into a (B, 1, Lq, Lk) mask, which SDPA turns into a float mask of that size."""
    n = 64
    ours = MultiHeadAttention(E, H)
    x, real = torch.randn(1, n, E), torch.arange(n)[None] < 50
    with torch.no_grad(), OpNames() as ops:
        output, _ = ours(x, key_padding_mask=real, is_causal=True)
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in ops.names
    torch.testing.assert_close(output, ours(x, attn_mask=real[:, None, None] & causal_mask(n)[None, None])[0],
                               rtol=0, atol=0)


def test_split_and_merge_heads_are_inverse_and_split_is_a_view():
    x = torch.randn(2, 5, 12)
    heads = split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4) and heads.data_ptr() == x.data_ptr()
    torch.testing.assert_close(heads[:, 1], x[..., 4:8])  # head 1 holds features 4..7
    torch.testing.assert_close(merge_heads(heads), x, rtol=0, atol=0)


def test_attention_mask_combines_padding_and_attention_masks():
    real = torch.tensor([[True, True, False], [True, False, False]])
    mask = attention_mask(2, H, 4, 3, key_padding_mask=real, attn_mask=causal_mask(4, 3))
    assert mask.shape == (2, 1, 4, 3)
    assert mask[1, 0].tolist() == [[True, False, False]] * 4
    assert mask[0, 0, 0].tolist() == [True, False, False]
    assert attention_mask(2, H, 4, 3) is None


def test_parameters_are_laid_out_as_in_nn_multihead_attention():
    for kdim, vdim in ((None, None), (5, 3)):
        theirs = nn.MultiheadAttention(E, H, kdim=kdim, vdim=vdim, batch_first=True)
        ours = MultiHeadAttention(E, H, kdim=kdim, vdim=vdim)
        assert {k: v.shape for k, v in ours.state_dict().items()} == \
            {k: v.shape for k, v in theirs.state_dict().items()}
        assert torch.all(ours.in_proj_bias == 0) and torch.all(ours.out_proj.bias == 0)


@pytest.mark.parametrize("make, error, message", [
    (lambda: MultiHeadAttention(10, 3), ValueError, "embed_dim must be divisible by num_heads"),
    (lambda: MultiHeadAttention(E, H, dropout=-0.1), ValueError, "dropout must be >= 0"),
    (lambda: MultiHeadAttention(E, H, impl="flash"), ValueError, "impl must be one of 'reference', 'sdpa'"),
    (lambda: MultiHeadAttention(E, H, dropout=1.0), ValueError, "dropout must be a probability below 1"),
    (lambda: MultiHeadAttention(E, 0), ValueError, "num_heads must be > 0"),
])
def test_bad_settings_raise_clear_errors(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make()


X = torch.randn(2, 5, E)
KV_SIZES = {"kdim": 5, "vdim": 3}  # a "module" entry: build the module with these settings
BAD_CALLS = [
    (dict(query=torch.randn(2, 5, 8)), ValueError, "query must have shape (B, Lq, 16)"),
    (dict(query=torch.randn(5, E)), ValueError, "query must have 3 dimensions"),
    (dict(key=torch.randn(2, 6, E), value=torch.randn(2, 7, E)), ValueError,
     "key and value must have the same number of keys Lk"),
    (dict(key=torch.randn(3, 6, E)), ValueError, "query and key must have the same batch size B"),
    (dict(value=X), ValueError, "value was given without key"),
    (dict(key=X.double()), TypeError, "query and key must share one dtype"),
    (dict(key_padding_mask=torch.ones(2, 4, dtype=torch.bool)), ValueError,
     "key_padding_mask must have shape (B, Lk) = (2, 5)"),
    (dict(key_padding_mask=torch.ones(2, 5)), TypeError, "key_padding_mask must be a boolean torch.Tensor"),
    (dict(attn_mask=torch.ones(2, 5, 5, dtype=torch.bool)), ValueError,
     "add a head axis: attn_mask[:, None]"),
    (dict(attn_mask=torch.ones(5, 4, dtype=torch.bool)), ValueError,
     "attn_mask must broadcast to (Lq, Lk) = (5, 5)"),
    (dict(attn_mask=torch.ones(2, 3, 5, 5, dtype=torch.bool)), ValueError, "(B, H, Lq, Lk) = (2, 4, 5, 5)"),
    (dict(is_causal=1), TypeError, "is_causal must be True or False"),
    (dict(return_weights=1), TypeError, "return_weights must be True or False"),
    (dict(key=torch.randn(2, 6, 8)), ValueError, "key must have shape (B, Lk, 16) (its size is kdim)"),
    (dict(module=KV_SIZES, key=torch.randn(2, 6, 5), value=torch.randn(2, 6, E)), ValueError,
     "value must have shape (B, Lk, 3) (its size is vdim)"),
    (dict(attn_mask=torch.ones(5, 5)), TypeError, "attn_mask must be a boolean torch.Tensor (True = may attend)"),
    (dict(module=KV_SIZES), ValueError, "self-attention (key=None) needs kdim = vdim = embed_dim"),
    (dict(query=X.double()), TypeError,
     "query is torch.float64 but the module's parameters are torch.float32: call module.double()"),
    (dict(query=torch.empty(2, 5, E, device="meta")), ValueError,
     "query is on meta but the module's parameters are on cpu"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD_CALLS)
def test_bad_inputs_raise_clear_errors(kwargs, error, message):
    kwargs = {"query": X, **kwargs}  # a copy: the parameters are shared between runs
    ours = MultiHeadAttention(E, H, **kwargs.pop("module", {}))
    with pytest.raises(error, match=re.escape(message)):
        ours(kwargs.pop("query"), kwargs.pop("key", None), kwargs.pop("value", None), **kwargs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("impl", IMPLS)
def test_on_cuda_matches_nn_multihead_attention_and_bf16_paths_agree(impl):
    theirs, ours = make_pair(impl=impl, device="cuda")
    gen = torch.Generator().manual_seed(7)
    query, key, value = inputs(gen, lq=5, lk=9, cross=True, device="cuda")
    real = padding_mask(torch.tensor([9, 4]), 9)[:, 0].cuda()
    got, got_w = ours(query, key, value, key_padding_mask=real, return_weights=True)
    want, want_w = theirs(query, key, value, key_padding_mask=~real)
    torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(got_w, want_w, **TOL)
    fast = ours(query, key, value, key_padding_mask=real)[0]
    for g, w in zip(grads(fast.sum(), (query, key, value)), grads(want.sum(), (query, key, value))):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    nobody = torch.tensor([[True] * 9, [False] * 9], device="cuda")  # the second sequence has no key
    output = ours(query, key, value, key_padding_mask=nobody)[0]
    torch.testing.assert_close(output[1], ours.out_proj.bias.expand(5, E), rtol=0, atol=0)
    assert all(torch.isfinite(g).all() for g in grads(output.sum(), (query, key, value)))
    ours.to(torch.bfloat16)
    x = torch.randn(2, 64, E, device="cuda", dtype=torch.bfloat16)
    outputs = []
    for path in IMPLS:
        ours.impl = path
        outputs.append(ours(x, is_causal=True)[0].float())
    torch.testing.assert_close(outputs[0], outputs[1], rtol=2e-2, atol=5e-2)
