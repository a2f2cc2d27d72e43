"""Exercises on self-attention and positions: self-attention with its three projections W_q, W_k and W_v,
the sinusoidal positional encoding, and its relative-position property (a shift is a rotation)."""

from __future__ import annotations

import math

import torch

from .. import attention, positional
from . import Case, Exercise, Mistake, register
from ._grader import randn
from .scoring import _TRANSPOSE_ERRORS, TRANSPOSE_HINT

# --- 1. self-attention with W_q, W_k, W_v ---------------------------------------------------------------


def self_attention(x: torch.Tensor, W_q: torch.Tensor, W_k: torch.Tensor,
                   W_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-head self-attention (Vaswani et al. 2017, eq. 1 with the projections of section 3.2.2).

    ``Q = x W_q``, ``K = x W_k``, ``V = x W_v``; ``weights = softmax(Q Kᵀ / √D)`` over the keys;
    ``output = weights V``. The queries, keys and values all come from the same sequence x.

    x: (..., L, E); W_q, W_k: (E, D); W_v: (E, Dv), written input size first, as in the paper (an
    ``nn.Linear(E, D)`` stores the transpose). Returns output (..., L, Dv) and weights (..., L, L).
    """
    return attention.attend(x @ W_q, x @ W_k, x @ W_v)  # (..., L, D), (..., L, D), (..., L, Dv)


def _sa_case(gen, label, batch, length, e, d, dv, dtype=torch.float32, scale=1.0):
    x = randn(gen, *batch, length, e, dtype=dtype, scale=scale)
    weights = (randn(gen, e, size, dtype=dtype, scale=1 / math.sqrt(e)) for size in (d, d, dv))
    return Case(label, (x, *weights))


def _sa_cases(gen):
    # E, D, Dv and L differ in every case (and √E ≠ √D), so a wrong size or a missing projection shows.
    return [
        _sa_case(gen, "random (B=2, L=5, E=6, D=4, Dv=3)", (2,), 5, 6, 4, 3),
        _sa_case(gen, "batch of one (L=7, E=8, D=5, Dv=6)", (1,), 7, 8, 5, 6),
        _sa_case(gen, "no batch axis: x (L, E) (L=4, E=9, D=3, Dv=2)", (), 4, 9, 3, 2),
        _sa_case(gen, "float64 (L=6, E=5, D=16, Dv=4)", (3,), 6, 5, 16, 4, dtype=torch.float64),
        _sa_case(gen, "large embeddings (L=5, E=10, D=25, Dv=3)", (2,), 5, 10, 25, 3, scale=3.0),
        _sa_case(gen, "one token (L=1, E=4, D=2, Dv=3)", (2,), 1, 4, 2, 3),
    ]


def _sa_variant(q="q", k="k", v="v", scale=None, dim=-1, transpose=False):
    """Self-attention with a projection, the scale, the softmax axis or the weights' orientation changed.
    q, k or v None: that one is x itself, not projected. scale(x, W_q, W_v) multiplies the scores
    (default 1/√D, D = W_q.size(-1))."""
    def variant(x, W_q, W_k, W_v):
        pick = {"q": W_q, "k": W_k, "v": W_v}
        queries, keys, values = (x if name is None else x @ pick[name] for name in (q, k, v))
        factor = 1 / math.sqrt(W_q.size(-1)) if scale is None else scale(x, W_q, W_v)
        scores = queries @ keys.transpose(-2, -1) * factor  # (..., L, L)
        weights = torch.softmax(scores, dim=dim)
        mixer = weights.transpose(-2, -1) if transpose else weights
        return mixer @ values, weights
    return variant


def _over_sqrt(size):
    """The scale 1/√size, size picked from (x, W_q, W_v)."""
    return lambda x, W_q, W_v: 1 / math.sqrt(size(x, W_q, W_v))


_E = _over_sqrt(lambda x, W_q, W_v: x.size(-1))


register(Exercise(
    id="self-attention",
    title="Self-attention with W_q, W_k, W_v",
    reference=self_attention,
    cases=_sa_cases,
    outputs=("output", "weights"),
    diagnose_first="weights",
    mistakes=(
        Mistake("the scores were not scaled by 1/√D",
                "divide Q @ Kᵀ by math.sqrt(D), where D = W_q.size(-1) is the size of the queries and keys.",
                _sa_variant(scale=lambda x, W_q, W_v: 1.0)),
        Mistake("the scores were divided by D instead of √D",
                "the scale is 1/√D: divide Q @ Kᵀ by math.sqrt(D), not by D itself.",
                _sa_variant(scale=lambda x, W_q, W_v: 1 / W_q.size(-1))),
        Mistake("the scores were scaled by the square root of the wrong size",
                "D is the size of the projected queries and keys, W_q.size(-1) (or Q.size(-1)); not the "
                "embedding size E = x.size(-1), the value size Dv = W_v.size(-1), nor the sequence length "
                "L = x.size(-2).",
                _sa_variant(scale=_E),
                _sa_variant(scale=_over_sqrt(lambda x, W_q, W_v: W_v.size(-1))),
                _sa_variant(scale=_over_sqrt(lambda x, W_q, W_v: x.size(-2)))),
        Mistake("the softmax ran over the wrong axis",
                "each query's weights must sum to 1 over the keys: softmax over the last axis (dim=-1) of "
                "the (..., L, L) scores. Count from the end: the inputs may have no batch axis.",
                _sa_variant(dim=-2), _sa_variant(dim=0), _sa_variant(dim=1)),
        Mistake("the weights were transposed before multiplying V",
                "row i of the weights belongs to query i: output = weights @ V, with no transpose. "
                "weightsᵀ @ V would mix, for word i, the weights that the other words give to word i.",
                _sa_variant(transpose=True)),
        Mistake("W_q and W_k were swapped",
                "queries are x @ W_q and keys x @ W_k; swapping them transposes the scores, so token i "
                "would get the weights meant for token j.",
                _sa_variant(q="k", k="q")),
        Mistake("the queries and keys were not projected (Q = K = x)",
                "as section 7.1 showed, Q = K = x makes each word look mostly at itself and the scores "
                "symmetric: queries and keys get their own projections, Q = x @ W_q and K = x @ W_k.",
                _sa_variant(q=None, k=None), _sa_variant(q=None, k=None, scale=_E),
                _sa_variant(q=None, k=None, v=None, scale=_E)),
        Mistake("one matrix was used for two projections",
                "each of Q, K and V has its own matrix: Q = x @ W_q, K = x @ W_k, V = x @ W_v.",
                _sa_variant(k="q"), _sa_variant(q="k"), _sa_variant(v="q"), _sa_variant(v="k")),
        Mistake("the values were not projected",
                "the output averages V = x @ W_v, not x itself: the values get their own projection, "
                "so the output has size Dv = W_v.size(-1).",
                _sa_variant(v=None)),
    ),
    error_hints=(
        ("cannot be multiplied", "the inner sizes of a product do not match. Here the weights are written "
                                 "as in the paper, input size first: W_q is (E, D), so Q = x @ W_q with no "
                                 "transpose, and the scores are Q @ K.transpose(-2, -1)."),
        ("must match the size of tensor", "two shapes do not line up. For Q @ Kᵀ, " + TRANSPOSE_HINT
         + " For a softmax written by hand, keep the summed axis: e.sum(dim=-1, keepdim=True)."),
        ("Dimension out of range", "one case has no batch axis, x (L, E): index axes from the end, "
                                   "K.transpose(-2, -1) and softmax(dim=-1)."),
        *_TRANSPOSE_ERRORS,
    ),
))


# --- 2. the sinusoidal encoding -------------------------------------------------------------------------

def _positions(gen, n, high, dtype=torch.float32):
    return torch.randint(0, high, (n,), generator=gen).to(dtype)


def _sin_cases(gen):
    return [
        Case("random positions (L=7, d_model=8)", (_positions(gen, 7, 50), 8)),
        Case("positions 0 .. L-1 (L=10, d_model=16)", (torch.arange(10.0), 16)),
        Case("one pair of dimensions (L=5, d_model=2)", (_positions(gen, 5, 30), 2)),
        Case("float64, far positions (L=6, d_model=12)", (_positions(gen, 6, 2000, torch.float64), 12)),
        Case("more dimensions than positions (L=3, d_model=32)", (_positions(gen, 3, 40), 32)),
        Case("later positions 100 .. 108 (d_model=10)", (torch.arange(100.0, 109.0), 10)),
    ]


def _sin_variant(func=("sin", "cos"), exponent=lambda i, d: 2 * i / d, layout="interleave", shift=0.0,
                 angle=lambda pos, omega: pos * omega, arange=False, roles=False):
    """The encoding with sin/cos, the exponent, the layout or the positions changed."""
    def variant(positions, d_model):
        pos = torch.arange(positions.numel(), dtype=positions.dtype) if arange else positions
        pos = pos.to(torch.float64) + shift
        i = torch.arange(d_model // 2, dtype=torch.float64)
        if roles:  # pos and i trade places: sin(i / 10000^(2 pos / d))
            angles = i[None, :] / 10000.0 ** (2 * pos[:, None] / d_model)
        else:
            angles = angle(pos[:, None], 10000.0 ** -exponent(i, d_model))  # (L, d/2)
        first, second = (getattr(torch, f)(angles) for f in func)
        stacked = torch.stack((first, second), dim=-1).flatten(-2) if layout == "interleave" \
            else torch.cat((first, second), dim=-1)
        return stacked.to(positions.dtype)
    return variant


def _per_dimension_exponent(positions, d_model):
    """The exponent j/d_model with j the dimension (not the pair): the cos of a pair gets another frequency."""
    j = torch.arange(d_model, dtype=torch.float64)
    angles = positions.to(torch.float64)[:, None] / 10000.0 ** (j / d_model)  # (L, d_model)
    return torch.where(j % 2 == 0, torch.sin(angles), torch.cos(angles)).to(positions.dtype)


register(Exercise(
    id="sinusoidal-encoding",
    title="Sinusoidal positional encoding",
    reference=positional.sinusoidal_encoding,
    cases=_sin_cases,
    outputs=("encoding",),
    rtol=1e-4,
    atol=1e-4,  # float32 angles pos·ω lose about 1e-5 at positions near 100, whichever way one computes ω
    mistakes=(
        Mistake("sin and cos were swapped",
                "even dimensions hold the sine: PE(pos, 2i) = sin(pos·ω_i), PE(pos, 2i+1) = cos(pos·ω_i).",
                _sin_variant(func=("cos", "sin"))),
        Mistake("the frequency exponent is wrong",
                "ω_i = 1 / 10000^(2i / d_model) with i the index of the pair (0 .. d_model/2 - 1): the "
                "exponent is 2i/d_model, which runs from 0 up to nearly 1, and the sin and cos of a pair "
                "(dimensions 2i and 2i+1) share one frequency.",
                _sin_variant(exponent=lambda i, d: i / d), _sin_variant(exponent=lambda i, d: 2 * i),
                _sin_variant(exponent=lambda i, d: 4 * i / d), _per_dimension_exponent),
        Mistake("the position was multiplied by 10000^(2i/d) instead of divided",
                "the angle is pos / 10000^(2i/d_model) = pos·ω_i: the frequencies fall with i, so the "
                "wavelengths grow from 2π to about 2π·10000.",
                _sin_variant(angle=lambda pos, omega: pos / omega)),
        Mistake("sines and cosines were concatenated, not interleaved",
                "the paper interleaves them: dimension 2i is sin, 2i+1 is cos of the same frequency. "
                "[all sines | all cosines] is tensor2tensor's layout, and tensor2tensor also spaces the "
                "frequencies slightly differently (ω_i = 10000^(-i/(d_model/2 - 1)), ending exactly at "
                "1/10000): a related encoding, not the paper's.",
                _sin_variant(layout="concat")),
        Mistake("positions and dimensions swapped roles",
                "PE(pos, 2i) = sin(pos / 10000^(2i/d_model)): the position is divided by the frequency term, "
                "and i (the pair index) sits in the exponent.",
                _sin_variant(roles=True)),
        Mistake("the given positions were ignored",
                "encode the positions you are given (they may start anywhere); torch.arange(L) is only the "
                "usual case.", _sin_variant(arange=True)),
        Mistake("the positions are off by one",
                "positions start at 0: PE(0) = [0, 1, 0, 1, ...]. Use the positions as they are.",
                _sin_variant(shift=1.0), _sin_variant(shift=-1.0)),
    ),
))


# --- 3. a shift is a rotation: PE(pos + k) from PE(pos) -------------------------------------------------

def _shift_cases(gen):
    table = positional.sinusoidal_table
    return [
        Case("random vectors (B=2, L=5, d_model=8), k=3", (randn(gen, 2, 5, 8), 3)),
        Case("PE(0 .. 9), d_model=16, k=4", (table(10, 16), 4)),
        Case("one pair (L=4, d_model=2), k=1", (randn(gen, 4, 2), 1)),
        Case("float64, k=-7 (backwards), d_model=6", (randn(gen, 3, 6, dtype=torch.float64), -7)),
        Case("PE(20 .. 25), d_model=12, k=50",
             (positional.sinusoidal_encoding(torch.arange(20, 26), 12), 50)),
        Case("one position (L=1, d_model=10), k=2", (randn(gen, 1, 10), 2)),
    ]


def _shift_variant(sign=1.0, exponent=lambda i, d: 2 * i / d, pairs="adjacent", same_angle=False):
    """The rotation with its direction, frequencies or pairing changed."""
    def variant(encoding, offset):
        d = encoding.size(-1)
        i = torch.arange(d // 2, dtype=torch.float64)
        omega = torch.ones_like(i) if same_angle else 10000.0 ** -exponent(i, d)
        a = sign * offset * omega
        cos, sin = torch.cos(a).to(encoding), torch.sin(a).to(encoding)
        if pairs == "adjacent":
            s, c = encoding[..., 0::2], encoding[..., 1::2]
        else:  # dimension i paired with i + d/2
            s, c = encoding[..., : d // 2], encoding[..., d // 2:]
        new_s, new_c = s * cos + c * sin, c * cos - s * sin
        if pairs == "adjacent":
            return torch.stack((new_s, new_c), dim=-1).flatten(-2)
        return torch.cat((new_s, new_c), dim=-1)
    return variant


def _rebuilt(encoding, offset):
    length, d_model = encoding.shape[-2:]
    table = positional.sinusoidal_encoding(torch.arange(length) + offset, d_model)  # (L, d_model)
    return table.to(encoding).expand_as(encoding)


register(Exercise(
    id="sinusoidal-shift",
    title="A shift is a rotation: PE(pos + k) from PE(pos)",
    reference=positional.shift_sinusoidal,
    cases=_shift_cases,
    outputs=("shifted",),
    mistakes=(
        Mistake("the rotation turns the wrong way (this gives PE(pos - k))",
                "sin(p + a) = sin p·cos a + cos p·sin a and cos(p + a) = cos p·cos a - sin p·sin a: the new "
                "sine gets +cos·sin(a), the new cosine -sin·sin(a).",
                _shift_variant(sign=-1.0)),
        Mistake("every pair was turned by the same angle",
                "pair i turns by k·ω_i, with its own frequency ω_i = 1 / 10000^(2i/d_model).",
                _shift_variant(same_angle=True)),
        Mistake("the frequency exponent is wrong",
                "ω_i = 1 / 10000^(2i / d_model), i = 0 .. d_model/2 - 1 the index of the pair.",
                _shift_variant(exponent=lambda i, d: i / d), _shift_variant(exponent=lambda i, d: 2 * i)),
        Mistake("dimension i was paired with i + d_model/2",
                "the pairs are adjacent, (2i, 2i+1): sin in the even dimension, cos in the odd one after it; "
                "use encoding[..., 0::2] and encoding[..., 1::2].",
                _shift_variant(pairs="halves")),
        Mistake("the input was ignored: the table was rebuilt for positions k, k+1, ...",
                "rotate the vectors you are given; they need not be PE(0), PE(1), ... (any vectors, e.g. "
                "a later stretch of positions), and the map is the same linear rotation for all.",
                _rebuilt),
    ),
))
