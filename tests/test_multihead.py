"""Multi-head attention: parity with torch.nn.MultiheadAttention after copying its weights (outputs, averaged
and per-head weights, gradients; self- and cross-attention; padding and causal masks), the reference and
SDPA paths against each other, fully-masked queries, dropout, memory that never holds Lq x Lk numbers on
the fast path, and clear errors."""

import re

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from attn_course.masking import causal_mask, padding_mask
from attn_course.multihead import IMPLS, MultiHeadAttention, attention_mask, merge_heads, split_heads

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


def inputs(gen, batch=2, lq=5, lk=None, kdim=E, vdim=E, cross=False, device="cpu"):
    query = torch.randn(batch, lq, E, generator=gen).to(device).requires_grad_()
    if not cross:
        return query, None, None
    lk = lq if lk is None else lk
    key = torch.randn(batch, lk, kdim, generator=gen).to(device).requires_grad_()
    value = torch.randn(batch, lk, vdim, generator=gen).to(device).requires_grad_()
    return query, key, value


def grads(loss, tensors):
    return torch.autograd.grad(loss, tensors)


# Self-attention without and with masks; cross-attention with Lq != Lk, and with kdim, vdim != E.
CASES = {
    "self": dict(),
    "self-padding-causal": dict(lengths=[5, 3], causal=True),
    "cross": dict(cross=True, lk=7, lengths=[7, 4]),
    "cross-kdim-vdim": dict(cross=True, lk=6, kdim=5, vdim=3, lengths=[2, 6]),
    "cross-no-bias": dict(cross=True, lk=3, bias=False),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES)
def test_matches_nn_multihead_attention_outputs_weights_and_gradients(impl, case):
    spec = CASES[case]
    kdim, vdim = spec.get("kdim"), spec.get("vdim")
    theirs, ours = make_pair(kdim=kdim, vdim=vdim, bias=spec.get("bias", True), impl=impl)
    gen = torch.Generator().manual_seed(1)
    query, key, value = inputs(gen, lk=spec.get("lk"), kdim=kdim or E, vdim=vdim or E,
                               cross=spec.get("cross"))
    lk = query.size(1) if key is None else key.size(1)
    real = None if "lengths" not in spec else padding_mask(torch.tensor(spec["lengths"]), lk)[:, 0]  # (B, Lk)
    causal = causal_mask(query.size(1), lk) if spec.get("causal") else None
    k, v = (query, query) if key is None else (key, value)
    leaves = [t for t in (query, key, value) if t is not None] + list(ours.parameters())
    their_leaves = [t for t in (query, key, value) if t is not None] + list(theirs.parameters())
    for average in (True, False):
        got, got_w = ours(query, key, value, key_padding_mask=real, is_causal=causal is not None,
                          return_weights=True, average_weights=average)
        want, want_w = theirs(query, k, v, key_padding_mask=None if real is None else ~real,
                              attn_mask=None if causal is None else ~causal, average_attn_weights=average)
        assert got_w.shape == ((2, query.size(1), lk) if average else (2, H, query.size(1), lk))
        torch.testing.assert_close(got, want, **TOL)
        torch.testing.assert_close(got_w, want_w, **TOL)
        probe = torch.randn(got.shape, generator=gen)  # a random linear loss on outputs and weights
        probe_w = torch.randn(got_w.shape, generator=gen)
        got_grads = grads((got * probe).sum() + (got_w * probe_w).sum(), leaves)
        want_grads = grads((want * probe).sum() + (want_w * probe_w).sum(), their_leaves)
        for g, w in zip(got_grads, want_grads):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    # the fast call (no weights) agrees too, values and gradients
    got, none = ours(query, key, value, key_padding_mask=real, is_causal=causal is not None)
    want, _ = theirs(query, k, v, key_padding_mask=None if real is None else ~real,
                     attn_mask=None if causal is None else ~causal, need_weights=False)
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


def test_self_attention_uses_one_fused_input_projection():
    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.name())
            return func(*args, **(kwargs or {}))

    _, ours = make_pair()
    x = torch.randn(2, 5, E)
    for call, products in ((lambda: ours(x), 2), (lambda: ours(x, x, x), 2), (lambda: ours(x, x.clone()), 4)):
        with torch.no_grad(), Count() as count:
            count.names = []
            call()
        assert sum(name in ("aten::addmm", "aten::mm") for name in count.names) == products


@pytest.mark.parametrize("masks", [{}, {"is_causal": True}, {"key_padding_mask": True}])
def test_the_fast_path_never_holds_lq_by_lk_numbers(masks):
    """The SDPA path without weights allocates O(L·E) tensors only (the reference path holds L x L)."""
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
        masks = {"key_padding_mask": torch.arange(n)[None] < 200}
    for impl, bound in (("sdpa", 3 * n * E), ("reference", H * n * n)):
        ours.impl = impl
        with torch.no_grad(), Largest() as mode:
            mode.largest = 0
            ours(x, **masks)
        assert mode.largest == bound if impl == "reference" else mode.largest <= bound


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
    (lambda: MultiHeadAttention(E, H, impl="flash"), ValueError, "impl must be one of 'reference', 'sdpa'"),
    (lambda: MultiHeadAttention(E, H, dropout=1.0), ValueError, "dropout must be a probability below 1"),
    (lambda: MultiHeadAttention(E, 0), ValueError, "num_heads must be > 0"),
])
def test_bad_settings_raise_clear_errors(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make()


X = torch.randn(2, 5, E)
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
]


@pytest.mark.parametrize("kwargs, error, message", BAD_CALLS)
def test_bad_inputs_raise_clear_errors(kwargs, error, message):
    ours = MultiHeadAttention(E, H)
    kwargs = {"query": X, **kwargs}
    with pytest.raises(error, match=re.escape(message)):
        ours(kwargs.pop("query"), kwargs.pop("key", None), kwargs.pop("value", None), **kwargs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("impl", IMPLS)
def test_on_cuda_matches_nn_multihead_attention_and_bf16_paths_agree(impl, monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
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
