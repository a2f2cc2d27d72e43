"""Exercises on cross-attention, causal self-attention and one decoding step with a KV cache.

Each takes token vectors and projection matrices stored (in, out), as in Vaswani et al. (2017, section
3.2.2): ``Q = X W_q``. So a learner writes the whole layer, projections included, and a projection taken
from the wrong sequence shows up.
"""

from __future__ import annotations

import math

import torch

from .. import _checks, cache, masking
from ..attention import attend
from . import Case, Exercise, Mistake, register
from ._grader import randn


def _check_projection(x_name, x, w_name, w):
    _checks.tensor(x_name, x, ndim=3)
    _checks.tensor(w_name, w, ndim=2)
    _checks.same_size(x_name, x, -1, w_name, w, 0, "input size (the vectors' last dimension, the weight's "
                      "first: a weight is stored (in, out))")


def _weights(gen, rows, cols, dtype):
    """A projection (rows, cols) scaled by 1/√rows, so that projected vectors have entries of size about 1."""
    return randn(gen, rows, cols, dtype=dtype, scale=1.5 / math.sqrt(rows))


def _softmax(scores, dim=-1, mask=None):
    return torch.softmax(scores if mask is None else scores.masked_fill(~mask, float("-inf")), dim=dim)


NO_SCALE_HINT = ("divide the scores by √D, D = the key size (q.size(-1)), before the softmax "
                 "(Vaswani et al. 2017, eq. 1).")
VALUE_SIZE_HINT = ("scale by 1/√D with D = q.size(-1) = k.size(-1), the size each dot product sums over; "
                   "Dv = v.size(-1) is the size of what the weights average, it plays no part in the scores.")
SCALED_BY_DV = "the scores were scaled by the value size Dv instead of the key size D"


# --- 1. cross-attention ---------------------------------------------------------------------------------

