"""The KV cache (attn_course.cache) and the cross-/causal attention of chapter 8: causal outputs ignore the
future, incremental decoding with a cache equals full causal attention at every step, cross-attention takes
Lq != Lk, and bad inputs get clear errors."""

import pytest
import torch

from attn_course import cache, masking
from attn_course.attention import attend
from attn_course.exercises.cross_causal import causal_self_attention, cross_attention

DTYPES = [torch.float32, torch.float64]


def _layer(gen, e=6, d=4, dv=3, dtype=torch.float32):
    """Projections W_q, W_k (E, D) and W_v (E, Dv) of a single-head layer."""
    return tuple(torch.randn(e, size, generator=gen, dtype=dtype) / e**0.5 for size in (d, d, dv))


def _empty(b, d, dv, dtype=torch.float32):
    return torch.zeros(b, 0, d, dtype=dtype), torch.zeros(b, 0, dv, dtype=dtype)


def _full_causal(x, W_q, W_k, W_v):
    """The whole sequence at once: what training computes (teacher forcing)."""
    return attend(x @ W_q, x @ W_k, x @ W_v, mask=masking.causal_mask(x.size(1)))[0]


# --- causality -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("t", [0, 3, 6])
def test_causal_output_at_t_ignores_inputs_after_t(t):
    gen = torch.Generator().manual_seed(t)
    x = torch.randn(2, 8, 6, generator=gen)
    weights = _layer(gen)
    changed = x.clone()
    changed[:, t + 1:] = torch.randn(2, 8 - t - 1, 6, generator=gen)
    for fn in (causal_self_attention,
               lambda x, *w: cache.decode_step(x, *_empty(2, 4, 3), *w)):
        before, after = fn(x, *weights)[0], fn(changed, *weights)[0]
        assert torch.equal(before[:, : t + 1], after[:, : t + 1])  # exactly, not approximately
        if t < 7:
            assert not torch.allclose(before[:, t + 1:], after[:, t + 1:])


def test_causal_weights_are_zero_above_the_diagonal_and_rows_sum_to_one():
    gen = torch.Generator().manual_seed(0)
    _, weights = causal_self_attention(torch.randn(3, 7, 6, generator=gen), *_layer(gen))
    assert (weights.triu(1) == 0).all()
    assert torch.allclose(weights.sum(-1), torch.ones(3, 7))


# --- incremental decoding == full causal attention -----------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_decoding_one_token_at_a_time_equals_full_causal_attention_at_every_step(dtype):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 10, 6, generator=gen, dtype=dtype)
    weights = _layer(gen, dtype=dtype)
    full = _full_causal(x, *weights)
    keys, values = _empty(2, 4, 3, dtype)
    for t in range(10):
        context, keys, values = cache.decode_step(x[:, t:t + 1], keys, values, *weights)
        assert keys.shape == (2, t + 1, 4) and values.shape == (2, t + 1, 3)
        assert context.dtype == dtype
        torch.testing.assert_close(context[:, 0], full[:, t])


