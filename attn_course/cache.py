"""The key/value cache: generating one token at a time without recomputing the past.

A causal decoder's output at position t depends on the keys and values of positions 0..t only, and those of
the earlier positions never change once computed. So a generator can keep them (the **KV cache**) and, at
each step, project only the newest token, append its key and value, and let its query attend over everything
cached. Shapes: keys (..., L, D), values (..., L, Dv), queries (..., Lq, D); the leading dimensions (B, or
B and H) must match between the cache and the new entries.

- ``extend``            the functional core: the cache with new keys and values appended
- ``decode_attention``  attention of the newest Lq queries over all the cached keys (causal, bottom-right;
                        grouped-query heads too)
- ``decode_step``       one decoding step of a single-head layer: project, extend, attend
- ``KVCache``           a small object holding one layer's keys and values between steps
- ``cache_numbers``     how many numbers a cache holds: 2 · L · layers · H · Dh per sequence
"""

from __future__ import annotations

import torch

from . import _checks
from .attention import _check_qkv, attend
from .masking import causal_mask, check_mask, combine_masks


def _check_pair(keys_name, keys, values_name, values):
    """Keys (..., L, D) and values (..., L, Dv): float tensors, same dtype, leading dims and length L."""
    for name, x in ((keys_name, keys), (values_name, values)):
        _checks.tensor(name, x)
        if x.dim() < 2:
            raise ValueError(f"{name} must have at least 2 dimensions (..., L, size), got shape {tuple(x.shape)}")
    if keys.dtype != values.dtype:
        raise TypeError(f"{keys_name} and {values_name} must share one dtype, got {keys.dtype} and {values.dtype}")
    if keys.shape[:-2] != values.shape[:-2]:
        raise ValueError(f"{keys_name} and {values_name} must have the same leading (batch, head) dimensions, "
                         f"got shapes {tuple(keys.shape)} and {tuple(values.shape)}")
    _checks.same_size(keys_name, keys, -2, values_name, values, -2,
                      "length (second-to-last dimension): one value per key")