def cross_attention(x: torch.Tensor, memory: torch.Tensor, W_q: torch.Tensor, W_k: torch.Tensor,
                    W_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention (encoder-decoder attention, Vaswani et al. 2017, section 3.2.3): the decoder's
    positions ask, the encoder's positions answer.

    ``Q = x W_q`` from the decoder, ``K = memory W_k`` and ``V = memory W_v`` from the encoder, then
    ``softmax(Q Kᵀ / √D) V``. x: (B, Lq, E) decoder states; memory: (B, Lk, Em) encoder outputs (Lq and Lk,
    E and Em may differ); W_q: (E, D), W_k: (Em, D), W_v: (Em, Dv). Returns context (B, Lq, Dv) and
    weights (B, Lq, Lk), one row per decoder position, summing to 1 over the encoder positions.
    """
    _check_projection("x", x, "W_q", W_q)
    _check_projection("memory", memory, "W_k", W_k)
    _check_projection("memory", memory, "W_v", W_v)
    q = x @ W_q  # (B, Lq, E) @ (E, D) -> (B, Lq, D)
    k, v = memory @ W_k, memory @ W_v  # (B, Lk, D), (B, Lk, Dv)
    return attend(q, k, v)  # (B, Lq, Dv), (B, Lq, Lk)


def _cross_case(gen, label, b, lq, lk, e, em, d, dv, dtype=torch.float32):
    return Case(label, (randn(gen, b, lq, e, dtype=dtype), randn(gen, b, lk, em, dtype=dtype),
                        _weights(gen, e, d, dtype), _weights(gen, em, d, dtype), _weights(gen, em, dv, dtype)))


def _cross_cases(gen):
    return [
        _cross_case(gen, "Lq=3 decoder positions, Lk=5 encoder positions (B=2, E=Em=6, D=4, Dv=3)",
                    2, 3, 5, 6, 6, 4, 3),
        _cross_case(gen, "more queries than keys (Lq=6, Lk=4)", 2, 6, 4, 5, 5, 3, 4),
        _cross_case(gen, "an encoder of another width (E=6, Em=8)", 2, 4, 7, 6, 8, 4, 5),
        _cross_case(gen, "batch of one, one query (Lq=1, Lk=6)", 1, 1, 6, 4, 4, 4, 2),
        _cross_case(gen, "float64 (Lq=4, Lk=3)", 3, 4, 3, 5, 5, 4, 3, dtype=torch.float64),
    ]


def _cross_variant(q_from="x", k_from="memory", v_from="memory", dim=-1, scale="D", causal=None):
    def variant(x, memory, W_q, W_k, W_v):
        source = {"x": x, "memory": memory}
        q, k, v = source[q_from] @ W_q, source[k_from] @ W_k, source[v_from] @ W_v
        scores = q @ k.transpose(-2, -1)
        sizes = {"D": q.size(-1), "E": x.size(-1), "Em": memory.size(-1), "Dv": v.size(-1), "none": 1}
        scores = scores / math.sqrt(sizes[scale])
        if causal is None:
            weights = torch.softmax(scores, dim=dim)
        else:  # a causal triangle where none belongs: top-left (is_causal=True) or bottom-right
            mask = masking.causal_mask(*scores.shape[-2:], bottom_right=causal == "bottom-right",
                                       device=x.device)
            weights = masking.masked_softmax(scores, mask)
        return weights @ v, weights
    return variant


VALUES_FROM_DECODER_HINT = ("the values must come from the encoder, like the keys: one value per key, "
                            "V = memory @ W_v. Only the queries come from the decoder (x).")

register(Exercise(
    id="cross-attention",
    title="Cross-attention",
    reference=cross_attention,
    cases=_cross_cases,
    outputs=("context", "weights"),
    diagnose_first="weights",
    error_hints=(("batch2 tensor", "the weights (B, Lq, Lk) and the values must agree on Lk: "
                                   + VALUES_FROM_DECODER_HINT),),
    mistakes=(
        Mistake("queries and keys swapped: the encoder asks and the decoder answers",
                "the decoder asks: Q = x @ W_q; the encoder answers with K = memory @ W_k and V = memory @ W_v. "
                "The weights are (B, Lq, Lk), one row per decoder position.",
                _cross_variant(q_from="memory", k_from="x", v_from="x")),
        Mistake("this is self-attention: the keys and values come from the decoder too",
                "in cross-attention only the queries come from the decoder (x); the keys and values come from "
                "the encoder: K = memory @ W_k, V = memory @ W_v. The weights are (B, Lq, Lk).",
                _cross_variant(k_from="x", v_from="x")),
        Mistake("the values come from the decoder", VALUES_FROM_DECODER_HINT, _cross_variant(v_from="x")),
        Mistake("the keys come from the decoder",
                "score the decoder's queries against the encoder's keys, K = memory @ W_k: comparing the "
                "decoder with itself is self-attention.", _cross_variant(k_from="x")),
        Mistake("the softmax ran over the queries axis instead of the keys",
                "each decoder position's weights must sum to 1 over the encoder positions: softmax over the "
                "last axis (dim=-1) of the (B, Lq, Lk) scores.", _cross_variant(dim=-2)),
        Mistake("the scores were not scaled by 1/√D", NO_SCALE_HINT, _cross_variant(scale="none")),
        Mistake("the scores were scaled by a width (E or Em) instead of the key size D",
                "scale by 1/√D with D = q.size(-1), the size of the projected queries and keys, not the "
                "width of x (E) or of memory (Em).", _cross_variant(scale="E"), _cross_variant(scale="Em")),
        Mistake(SCALED_BY_DV, VALUE_SIZE_HINT, _cross_variant(scale="Dv")),
        Mistake("a causal mask on cross-attention: there is nothing to mask, the encoder's input is complete",
                "every decoder position may attend to every encoder position: the whole source was read "
                "before decoding began, so no encoder position is 'the future'. Drop the mask (only padding "
                "in a batch would be masked).",
                _cross_variant(causal="top-left"), _cross_variant(causal="bottom-right")),
    ),
))


# --- 2. causal self-attention ---------------------------------------------------------------------------

def causal_self_attention(x: torch.Tensor, W_q: torch.Tensor, W_k: torch.Tensor,
                          W_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal (masked) self-attention, the decoder's first sub-layer (Vaswani et al. 2017, section 3.2.3).

    ``Q, K, V = x W_q, x W_k, x W_v``; position i attends positions 0..i only (``masking.causal_mask``),
    so its output does not depend on anything after it. x: (B, L, E); W_q, W_k: (E, D), W_v: (E, Dv).
    Returns context (B, L, Dv) and weights (B, L, L), exactly 0 above the diagonal.
    """
    _check_projection("x", x, "W_q", W_q)
    _check_projection("x", x, "W_k", W_k)
    _check_projection("x", x, "W_v", W_v)
    q, k, v = x @ W_q, x @ W_k, x @ W_v  # (B, L, D), (B, L, D), (B, L, Dv)
    return attend(q, k, v, mask=masking.causal_mask(x.size(-2), device=x.device))


def _causal_case(gen, label, b, length, e, d, dv, dtype=torch.float32):
    return Case(label, (randn(gen, b, length, e, dtype=dtype), _weights(gen, e, d, dtype),
                        _weights(gen, e, d, dtype), _weights(gen, e, dv, dtype)))


def _causal_cases(gen):
    return [
        _causal_case(gen, "a sequence of 5 (B=2, E=6, D=4, Dv=3)", 2, 5, 6, 4, 3),
        _causal_case(gen, "batch of one, L=7", 1, 7, 5, 4, 4),
        _causal_case(gen, "float64, L=4", 3, 4, 4, 3, 5, dtype=torch.float64),
        _causal_case(gen, "a single token (L=1)", 2, 1, 4, 4, 2),
        _causal_case(gen, "a longer sequence (L=9, E=8, D=4, Dv=6)", 2, 9, 8, 4, 6),
    ]


def _apply_zeros(scores, mask):
    return masking.masked_softmax(scores, mask)


def _apply_uniform(scores, mask):
    return torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), dim=-1)