def test_prefill_in_chunks_equals_full_causal_attention():
    """A prompt of several tokens at once (bottom-right causal mask), then one token at a time."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 9, 6, generator=gen)
    weights = _layer(gen)
    full = _full_causal(x, *weights)
    keys, values = _empty(2, 4, 3)
    outputs = []
    for start, stop in [(0, 4), (4, 5), (5, 8), (8, 9)]:
        context, keys, values = cache.decode_step(x[:, start:stop], keys, values, *weights)
        outputs.append(context)
    torch.testing.assert_close(torch.cat(outputs, dim=1), full)


def test_kvcache_object_with_heads_equals_full_causal_attention():
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 7, 5, generator=gen) for _ in range(3))  # (B, H, L, D)
    full, _ = attend(q, k, v, mask=masking.causal_mask(7))
    kv = cache.KVCache()
    assert len(kv) == 0 and kv.nbytes == 0
    for t in range(7):
        keys, values = kv.append(k[:, :, t:t + 1], v[:, :, t:t + 1])
        context, weights = cache.decode_attention(q[:, :, t:t + 1], keys, values)
        assert len(kv) == t + 1 and weights.shape == (2, 3, 1, t + 1)
        torch.testing.assert_close(context[:, :, 0], full[:, :, t])
    assert kv.nbytes == 2 * 2 * 3 * 7 * 5 * 4  # keys and values, float32
    kv.reset()
    assert len(kv) == 0 and kv.keys is None


@pytest.mark.parametrize(("hq", "hkv"), [(8, 2), (4, 1), (3, 3)])
def test_decode_attention_with_grouped_query_heads(hq, hkv):
    """GQA: Hq query heads share Hkv key/value heads; head h of the cache serves query heads h·G .. h·G+G-1."""
    gen = torch.Generator().manual_seed(hq + hkv)
    q = torch.randn(2, hq, 3, 4, generator=gen)  # (B, Hq, Lq, D): the 3 newest of 5 positions
    k, v = torch.randn(2, hkv, 5, 4, generator=gen), torch.randn(2, hkv, 5, 6, generator=gen)
    context, weights = cache.decode_attention(q, k, v)
    assert context.shape == (2, hq, 3, 6) and weights.shape == (2, hq, 3, 5)
    group = hq // hkv
    causal = torch.ones(3, 5, dtype=torch.bool).tril(2)  # bottom-right
    for h in range(hq):
        expected, _ = attend(q[:, h], k[:, h // group], v[:, h // group], mask=causal)
        torch.testing.assert_close(context[:, h], expected)


def test_decode_attention_refuses_heads_that_do_not_divide():
    with pytest.raises(ValueError, match="multiple of the key/value heads"):
        cache.decode_attention(torch.zeros(2, 6, 1, 4), torch.zeros(2, 4, 5, 4), torch.zeros(2, 4, 5, 4))


def test_decode_attention_with_lq_equal_lk_is_causal_self_attention_and_takes_a_padding_mask():
    gen = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 5, 4, generator=gen) for _ in range(3))
    pad = masking.padding_mask(torch.tensor([5, 3]), 5)  # (B, 1, Lk)
    context, weights = cache.decode_attention(q, k, v, mask=pad)
    expected, _ = attend(q, k, v, mask=masking.combine_masks(masking.causal_mask(5), pad))
    torch.testing.assert_close(context, expected)
    assert (weights[1, :, 3:] == 0).all()


def test_extend_keeps_positions_in_order_and_leaves_its_inputs_alone():
    k_cache, v_cache = torch.ones(1, 2, 3), torch.ones(1, 2, 4)
    keys, values = cache.extend(k_cache, v_cache, torch.zeros(1, 1, 3), torch.zeros(1, 1, 4))
    assert keys[0, :, 0].tolist() == [1, 1, 0] and values.shape == (1, 3, 4)
    assert k_cache.shape == (1, 2, 3)


def test_cache_numbers():
    # Llama-2-7B-like: 32 layers, 32 heads of 128, 4096 positions: 2^30 numbers, 2 GiB in fp16
    assert cache.cache_numbers(4096, layers=32, heads=32, head_dim=128) == 2**30
    assert cache.cache_numbers(10, layers=2, heads=3, head_dim=4, batch=5) == 2 * 10 * 2 * 3 * 4 * 5
    assert cache.cache_numbers(0, layers=1, heads=1, head_dim=1) == 0


# --- cross-attention -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("lq", "lk", "e", "em"), [(3, 7, 6, 6), (8, 2, 6, 10), (1, 5, 4, 4)])
def test_cross_attention_shapes_with_lq_different_from_lk(lq, lk, e, em):
    gen = torch.Generator().manual_seed(lq)
    x, memory = torch.randn(2, lq, e, generator=gen), torch.randn(2, lk, em, generator=gen)
    W_q = torch.randn(e, 4, generator=gen)
    W_k, W_v = torch.randn(em, 4, generator=gen), torch.randn(em, 5, generator=gen)
    context, weights = cross_attention(x, memory, W_q, W_k, W_v)
    assert context.shape == (2, lq, 5) and weights.shape == (2, lq, lk)
    assert torch.allclose(weights.sum(-1), torch.ones(2, lq))
    # each decoder position's output depends on itself and the encoder, never on the other decoder positions
    other = x.clone()
    other[:, 1:] += 1.0
    assert torch.equal(cross_attention(other, memory, W_q, W_k, W_v)[0][:, 0], context[:, 0])


def test_results_follow_the_inputs_dtype():
    gen = torch.Generator().manual_seed(5)
    weights = _layer(gen, dtype=torch.float64)
    x = torch.randn(1, 4, 6, generator=gen, dtype=torch.float64)
    context, keys, values = cache.decode_step(x, *_empty(1, 4, 3, torch.float64), *weights)
    assert context.dtype == keys.dtype == values.dtype == torch.float64


# --- bad inputs ----------------------------------------------------------------------------------------

def test_mismatched_key_and_value_lengths_are_refused():
    with pytest.raises(ValueError, match="k_cache and v_cache must have the same length"):
        cache.extend(torch.zeros(1, 3, 4), torch.zeros(1, 2, 4), torch.zeros(1, 1, 4), torch.zeros(1, 1, 4))
    with pytest.raises(ValueError, match="k_new and v_new must have the same length"):
        cache.KVCache().append(torch.zeros(1, 1, 4), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="number of keys Lk"):
        cache.decode_attention(torch.zeros(1, 1, 4), torch.zeros(1, 3, 4), torch.zeros(1, 2, 4))


def test_new_entries_must_match_the_cache():
    kv = cache.KVCache()
    kv.append(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))
    # append's messages name what the caller passed (k_new, v_new) and the cache, never a k_cache argument
    with pytest.raises(ValueError, match="k_new must match the cached keys in every dimension but the length"):
        kv.append(torch.zeros(2, 1, 6), torch.zeros(2, 1, 5))
    with pytest.raises(ValueError, match="v_new must match the cached values"):
        kv.append(torch.zeros(2, 1, 4), torch.zeros(2, 1, 6))
    with pytest.raises(TypeError, match="dtype and device of the cached keys"):
        kv.append(torch.zeros(2, 1, 4, dtype=torch.float64), torch.zeros(2, 1, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="share one dtype"):
        kv.append(torch.zeros(2, 1, 4), torch.zeros(2, 1, 5, dtype=torch.float64))
    for bad in ((torch.zeros(2, 1, 6), torch.zeros(2, 1, 5)), (torch.zeros(2, 1, 4), torch.zeros(2, 1, 6))):
        with pytest.raises(ValueError) as info:
            kv.append(*bad)
        assert "k_cache" not in str(info.value) and "v_cache" not in str(info.value)
    assert len(kv) == 3  # a refused append changes nothing
    # the functional extend names its own arguments
    with pytest.raises(ValueError, match="k_new must match k_cache in every dimension but the length"):
        cache.extend(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5), torch.zeros(2, 1, 6), torch.zeros(2, 1, 5))


def test_kvcache_keeps_its_own_copy_of_what_it_was_given():
    k, v = torch.ones(1, 2, 3), torch.ones(1, 2, 4)
    kv = cache.KVCache()
    kv.append(k, v)
    k.zero_()  # the caller reuses its buffers in place
    v.mul_(5)
    assert (kv.keys == 1).all() and (kv.values == 1).all()
    k_new, v_new = torch.full((1, 1, 3), 2.0), torch.full((1, 1, 4), 2.0)
    kv.append(k_new, v_new)
    k_new.zero_()
    v_new.zero_()
    assert kv.keys[0, :, 0].tolist() == [1, 1, 2] and kv.values[0, :, 0].tolist() == [1, 1, 2]


def test_masks_of_the_wrong_shape_or_kind_are_refused():
    q, k, v = torch.zeros(2, 1, 4), torch.zeros(2, 5, 4), torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match=r"does not broadcast to the scores' shape \(2, 1, 5\)"):
        cache.decode_attention(q, k, v, mask=torch.ones(2, 1, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="torch.bool"):
        cache.decode_attention(q, k, v, mask=torch.ones(2, 1, 5))


def test_other_bad_inputs():
    with pytest.raises(ValueError, match=r"Lq <= Lk"):
        cache.decode_attention(torch.zeros(1, 4, 2), torch.zeros(1, 3, 2), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="input size E"):
        cache.decode_step(torch.zeros(1, 1, 5), *_empty(1, 4, 3), torch.zeros(4, 5), torch.zeros(5, 4),
                          torch.zeros(5, 3))
    with pytest.raises(ValueError, match="must have 3 dimensions"):
        cache.decode_step(torch.zeros(1, 5), *_empty(1, 4, 3), *_layer(torch.Generator(), e=5))
    with pytest.raises(TypeError, match="floating-point"):
        cache.KVCache().append(torch.zeros(1, 1, 2, dtype=torch.long), torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match="input size"):
        cross_attention(torch.zeros(1, 2, 6), torch.zeros(1, 3, 8), torch.zeros(6, 4), torch.zeros(6, 4),
                        torch.zeros(8, 3))
    with pytest.raises(TypeError, match="whole number"):
        cache.cache_numbers(10.5, layers=1, heads=1, head_dim=1)
    with pytest.raises(ValueError, match="heads must be > 0"):
        cache.cache_numbers(10, layers=1, heads=0, head_dim=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cache_stays_on_the_gpu():
    gen = torch.Generator().manual_seed(6)
    weights = [w.cuda() for w in _layer(gen)]
    x = torch.randn(1, 3, 6, generator=gen).cuda()
    context, keys, values = cache.decode_step(x, *(t.cuda() for t in _empty(1, 4, 3)), *weights)
    assert context.is_cuda and keys.is_cuda and values.is_cuda