def extend(k_cache: torch.Tensor, v_cache: torch.Tensor, k_new: torch.Tensor,
           v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The cache with the new keys and values appended after the cached ones (new tensors; inputs unchanged).

    k_cache: (..., Lc, D), v_cache: (..., Lc, Dv) (Lc may be 0: an empty cache); k_new: (..., Ln, D),
    v_new: (..., Ln, Dv). Returns keys (..., Lc + Ln, D) and values (..., Lc + Ln, Dv), positions in order:
    the cached ones first, the newest last.
    """
    _check_pair("k_cache", k_cache, "v_cache", v_cache)
    return _extend(k_cache, v_cache, k_new, v_new, ("k_cache", "v_cache"))


def _extend(k_cache, v_cache, k_new, v_new, cache_names):
    """``extend`` after the cache's own checks; ``cache_names`` say how error messages call the cache (the
    caller's argument names, or "the cached keys" when the cache lives in a ``KVCache``)."""
    _check_pair("k_new", k_new, "v_new", v_new)
    for name, cached, old, new, what in (("k_new", cache_names[0], k_cache, k_new, "D"),
                                         ("v_new", cache_names[1], v_cache, v_new, "Dv")):
        if old.shape[:-2] != new.shape[:-2] or old.size(-1) != new.size(-1):
            raise ValueError(f"{name} must match {cached} in every dimension but the length: "
                             f"(..., L, {what}); got {cached} {tuple(old.shape)} and "
                             f"{name} {tuple(new.shape)}")
        if old.dtype != new.dtype or old.device != new.device:
            raise TypeError(f"{name} must have the dtype and device of {cached} ({old.dtype} on "
                            f"{old.device}), got {new.dtype} on {new.device}")
    # torch.cat copies the whole cache at each step; real servers preallocate (a "static" cache) or page it.
    return torch.cat([k_cache, k_new], dim=-2), torch.cat([v_cache, v_new], dim=-2)


def _repeat_kv_heads(q, keys, values):
    """Grouped-query attention (Ainslie et al. 2023): with q (B, Hq, Lq, D) and keys, values (B, Hkv, Lk, .)
    where Hq = G · Hkv, each key/value head serves G consecutive query heads, so repeat each one G times.
    Tensors with fewer than 4 dimensions, or with matching (or broadcastable 1) head counts, pass as they are.
    """
    if q.dim() < 4 or keys.dim() < 4 or values.dim() < 4:
        return keys, values
    hq, hkv = q.size(-3), keys.size(-3)
    if hq == hkv or hkv == 1 or values.size(-3) != hkv:
        return keys, values  # equal, broadcast (multi-query), or a mismatch _check_qkv reports
    if hq % hkv:
        raise ValueError(f"q has {hq} heads and the cache {hkv} key/value heads: for grouped-query attention "
                         f"the number of query heads must be a multiple of the key/value heads (dimension "
                         f"-3); got q {tuple(q.shape)} and keys {tuple(keys.shape)}")
    group = hq // hkv
    # (B, Hkv, Lk, D) -> (B, Hq, Lk, D): key/value head h serves query heads h·G .. h·G + G - 1
    return keys.repeat_interleave(group, dim=-3), values.repeat_interleave(group, dim=-3)


def decode_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                     mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of the newest Lq positions over all Lk cached positions, causal (Vaswani et al. 2017, eq. 1
    with the decoder's mask of section 3.2.3).

    The queries are the *last* Lq of the Lk positions, so the causal triangle is aligned bottom-right: query
    i (position Lk - Lq + i) may attend keys 0 .. Lk - Lq + i. With Lq = 1 it sees every cached key; with
    Lq = Lk it is ordinary causal self-attention (``masking.causal_mask``).

    q: (..., Lq, D), keys: (..., Lk, D), values: (..., Lk, Dv), Lq <= Lk; mask: optional boolean mask, True =
    may attend, broadcastable to (..., Lq, Lk) (e.g. a padding mask (B, 1, Lk)), combined with the causal
    one. Returns context (..., Lq, Dv) and weights (..., Lq, Lk).

    Grouped-query attention (Ainslie et al. 2023): with heads, q (B, Hq, Lq, D) may face a cache of fewer
    key/value heads, keys (B, Hkv, Lk, D) and values (B, Hkv, Lk, Dv), when Hq is a multiple G of Hkv; each
    key/value head then serves G consecutive query heads (as ``repeat_interleave`` orders them), and the
    results have Hq heads.
    """
    _checks.tensor("q", q)
    _checks.tensor("keys", keys)
    _checks.tensor("values", values)
    keys, values = _repeat_kv_heads(q, keys, values)  # (B, Hq, Lk, D), (B, Hq, Lk, Dv)
    _check_qkv(q, keys, values)
    lq, lk = q.size(-2), keys.size(-2)
    if lq > lk:
        raise ValueError(f"the {lq} queries must be the newest of the {lk} cached positions (Lq <= Lk): "
                         "append their keys and values to the cache first")
    # Query i sits at position Lk - Lq + i: the triangle aligned bottom-right.
    causal = causal_mask(lq, lk, bottom_right=True, device=q.device)  # (Lq, Lk)
    if mask is not None:  # say what is wrong with the caller's mask, not with the combined one
        scores_shape = (*torch.broadcast_shapes(q.shape[:-2], keys.shape[:-2]), lq, lk)
        check_mask(mask, q.new_empty(()).expand(scores_shape))
    return attend(q, keys, values, mask=combine_masks(causal, mask))


def decode_step(x_new: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, W_q: torch.Tensor,
                W_k: torch.Tensor, W_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One decoding step of a single-head causal self-attention layer with a KV cache.

    Project only the new token(s), ``q = x_new W_q``, ``k = x_new W_k``, ``v = x_new W_v`` (Vaswani et al.
    2017, section 3.2.2, one head), append k and v to the cache, and attend from the new queries over every
    cached position (``decode_attention``). Starting from an empty cache and feeding a sequence one token at
    a time gives, step by step, exactly the outputs of full causal self-attention over the whole sequence.

    x_new: (B, Ln, E), the newest Ln tokens (usually Ln = 1); k_cache: (B, Lc, D), v_cache: (B, Lc, Dv) (Lc
    may be 0); W_q, W_k: (E, D), W_v: (E, Dv). Returns context (B, Ln, Dv) and the extended cache, keys
    (B, Lc + Ln, D) and values (B, Lc + Ln, Dv), to pass to the next step.
    """
    _checks.tensor("x_new", x_new, ndim=3)
    for name, w in (("W_q", W_q), ("W_k", W_k), ("W_v", W_v)):
        _checks.tensor(name, w, ndim=2)
        _checks.same_size("x_new", x_new, -1, name, w, 0, "input size E (x_new's last dimension, the "
                          "weight's first: a weight is stored (E, out))")
    q, k, v = x_new @ W_q, x_new @ W_k, x_new @ W_v  # (B, Ln, E) @ (E, D) -> (B, Ln, D)
    keys, values = extend(k_cache, v_cache, k, v)  # (B, Lc + Ln, D), (B, Lc + Ln, Dv)
    context, _ = decode_attention(q, keys, values)  # (B, Ln, Dv)
    return context, keys, values


class KVCache:
    """One attention layer's cached keys and values, grown by ``append`` at each decoding step.

    ``cache.append(k_new, v_new)`` stores k_new (..., Ln, D) and v_new (..., Ln, Dv) after what is already
    there and returns all the keys (..., L, D) and values (..., L, Dv) so far, ready for
    ``decode_attention`` (the cache's own tensors: read them, do not change them in place). The first append
    fixes the leading dimensions, sizes, dtype and device; ``len(cache)`` is the number of cached positions L;
    ``reset()`` empties it for a new sequence. A model with several layers keeps one cache per layer.
    """

    def __init__(self):
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.keys is None else self.keys.size(-2)

    def __repr__(self) -> str:
        shape = None if self.keys is None else tuple(self.keys.shape)
        return f"KVCache(length={len(self)}, keys={shape})"

    def append(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new keys (..., Ln, D) and values (..., Ln, Dv); return all keys and values so far.

        The cache keeps its own copy: changing k_new or v_new in place afterwards does not change it (the
        first append clones them; later ones concatenate, which copies).
        """
        if self.keys is None:
            _check_pair("k_new", k_new, "v_new", v_new)
            self.keys, self.values = k_new.clone(), v_new.clone()
        else:
            self.keys, self.values = _extend(self.keys, self.values, k_new, v_new,
                                             ("the cached keys", "the cached values"))
        return self.keys, self.values

    def reset(self) -> None:
        """Forget everything (start a new sequence)."""
        self.keys = self.values = None

    @property
    def nbytes(self) -> int:
        """Memory the cached keys and values take, in bytes."""
        if self.keys is None:
            return 0
        return self.keys.numel() * self.keys.element_size() + self.values.numel() * self.values.element_size()


def cache_numbers(seq_len: int, *, layers: int, heads: int, head_dim: int, batch: int = 1) -> int:
    """How many numbers a KV cache holds: ``2 · L · layers · H · Dh`` per sequence (a key and a value of
    size Dh, per position, head and layer), times the batch size. Multiply by the bytes per number (2 in
    fp16/bf16) for its memory. With grouped-query attention, ``heads`` is the number of *key/value* heads.
    """
    seq_len = _checks.number("seq_len", seq_len, integer=True, minimum=0, strict=False)
    sizes = [_checks.positive(name, value, integer=True)
             for name, value in (("layers", layers), ("heads", heads), ("head_dim", head_dim), ("batch", batch))]
    layers, heads, head_dim, batch = sizes
    return 2 * seq_len * layers * heads * head_dim * batch