def _apply_nan(scores, mask):
    return _softmax(scores, mask=mask)


def _apply_after(scores, mask):
    return torch.softmax(scores, dim=-1) * mask


def _apply_multiplied(scores, mask):
    return torch.softmax(scores * mask, dim=-1)  # masked scores become 0, not -inf


def _causal_variant(relation, apply=_apply_zeros, scale="D"):
    def variant(x, W_q, W_k, W_v):
        q, k, v = x @ W_q, x @ W_k, x @ W_v
        size = {"D": q.size(-1), "E": x.size(-1), "none": 1}[scale]
        scores = q @ k.transpose(-2, -1) / math.sqrt(size)
        i = torch.arange(x.size(-2), device=x.device)[:, None]
        j = torch.arange(x.size(-2), device=x.device)[None, :]
        weights = apply(scores, relation(i, j))
        return weights @ v, weights
    return variant


def _each_way(relation):
    """The same wrong mask applied with masked_softmax (zeros), a finfo.min fill (uniform) or -inf (NaN)."""
    return tuple(_causal_variant(relation, apply) for apply in (_apply_zeros, _apply_uniform, _apply_nan))


def _unprojected(x, W_q, W_k, W_v):
    return attend(x, x, x, mask=masking.causal_mask(x.size(-2), device=x.device))


register(Exercise(
    id="causal-self-attention",
    title="Causal self-attention",
    reference=causal_self_attention,
    cases=_causal_cases,
    outputs=("context", "weights"),
    mistakes=(
        Mistake("the causal mask is transposed (upper triangle): each position sees the future, not the past",
                "position i may attend position j when j <= i: the lower triangle, masking.causal_mask(L) "
                "or torch.ones(L, L).tril(), not triu.", *_each_way(lambda i, j: j >= i)),
        Mistake("the diagonal is excluded: a position may not attend to itself",
                "keep j <= i, not j < i: position i may use itself (and the first position has nothing else).",
                *_each_way(lambda i, j: j < i)),
        Mistake("the mask is inverted: True was read as 'masked' (nn.MultiheadAttention's convention)",
                "in this course, as in SDPA, True means *may attend*: keep j <= i (tril), not j > i "
                "(triu(1), the positions nn.MultiheadAttention's attn_mask hides).",
                *_each_way(lambda i, j: j > i)),
        Mistake("the mask was applied after the softmax (weights not renormalised)",
                "mask the scores *before* the softmax (masking.masked_softmax, or fill the future with "
                "torch.finfo(scores.dtype).min): zeroing weights afterwards leaves rows that sum to less "
                "than 1.", _causal_variant(lambda i, j: j <= i, _apply_after)),
        Mistake("the scores were multiplied by the mask: the future got a score of 0 instead of −∞",
                "a score of 0 still gets the weight exp(0) / sum after the softmax. Fill the masked scores "
                "with float('-inf') or torch.finfo(scores.dtype).min (masking.masked_softmax does it) so that "
                "their weights are exactly 0.", _causal_variant(lambda i, j: j <= i, _apply_multiplied)),
        Mistake("the causal mask was ignored: every position sees the whole sequence",
                "build the mask j <= i (masking.causal_mask(L)) and apply it before the softmax.",
                _causal_variant(lambda i, j: torch.ones_like(i * j, dtype=torch.bool))),
        Mistake("the scores were not scaled by 1/√D", NO_SCALE_HINT,
                _causal_variant(lambda i, j: j <= i, scale="none")),
        Mistake("the scores were scaled by the model width E instead of the key size D",
                "scale by 1/√D with D = q.size(-1), the size of the projected queries and keys, not the "
                "width of x (E = x.size(-1)).", _causal_variant(lambda i, j: j <= i, scale="E")),
        Mistake("the projections were skipped: x itself was used as queries, keys and values",
                "project first: Q = x @ W_q, K = x @ W_k, V = x @ W_v, then attend with the causal mask.",
                _unprojected),
    ),
))


# --- 3. one decoding step with a KV cache ---------------------------------------------------------------

def _step_case(gen, label, b, cached, e, d, dv, dtype=torch.float32):
    return Case(label, (randn(gen, b, 1, e, dtype=dtype), randn(gen, b, cached, d, dtype=dtype),
                        randn(gen, b, cached, dv, dtype=dtype), _weights(gen, e, d, dtype),
                        _weights(gen, e, d, dtype), _weights(gen, e, dv, dtype)))


def _step_cases(gen):
    # The empty cache comes last: there the context equals the new value (one key, weight 1), which the
    # grader does not mistake for a wrong order, but most mistakes do not show on it.
    return [
        _step_case(gen, "a cache of 4 positions (B=2, E=6, D=4, Dv=3)", 2, 4, 6, 4, 3),
        _step_case(gen, "batch of one, a cache of 9", 1, 9, 4, 3, 5),
        _step_case(gen, "float64, a cache of 3", 3, 3, 5, 4, 4, dtype=torch.float64),
        _step_case(gen, "a cache of one position", 2, 1, 6, 5, 2),
        _step_case(gen, "an empty cache (Lc=0, the first step)", 2, 0, 5, 4, 3),
    ]


def _reprojected(first="k", concatenated=False):
    """The cache's keys and values projected again, as if they were token states: a shape error."""
    def variant(x_new, k_cache, v_cache, W_q, W_k, W_v):
        if concatenated:  # torch.cat([k_cache, x_new]) @ W_k: the cat already fails (D vs E)
            keys = torch.cat([k_cache, x_new], dim=-2) @ W_k
            values = torch.cat([v_cache, x_new], dim=-2) @ W_v
        elif first == "k":
            keys, values = k_cache @ W_k, v_cache @ W_v
        else:
            values, keys = v_cache @ W_v, k_cache @ W_k
        return _step_variant()(x_new, keys, values, W_q, W_k, W_v)
    return variant


def _step_variant(attend_over="all", returned="all", new_first=False, scale="D"):
    def variant(x_new, k_cache, v_cache, W_q, W_k, W_v):
        q, k, v = x_new @ W_q, x_new @ W_k, x_new @ W_v
        pairs = [(k, v), (k_cache, v_cache)] if new_first else [(k_cache, v_cache), (k, v)]
        keys = torch.cat([pk for pk, _ in pairs], dim=-2)
        values = torch.cat([pv for _, pv in pairs], dim=-2)
        seen = {"all": (keys, values), "new": (k, v), "old": (k_cache, v_cache),
                "first": (keys[..., :1, :], values[..., :1, :])}
        k_seen, v_seen = seen[attend_over]
        size = {"D": q.size(-1), "Dv": v.size(-1), "none": 1}[scale]
        scores = q @ k_seen.transpose(-2, -1) / math.sqrt(size)
        context = torch.softmax(scores, dim=-1) @ v_seen
        return (context, *seen[returned])
    return variant


register(Exercise(
    id="kv-cache-step",
    title="One decoding step with a KV cache",
    reference=cache.decode_step,
    cases=_step_cases,
    outputs=("context", "keys", "values"),
    error_hints=(
        ("cannot be multiplied", "the inner sizes of a matrix product do not match. Project only the new "
                                 "token, x_new (B, 1, E) @ W_k (E, D): the cache already holds keys (B, Lc, D) "
                                 "and values (B, Lc, Dv), and a weight here is stored (E, out), so no .T."),
        ("Sizes of tensors must match except in dimension",
         "torch.cat joins tensors that agree in every dimension but one: append along the length, "
         "torch.cat([k_cache, k], dim=-2), with the new key k = x_new @ W_k (B, 1, D), not x_new itself."),
    ),
    mistakes=(
        Mistake("the query attends only to the new token, not to the cache",
                "append k and v to the cache first, then attend over *all* the cached keys and values: "
                "the cache is the model's memory of the prefix.",
                _step_variant(attend_over="new")),
        Mistake("the cache was replaced by the new token instead of appended to",
                "keep the old entries: keys = torch.cat([k_cache, k], dim=-2), and the same for the values.",
                _step_variant(attend_over="new", returned="new")),
        Mistake("the new key and value were not appended: the returned cache is the old one",
                "return the extended cache, torch.cat([k_cache, k], dim=-2) and torch.cat([v_cache, v], "
                "dim=-2): the next step needs this token's key and value too.",
                _step_variant(returned="old"), _step_variant(attend_over="old", returned="old")),
        Mistake("the current token is missing: the query attended over the cache before appending",
                "append first, then attend: the newest position may attend to itself (causal means j <= i), "
                "and at the first step the cache is empty.",
                _step_variant(attend_over="old")),
        Mistake("the new key and value were put before the cache",
                "append at the end, torch.cat([k_cache, k], dim=-2): positions stay in order, oldest first "
                "(the output looks right now, but the order matters for masks and positions later).",
                _step_variant(new_first=True)),
        Mistake("the query saw only the first cached position (is_causal=True aligns the mask top-left)",
                "with one new query there is nothing to mask: it may attend to every cached position. SDPA's "
                "is_causal=True lets query 0 see key 0 only; drop it (or, for several new queries, align "
                "the triangle bottom-right: torch.nn.attention.bias.causal_lower_right).",
                _step_variant(attend_over="first", returned="all")),
        Mistake("the scores were not scaled by 1/√D", NO_SCALE_HINT, _step_variant(scale="none")),
        Mistake(SCALED_BY_DV, VALUE_SIZE_HINT, _step_variant(scale="Dv")),
        Mistake("the cached keys and values were projected again: the cache already holds keys and values",
                "k_cache and v_cache are (B, Lc, D) and (B, Lc, Dv), the outputs of W_k and W_v at earlier "
                "steps, not token states (B, Lc, E). Project only x_new, then append: "
                "torch.cat([k_cache, x_new @ W_k], dim=-2).",
                _reprojected("k"), _reprojected("v"), _reprojected(concatenated=True)),
    ),
))
