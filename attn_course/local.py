"""Global and local attention: Luong's local-m and local-p, and the sliding window of modern models.

Global attention (Luong et al. 2015, sec. 3.1, eq. 7) lets every query weigh every key: ``attention.attend``.
Local attention (sec. 3.2) looks only at a window of keys around an aligned position p_t:

- **local-m** (monotonic): p_t = t, the t-th target word is aligned with the t-th source word;
- **local-p** (predictive): p_t = S · sigmoid(v_pᵀ tanh(W_p h_t)) is predicted from the decoder state
  (eq. 9), and the softmax weights are multiplied by a Gaussian around p_t, exp(-(s - p_t)² / (2σ²)),
  σ = half_width / 2 (eq. 10).

The **sliding window** of Longformer (Beltagy et al. 2020) and Mistral (Jiang et al. 2023) is local-m for
self-attention: token i looks at the tokens near i, optionally only the earlier ones (causal). Its cost grows
as L·w instead of L² (L tokens, window w); ``sliding_window_attention(impl="banded")`` shows how.

Conventions. Positions are 0-based: the S source words (keys) sit at s = 0, 1, ..., S-1. ``half_width`` is
the window's half-width, the letter D in Luong's paper; the docstrings write it ``half_width`` because D is
the feature size in the shape legend. The window around p_t is [p_t - half_width, p_t + half_width], cut off
at the ends of the sequence, and centred on p_t even when p_t is real (a course convention: Luong's
a_t ∈ R^{2D+1} suggests a whole-number centre). ``window`` (for the sliding window) follows
``masking.window_mask``: query i sees key j iff |i - j| < window. So local-m with half-width h is the sliding
window with window = h + 1. Shapes: B batch, H heads, Lq queries (target words), Lk = S keys (source words),
D key/query size, Dv value size; leading dimensions broadcast as in ``attend``. Masks are boolean,
True = may attend; scale None means 1/√D, as in ``attend`` (Luong's dot score is unscaled: pass scale=1.0).
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
from torch import nn

from . import _checks
from .attention import _check_qkv, attend
from .masking import check_mask, combine_masks, masked_softmax, padding_mask, window_mask

IMPLS = ("reference", "banded")  # the readable impls: they can return the weights
FAST_IMPLS = ("blocked", "flex")  # fused kernels: the context only
ALL_IMPLS = IMPLS + FAST_IMPLS
SDPA_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
FLEX_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# --- checks --------------------------------------------------------------------------------------------

def _half_width(half_width, minimum: int) -> int:
    return _checks.number("half_width", half_width, integer=True, minimum=minimum, strict=False)


def _scores_tensor(scores: torch.Tensor) -> torch.Tensor:
    _checks.tensor("scores", scores)
    if scores.dim() < 2:
        raise ValueError(f"scores must have shape (..., Lq, S), at least 2 dimensions, got shape "
                         f"{tuple(scores.shape)}")
    return scores


def _check_positions(positions, rows: torch.Size, source_len: int, *, integer: bool) -> torch.Tensor:
    """positions must broadcast to ``rows`` = (..., Lq) and lie inside the sequence."""
    if integer and isinstance(positions, torch.Tensor) and (
            positions.is_floating_point() or positions.is_complex() or positions.dtype == torch.bool):
        raise TypeError(f"positions must be an integer tensor for local-m (whole source positions p_t, "
                        f"e.g. torch.arange(Lq)), got dtype {positions.dtype}; real positions are "
                        f"local-p's (local_p_weights)")
    _checks.tensor("positions", positions, kind="int" if integer else "float")
    try:
        shape = torch.broadcast_shapes(positions.shape, rows)
    except RuntimeError:
        shape = None
    if shape != rows:
        raise ValueError(f"positions must have shape (..., Lq) = {tuple(rows)} (one position per query), "
                         f"got shape {tuple(positions.shape)}")
    high = source_len - 1 if integer else source_len
    if positions.numel() and not (torch.isfinite(positions).all() and positions.min() >= 0
                                  and positions.max() <= high):
        raise ValueError(f"positions must lie inside the sequence, between 0 and {high} (S = {source_len}), "
                         f"got values from {positions.min().item():g} to {positions.max().item():g}")
    return positions


def _scale(q: torch.Tensor, scale) -> float:
    if scale is None:
        return 1.0 / math.sqrt(q.size(-1))
    return _checks.positive("scale", scale)


# --- windows and the Gaussian --------------------------------------------------------------------------

def window_around(positions: torch.Tensor, source_len: int, half_width: int) -> torch.Tensor:
    """The keys inside each query's window: ``window[..., t, s] = |s - p_t| <= half_width`` (Luong et al.
    2015, sec. 3.2: the window [p_t - D, p_t + D], with Luong's D = half_width).

    positions: (..., Lq) the centres p_t, whole numbers (local-m) or real (local-p); source_len: S;
    half_width: >= 0. Returns a boolean (..., Lq, S) mask, True = inside the window. Keys past either end
    of the sequence simply do not exist, so the window is cut off there. A whole-number p_t gets
    2·half_width + 1 keys (fewer near the ends); a real one 2·half_width or 2·half_width + 1 (the window is
    centred on the real p_t: a course convention).
    """
    _checks.number("source_len", source_len, integer=True, minimum=1, strict=False)
    _half_width(half_width, 0)
    s = torch.arange(source_len, device=positions.device)  # (S,)
    return (s - positions[..., None]).abs() <= half_width  # (..., Lq, 1) against (S,) -> (..., Lq, S)


def gaussian_window(positions: torch.Tensor, source_len: int, half_width: int) -> torch.Tensor:
    """Luong's Gaussian around the predicted position: ``exp(-(s - p_t)² / (2σ²))`` with
    σ = half_width / 2 (Luong et al. 2015, eq. 10: σ = D/2).

    positions: (..., Lq) real p_t; source_len: S; half_width: >= 1. Returns (..., Lq, S) in the dtype of
    ``positions`` (floating point). At the edge of the window, |s - p_t| = half_width, the factor is
    exp(-2) ≈ 0.14.
    """
    _checks.tensor("positions", positions)
    _checks.number("source_len", source_len, integer=True, minimum=1, strict=False)
    sigma = _half_width(half_width, 1) / 2
    s = torch.arange(source_len, device=positions.device, dtype=positions.dtype)  # (S,)
    distance = s - positions[..., None]  # (..., Lq, S)
    return torch.exp(-(distance**2) / (2 * sigma**2))


def predict_position(h: torch.Tensor, W_p: torch.Tensor, v_p: torch.Tensor, source_len) -> torch.Tensor:
    """Local-p's aligned position ``p_t = S · sigmoid(v_pᵀ tanh(W_p h_t))`` (Luong et al. 2015, eq. 9).

    h: (..., Lq, Hd) decoder states (Hd: their size); W_p: (A, Hd); v_p: (A,) (A: a hidden size of the
    predictor); source_len: S, an int, or a tensor of shape h.shape[:-2] (e.g. (B,)) holding each
    sentence's length. Returns p: (..., Lq), real numbers strictly between 0 and S. With Luong's 1-based
    words (1, ..., S) that range ends at the last word; with this course's 0-based words (0, ..., S-1) it
    reaches up to one place past it (a faithful 0-based eq. 9 would be S · sigmoid(...) - 1, or
    (S - 1) · sigmoid(...); the course keeps S · sigmoid). The window around p_t still reaches the last
    word. p_t is a smooth function of W_p and v_p, so they can be learned through the Gaussian of
    ``local_p_weights``.
    """
    _checks.tensor("h", h)
    _checks.tensor("W_p", W_p, ndim=2)
    _checks.tensor("v_p", v_p, ndim=1)
    _checks.same_size("W_p", W_p, 1, "h", h, -1, "state size Hd (W_p is (A, Hd), h is (..., Lq, Hd))")
    _checks.same_size("W_p", W_p, 0, "v_p", v_p, 0, "predictor size A (W_p is (A, Hd), v_p is (A,))")
    if h.dim() < 2:
        raise ValueError(f"h must have shape (..., Lq, Hd), at least 2 dimensions, got shape "
                         f"{tuple(h.shape)}")
    if isinstance(source_len, torch.Tensor):
        if source_len.shape != h.shape[:-2]:
            raise ValueError(f"source_len must be an int or a tensor of shape {tuple(h.shape[:-2])} (one "
                             f"length per sequence), got shape {tuple(source_len.shape)}")
        if source_len.numel() and source_len.min() < 1:
            raise ValueError(f"source_len must be >= 1, got {source_len.tolist()}")
        source_len = source_len[..., None].to(h.dtype)  # (..., 1) against (..., Lq)
    else:
        _checks.number("source_len", source_len, integer=True, minimum=1, strict=False)
    hidden = torch.tanh(h @ W_p.T)  # (..., Lq, Hd) @ (Hd, A) -> (..., Lq, A)
    return source_len * torch.sigmoid(hidden @ v_p)  # (..., Lq, A) @ (A,) -> (..., Lq)


# --- local-m and local-p ------------------------------------------------------------------------------

def monotonic_positions(lq: int, source_len: int, *, device=None) -> torch.Tensor:
    """Local-m's aligned positions p_t = t, held at the last source word once t passes it: min(t, S - 1).
    Returns an integer (Lq,) tensor."""
    _checks.number("lq", lq, integer=True, minimum=1, strict=False)
    _checks.number("source_len", source_len, integer=True, minimum=1, strict=False)
    return torch.arange(lq, device=device).clamp(max=source_len - 1)


def local_m_weights(scores: torch.Tensor, half_width: int, positions: torch.Tensor | None = None, *,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """Local-m weights (Luong et al. 2015, sec. 3.2): the softmax of the scores over the keys in
    [p_t - half_width, p_t + half_width] only, with p_t = t (monotonic alignment); every other key gets
    exactly 0.

    scores: (..., Lq, S); half_width (Luong's D): >= 0; positions: whole numbers (..., Lq) in [0, S-1], by
    default ``monotonic_positions`` (p_t = min(t, S - 1)); mask: boolean, broadcastable to scores,
    True = may attend. Returns weights (..., Lq, S); each row sums to 1 (0 if its window holds no allowed
    key). With half_width >= S - 1 the window covers every key and this is global attention.
    """
    _scores_tensor(scores)
    lq, source_len = scores.shape[-2:]
    _half_width(half_width, 0)
    if positions is None:
        positions = monotonic_positions(lq, source_len, device=scores.device)
    _check_positions(positions, scores.shape[:-1], source_len, integer=True)
    inside = window_around(positions, source_len, half_width)  # (..., Lq, S)
    return masked_softmax(scores, combine_masks(inside, mask))


def local_p_weights(scores: torch.Tensor, positions: torch.Tensor, half_width: int, *,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """Local-p weights (Luong et al. 2015, eq. 10):
    ``a_t(s) = softmax(scores)_s · exp(-(s - p_t)² / (2σ²))`` with σ = half_width / 2, the softmax taken
    over the keys in the window [p_t - half_width, p_t + half_width] only.

    Eq. 10 writes the first factor as align(h_t, h̄_s), which eq. 7 defines as a softmax over *all* source
    words; this course takes the softmax over the window only, as local-m does (the keys outside the window
    are never scored), so the window's weights sum to 1 before the Gaussian.

    scores: (..., Lq, S); positions: real p_t, (..., Lq), between 0 and S (``predict_position``);
    half_width (Luong's D): >= 1; mask: boolean, broadcastable to scores, True = may attend. Returns
    weights (..., Lq, S), exactly 0 outside the window. The Gaussian multiplies *after* the softmax, so a row
    sums to less than 1: keys near p_t keep most of their weight, keys at the window's edge about 14% of it.
    The truncation has no gradient (and jumps when a key crosses the window's edge), but the Gaussian is
    smooth: that is how p_t (and W_p, v_p) learn.
    """
    _scores_tensor(scores)
    source_len = scores.size(-1)
    _half_width(half_width, 1)
    _check_positions(positions, scores.shape[:-1], source_len, integer=False)
    positions = positions.to(scores.dtype)
    inside = window_around(positions, source_len, half_width)  # (..., Lq, S)
    weights = masked_softmax(scores, combine_masks(inside, mask))  # sums to 1 over the window
    return weights * gaussian_window(positions, source_len, half_width)  # favour keys near p_t


def local_m(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, half_width: int,
            positions: torch.Tensor | None = None, *, mask: torch.Tensor | None = None,
            scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Local-m attention (Luong et al. 2015, sec. 3.2): dot-product attention over the keys in
    [p_t - half_width, p_t + half_width], p_t = t. See ``local_m_weights``.

    q: (..., Lq, D), k: (..., S, D), v: (..., S, Dv); half_width: Luong's D (not the feature size D of the
    shapes); positions: whole numbers (..., Lq) or None for p_t = min(t, S - 1); mask: True = may attend,
    broadcastable to (..., Lq, S). Returns context (..., Lq, Dv) and weights (..., Lq, S).
    """
    _check_qkv(q, k, v)
    scores = q @ k.transpose(-2, -1) * _scale(q, scale)  # (..., Lq, D) @ (..., D, S) -> (..., Lq, S)
    weights = local_m_weights(scores, half_width, positions, mask=mask)
    return weights @ v, weights  # (..., Lq, S) @ (..., S, Dv) -> (..., Lq, Dv)


def local_p(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor, half_width: int, *,
            mask: torch.Tensor | None = None,
            scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Local-p attention (Luong et al. 2015, eqs. 9-10): dot-product scores, softmax over the window
    [p_t - half_width, p_t + half_width], times a Gaussian of σ = half_width / 2 around p_t. See
    ``local_p_weights``.

    q: (..., Lq, D), k: (..., S, D), v: (..., S, Dv); positions: real (..., Lq) in [0, S], e.g. from
    ``predict_position``; half_width (Luong's D): >= 1; mask: True = may attend. Returns context
    (..., Lq, Dv) and weights (..., Lq, S).
    """
    _check_qkv(q, k, v)
    scores = q @ k.transpose(-2, -1) * _scale(q, scale)  # (..., Lq, S)
    weights = local_p_weights(scores, positions, half_width, mask=mask)
    return weights @ v, weights  # (..., Lq, Dv)


class LocalPAttention(nn.Module):
    """Local-p attention with its position predictor (Luong et al. 2015, eqs. 9-10): holds W_p and v_p.

    hidden_size: size Hd of the decoder states (queries, and the keys: the score is a dot product);
    attn_size: A, the predictor's hidden size; half_width: Luong's D; scale: multiplies the dot scores
    (default 1.0, Luong's unscaled dot; None for 1/√Hd). forward(h, keys, values, source_lengths=None)
    with h: (B, Lq, Hd), keys: (B, S, Hd), values: (B, S, Dv), source_lengths: (B,) true lengths of padded
    sources (default: all S). Returns context (B, Lq, Dv), weights (B, Lq, S) and the positions p (B, Lq).
    """

    def __init__(self, hidden_size: int, attn_size: int, half_width: int, scale: float | None = 1.0):
        super().__init__()
        _checks.positive("hidden_size", hidden_size, integer=True)
        _checks.positive("attn_size", attn_size, integer=True)
        self.half_width = _half_width(half_width, 1)
        self.scale = scale  # Luong's dot score is unscaled
        self.W_p = nn.Linear(hidden_size, attn_size, bias=False)
        self.v_p = nn.Linear(attn_size, 1, bias=False)

    def forward(self, h: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                source_lengths: torch.Tensor | None = None):
        _checks.tensor("h", h, ndim=3)
        _checks.tensor("keys", keys, ndim=3)
        source_len = keys.size(-2)
        mask = None
        if source_lengths is not None:  # each sentence predicts p_t inside its own length
            mask = padding_mask(source_lengths, source_len)  # (B, 1, S)
            source_len = source_lengths
        positions = predict_position(h, self.W_p.weight, self.v_p.weight[0], source_len)  # (B, Lq)
        context, weights = local_p(h, keys, values, positions, self.half_width, mask=mask, scale=self.scale)
        return context, weights, positions


# --- the sliding window ----------------------------------------------------------------------------

def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, *,
                             causal: bool = False, mask: torch.Tensor | None = None,
                             scale: float | None = None, impl: str = "reference",
                             return_weights: bool = False):
    """Sliding-window attention (Longformer, Beltagy et al. 2020, sec. 3.1; Mistral, Jiang et al. 2023):
    query i attends key j only if |i - j| < window (and j <= i when ``causal``).

    q: (..., Lq, D), k: (..., Lk, D), v: (..., Lk, Dv); window: w >= 1 (``masking.window_mask``: w = 1 is
    "only yourself", a causal query sees w keys, a bidirectional one up to 2w - 1); mask: boolean, True = may
    attend, broadcastable to (..., Lq, Lk) (e.g. a padding mask); scale: None for 1/√D.
    impl: "reference" builds the dense (Lq, Lk) scores and masks them: O(Lq·Lk) time and memory, the
    readable definition. "banded" computes only the scores inside the band: blocks of w queries against the
    keys of their own and neighbouring blocks, O(Lq·w) time and memory; same values and gradients.
    The fast impls (``FAST_IMPLS``) return the context only:
    "blocked" is "banded" run by ``F.scaled_dot_product_attention`` (fused kernel, fp16/bf16/fp32/fp64,
    gradients); "flex" is ``torch.nn.attention.flex_attention`` with a sliding-window block mask (torch >= 2.5,
    fp16/bf16/fp32, compiled on first use: seconds to tens of seconds; no backward on the CPU, where it
    raises instead of silently switching to "blocked"). Its compile is for fixed shapes
    (``torch.compile(dynamic=False)``): every new (B, H, Lq, Lk) compiles again, and past
    ``torch._dynamo.config.recompile_limit`` (8) torch silently runs the uncompiled FlexAttention, which
    builds the whole score matrix (a RuntimeWarning says so): keep to a few fixed lengths. With a ``mask``,
    flex also rebuilds its block mask on every call, O(B·H·Lq·Lk) (only over the batch and head dimensions
    where the mask varies); without one the block mask is cached per (Lq, Lk, w).
    A query with no key to attend (fully masked, or Lk = 0) gets a zero context in every impl; Lq = 0 gives
    an empty one.
    Returns the context (..., Lq, Dv), and the dense weights (..., Lq, Lk) too if ``return_weights``
    (for "banded" that re-creates the O(Lq·Lk) matrix: ask only to look at it; not for the fast impls).
    """
    _check_qkv(q, k, v)
    _checks.number("window", window, integer=True, minimum=1, strict=False)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be True or False, got {type(causal).__name__}")
    if impl not in ALL_IMPLS:
        raise ValueError(f"impl must be one of {', '.join(map(repr, ALL_IMPLS))}, got {impl!r}")
    if return_weights and impl in FAST_IMPLS:
        raise ValueError(f"impl={impl!r} never builds the attention weights, so return_weights=True is not "
                         f"available with it: use impl='reference' or impl='banded' to look at the weights")
    scale = _scale(q, scale)
    lq, lk = q.size(-2), k.size(-2)
    if mask is not None:
        shape = (*torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]), lq, lk)
        check_mask(mask, q.new_empty(()).expand(shape))  # checks the shape; expand allocates nothing
    if impl in FAST_IMPLS:
        _check_dtype(impl, q, SDPA_DTYPES if impl == "blocked" else FLEX_DTYPES)
    if lq == 0 or lk == 0:  # no query, or no key to attend: the blocks and kernels need both
        weights = q @ k.transpose(-2, -1)  # (..., Lq, Lk): no entries; keeps the autograd graph
        context = weights @ v  # (..., Lq, Lk) @ (..., Lk, Dv) -> (..., Lq, Dv): zeros (an empty sum)
        return (context, weights) if return_weights else context
    if impl == "reference":
        band = window_mask(lq, lk, window=window, causal=causal, device=q.device)  # (Lq, Lk)
        context, weights = attend(q, k, v, mask=combine_masks(band, mask), scale=scale)
    elif impl == "banded":
        context, weights = _banded(q, k, v, window, causal, mask, scale, return_weights)
    elif impl == "blocked":
        context = _blocked(q, k, v, window, causal, mask, scale)
    else:
        context = _flex(q, k, v, window, causal, mask, scale)
    return (context, weights) if return_weights else context


def _check_dtype(impl: str, q: torch.Tensor, supported: tuple[torch.dtype, ...]) -> None:
    if q.dtype not in supported:
        names = ", ".join(str(d).removeprefix("torch.") for d in supported)
        raise TypeError(f"impl={impl!r} supports the dtypes {names}, got {q.dtype}; use impl='banded' "
                        f"(any floating dtype) or convert the inputs")


# --- the fast sliding window: blocked SDPA and FlexAttention ---------------------------------------

BLOCKED_CHUNK = 64  # queries per chunk of impl="blocked" (at most w): measured fastest on the CPU, see _chunk_size
BACKWARD_KEY_ROWS = 2048  # the CPU backward runs on groups of chunks reading about this many key rows each


def _chunk_size(lq: int, window: int, chunk: int | None = None) -> int:
    """Queries per chunk: at most ``BLOCKED_CHUNK`` and at most w (a chunk of c queries reads a span of
    (R + 1)·c keys causal, (2R + 1)·c bidirectional, R = ⌈(w - 1)/c⌉: the smaller c, the fewer wasted scores
    but the more chunks), and no more than Lq."""
    return max(1, min(chunk or BLOCKED_CHUNK, window, lq))


def _chunk_layout(lq: int, lk: int, window: int, chunk: int, causal: bool, device):
    """The chunks of ``impl="blocked"``. Query chunk b holds i = b·c + a (a < c queries). Its keys are whole
    chunks of c keys: the R = ⌈(w - 1)/c⌉ chunks before its own, its own, and (unless causal) the R after:
    j = (b - R)·c + s, s < span = (R + 1)·c or (2R + 1)·c. That covers |i - j| < w. Since j - i = s - a - R·c
    does not depend on b, every chunk has the same band pattern; only the chunks at the ends of the
    sequence also meet keys that do not exist (j < 0 or j >= Lk).
    Returns i (nb, c), j (nb, span) and ``band`` (c, span): True where |i - j| < w (and j <= i if causal)."""
    blocks = -(-lq // chunk)  # ceil(Lq / c)
    reach = -(-(window - 1) // chunk)  # R
    span = ((1 if causal else 2) * reach + 1) * chunk
    start = torch.arange(blocks, device=device)[:, None] * chunk  # (nb, 1)
    i = start + torch.arange(chunk, device=device)  # (nb, c)
    j = start - reach * chunk + torch.arange(span, device=device)  # (nb, span)
    rows, keys = i[0, :, None], j[0, None, :]  # chunk 0's (c, 1) and (1, span): the pattern of every chunk
    upper = keys <= rows if causal else keys < rows + window
    return i, j, (keys > rows - window) & upper  # (c, span)


def _allowed(i: torch.Tensor, j: torch.Tensor, band: torch.Tensor, lk: int) -> torch.Tensor:
    """The band of these chunks, cut to the keys that exist: (n, c, span) for i (n, c), j (n, span)."""
    real = (j >= 0) & (j < lk)  # (n, span)
    return band & real[:, None, :]


def _windows(padded: torch.Tensor, chunk: int, span: int) -> torch.Tensor:
    """(B', (nb - 1)·c + span, size) -> (B', nb, span, size): chunk b's keys j = (b - R)·c + s, s < span, as
    overlapping *views* of the padded keys: the span/c-fold overlap costs no memory. ``unfold`` is a view
    with a gradient (its backward adds the overlapping windows' gradients back together)."""
    return padded.unfold(-2, span, chunk).transpose(-2, -1)  # (B', nb, size, span) -> (B', nb, span, size)


def _key_windows(x: torch.Tensor, first: int, stop: int, chunk: int, span: int, front: int) -> torch.Tensor:
    """The key windows of chunks first ... stop - 1, (B', stop - first, span, size): chunk b's rows
    b·c - front + s, s < span (``_chunk_layout``'s j). A view of x where all those rows exist (the middle of
    a sequence: no copy, so no fresh memory to fault in); otherwise a copy of just the rows they cover, with
    zero rows standing in for the keys before the first and after the last (the few chunks at the ends, or
    all the chunks at once on the plain SDPA path: one padded copy of the sequence)."""
    start, end, length = first * chunk - front, (stop - 1) * chunk - front + span, x.size(-2)
    if 0 <= start and end <= length:
        return _windows(x[..., start:end, :], chunk, span)
    rows = x[..., min(max(start, 0), length):min(max(end, 0), length), :]
    before = min(max(-start, 0), end - start)
    return _windows(nn.functional.pad(rows, (0, 0, before, end - start - before - rows.size(-2))), chunk, span)


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The boolean mask as the 0 / -inf float mask the fused kernel adds to the scores (4-D)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, -math.inf)


def _add_windows(total: torch.Tensor, grads: torch.Tensor, first: int, chunk: int, skip: int) -> None:
    """Add window gradients (B', G, span, size) of chunks first ... first + G - 1 into ``total``, the key rows
    (B', rows, size), in place. Window b starts ``skip`` chunks before chunk b (the R chunks of padding in
    front of the keys) and spans m = span/c whole chunks, so its s-th piece of c rows lands on chunk
    b + s - skip: m strided additions instead of ``unfold``'s backward. Pieces on padding (a chunk before
    the first or after the last of ``total``) are dropped, so ``total`` holds the real keys only."""
    count, span = grads.size(1), grads.size(2)
    chunks = total.unflatten(1, (total.size(1) // chunk, chunk))  # (B', rows / c, c, size): a view
    for s, piece in enumerate(grads.unflatten(2, (span // chunk, chunk)).unbind(2)):  # (B', G, c, size)
        lo, hi = first + s - skip, first + s - skip + count  # the chunks it lands on
        cut_lo, cut_hi = max(lo, 0), min(hi, chunks.size(1))
        if cut_lo < cut_hi:
            chunks[:, cut_lo:cut_hi] += piece[:, cut_lo - lo:cut_hi - lo]


class _FlashChunksCPU(torch.autograd.Function):
    """The chunks through the CPU's fused flash kernel, with a backward that runs on groups of chunks.

    ``pieces``: runs of chunks (lo, hi, allowed) with a 4-D boolean mask each, (1 or B', hi - lo or 1, c, span);
    the chunks in the middle of a sequence share one (1, 1, c, span) band, so no O(Lq·span) mask is built.
    Autograd through ``F.scaled_dot_product_attention`` would make the kernel return the keys' gradient
    for every window, (B', nb, span, D): span/c times the keys (about 10x for c = 64, w = 256), dearer than
    the whole forward. Here each group's window gradients are added into one (B', rows, D) buffer at once
    (``_add_windows``), so the backward needs O(Lk·D) memory like the forward. Same kernel, same values as
    SDPA's own backward."""

    @staticmethod
    def forward(ctx, q_chunks, k, v, pieces, front, scale):
        chunk, span = q_chunks.size(2), pieces[0][2].size(-1)
        outs, lses = [], []
        for lo, hi, allowed in pieces:
            k_win, v_win = (_key_windows(x, lo, hi, chunk, span, front) for x in (k, v))  # (B', n, span, D)
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q_chunks[:, lo:hi], k_win, v_win, 0.0, False,
                attn_mask=_additive(allowed, q_chunks.dtype), scale=scale)  # (B', n, c, Dv), (B', n, c)
            outs.append(out)
            lses.append(lse)
        out, lse = (torch.cat(x, dim=1) if len(x) > 1 else x[0] for x in (outs, lses))
        ctx.save_for_backward(q_chunks, k, v, out, lse)
        ctx.pieces, ctx.front, ctx.scale, ctx.lk = pieces, front, scale, k.size(-2)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable  # the flash backward kernel has no derivative itself
    def backward(ctx, grad_out):
        q_chunks, k, v, out, lse = ctx.saved_tensors
        needs_q, needs_k, needs_v = ctx.needs_input_grad[:3]
        chunk, span = q_chunks.size(2), ctx.pieces[0][2].size(-1)
        grad_out = grad_out.contiguous()
        grad_q = torch.empty_like(q_chunks) if needs_q else None
        length = -(-ctx.lk // chunk) * chunk  # the real keys in whole chunks, for _add_windows
        # The kernel returns all three gradients at once; only the ones asked for are kept and summed.
        # Summed straight into the real keys' rows (no padding rows), so a whole number of chunks of keys
        # gives the gradient itself, contiguous: no copy, here or in autograd's accumulation.
        sums = {slot: x.new_zeros(x.size(0), length, x.size(-1))  # slot: the kernel's output 1 (k), 2 (v)
                for slot, x, needed in ((1, k, needs_k), (2, v, needs_v)) if needed}
        skip = ctx.front // chunk  # R: the chunks of padding before the first key
        group = max(1, BACKWARD_KEY_ROWS // span)  # chunks per group
        for lo, hi, allowed in ctx.pieces:
            shared = _additive(allowed, q_chunks.dtype) if allowed.size(1) == 1 else None  # one band for all
            for first in range(lo, hi, group):
                part = slice(first, min(hi, first + group))
                mask = shared if shared is not None else _additive(
                    allowed[:, first - lo:part.stop - lo], q_chunks.dtype)
                k_win, v_win = (_key_windows(x, part.start, part.stop, chunk, span, ctx.front) for x in (k, v))
                grads = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                    grad_out[:, part], q_chunks[:, part], k_win, v_win, out[:, part],
                    lse[:, part], 0.0, False, attn_mask=mask, scale=ctx.scale)
                # (B', G, c, D), (B', G, span, D), (B', G, span, Dv)
                if needs_q:
                    grad_q[:, part] = grads[0]
                for slot, total in sums.items():  # sum the overlapping windows' gradients
                    _add_windows(total, grads[slot], first, chunk, skip)
        grad_k, grad_v = (sums[slot][:, :ctx.lk] if slot in sums else None for slot in (1, 2))
        return grad_q, grad_k, grad_v, None, None, None


CPU_FLASH_OPS = ("_scaled_dot_product_flash_attention_for_cpu",
                 "_scaled_dot_product_flash_attention_for_cpu_backward")  # private ops: see _has_cpu_flash_ops


def _has_cpu_flash_ops(ops=None) -> bool:
    """Whether this torch has the CPU flash forward *and* backward ops, both taking ``attn_mask``. They are
    private (``torch.ops.aten``): pyproject allows torch >= 2.1, and the CPU kernel learned masks later.
    ``ops`` defaults to ``torch.ops.aten`` (the tests pass stand-ins)."""
    ops = torch.ops.aten if ops is None else ops
    try:
        return all("attn_mask" in str(getattr(ops, name).default._schema) for name in CPU_FLASH_OPS)
    except (AttributeError, RuntimeError):  # an op (or its default overload) missing: no direct path
        return False


_CPU_FLASH_OPS_OK = None  # ``_has_cpu_flash_ops()``, looked up once on first use


def _cpu_flash_ops_ok() -> bool:
    global _CPU_FLASH_OPS_OK
    if _CPU_FLASH_OPS_OK is None:
        _CPU_FLASH_OPS_OK = _has_cpu_flash_ops()
    return _CPU_FLASH_OPS_OK


def _use_cpu_flash(q: torch.Tensor, v: torch.Tensor) -> bool:
    """The CPU's flash kernel called directly (``_FlashChunksCPU``): only where SDPA itself would pick it
    (flash switched on, D = Dv) and where this torch has both private ops with masks
    (``_has_cpu_flash_ops``); elsewhere SDPA chooses its kernel, math fallback included."""
    return (q.device.type == "cpu" and torch.backends.cuda.flash_sdp_enabled() and q.size(-1) == v.size(-1)
            and q.dtype in SDPA_DTYPES and _cpu_flash_ops_ok())


def _blocked(q, k, v, window, causal, mask, scale, chunk=None):
    """Chunks of c queries against the whole chunks of keys around them, all chunks in one fused SDPA call
    with a 4-D boolean mask: O(Lq·(2R + 1)·c) time; the keys and values are overlapping views (``_windows``)
    of one padded copy, or on the CPU's direct path of the keys themselves, with padded copies only for the
    chunks at the ends (``_key_windows``). Without a ``mask``, the chunks away from the ends share one
    (c, span) band, so the memory is O(Lq·D); a ``mask`` adds O(Lq·span) bytes of chunk mask. See
    ``_chunk_layout``."""
    lq, lk = q.size(-2), k.size(-2)
    window = min(window, max(lq, lk))  # a wider window sees the same keys: keep the chunks small
    chunk = _chunk_size(lq, window, chunk)
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    i, j, band = _chunk_layout(lq, lk, window, chunk, causal, q.device)
    blocks, span = j.shape
    front = -(-(window - 1) // chunk) * chunk  # R·c padding rows before the first key
    direct = _use_cpu_flash(q, v)
    runs = [(0, blocks, False)]  # (first chunk, last + 1, whether its chunks share the band)
    if mask is None and direct:  # the middle chunks (all their keys exist) share the band: run them apart
        inside = ((j[:, 0] >= 0) & (j[:, -1] < lk)).nonzero()  # chunk indices, contiguous
        if len(inside):
            lo, hi = int(inside[0]), int(inside[-1]) + 1
            runs = [run for run in ((0, lo, False), (lo, hi, True), (hi, blocks, False)) if run[0] < run[1]]
    pieces, empties = [], []
    for start, stop, shared in runs:
        if shared:  # (1, 1, c, span): one band for all; every query sees itself, so no row is empty
            pieces.append((start, stop, band[None, None]))
            continue
        allowed = _allowed(i[start:stop], j[start:stop], band, lk)  # (n, c, span)
        if mask is not None:  # pick each chunk's piece of the mask: (..., n, c, span), never (Lq, Lk)
            full = mask[(None,) * max(0, 2 - mask.dim())]  # at least 2 dimensions
            full = full.expand(*full.shape[:-2], lq, lk)  # a view: no (Lq, Lk) memory
            rows = i[start:stop].clamp(max=lq - 1)[:, :, None]  # (n, c, 1); padded query rows: cut off below
            allowed = allowed & full[..., rows, j[start:stop].clamp(0, lk - 1)[:, None, :]]  # (..., n, c, span)
        # A row with no key would softmax to NaN (or uniform weights, depending on the SDPA kernel): let it
        # see its whole span instead, a finite dummy, and zero its context below. Its gradient is then 0.
        empty = ~allowed.any(-1, keepdim=True)  # (..., n, c, 1)
        allowed = allowed | empty
        if allowed.dim() > 3:  # a mask with batch dimensions: one (n, c, span) piece per batch entry
            allowed, empty = (x.expand(*lead, *x.shape[-3:]) for x in (allowed, empty))
        pieces.append((start, stop, allowed.reshape(-1, stop - start, chunk, span)))  # 4-D, broadcasts
        empties.append((start, stop, empty.reshape(-1, stop - start, chunk, 1)))

    def flat(x):  # (..., L, size) -> (B', L, size): a view unless x is broadcast
        return x.expand(*lead, *x.shape[-2:]).reshape(-1, *x.shape[-2:])

    q_chunks = flat(q)
    if blocks * chunk > lq:  # pad the last chunk (a copy); otherwise the chunks are a view
        q_chunks = nn.functional.pad(q_chunks, (0, 0, 0, blocks * chunk - lq))
    q_chunks = q_chunks.unflatten(-2, (blocks, chunk))  # (B', nb, c, D)
    if direct:
        context = _FlashChunksCPU.apply(q_chunks, flat(k), flat(v), pieces, front, scale)  # (B', nb, c, Dv)
    else:
        k_win, v_win = (_key_windows(flat(x), 0, blocks, chunk, span, front) for x in (k, v))  # padded copies
        context = nn.functional.scaled_dot_product_attention(q_chunks, k_win, v_win, attn_mask=pieces[0][2],
                                                             scale=scale)  # (B', nb, c, Dv)
    for start, stop, empty in empties:
        if empty.any():  # only then: masked_fill copies the context
            context = torch.cat([context[:, :start], context[:, start:stop].masked_fill(empty, 0.0),
                                 context[:, stop:]], dim=1)
    return context.reshape(*lead, blocks * chunk, v.size(-1))[..., :lq, :]  # (..., Lq, Dv)


FLEX_COMPILE = True  # compile FlexAttention on first use (tests switch this off: the compile takes seconds)
_flex_compiled = None


def _flex_module():
    try:
        from torch.nn.attention import flex_attention
    except ImportError:
        raise RuntimeError(f"impl='flex' needs FlexAttention (torch >= 2.5), not in torch {torch.__version__}: "
                           f"use impl='blocked'") from None
    return flex_attention


_flex_layouts = set()  # the input layouts the compiled flex_attention has seen (one compile each)
_flex_warned = False


def _recompile_limit() -> int:
    import torch._dynamo  # loaded by torch.compile anyway

    config = torch._dynamo.config
    return getattr(config, "recompile_limit", getattr(config, "cache_size_limit", 8))  # renamed in 2.6


def _flex_function(layout=None):
    """flex_attention, compiled once per process when ``FLEX_COMPILE`` (uncompiled it materialises the
    whole score matrix: right answers, no speed). ``dynamic=False`` compiles again for every new input
    layout (shapes, dtype, device: ``layout``); past dynamo's recompile limit (8 by default) torch runs the
    *uncompiled* flex_attention from then on, silently: warn once when the layouts seen pass the limit."""
    global _flex_compiled, _flex_warned
    flex_attention = _flex_module().flex_attention
    if not FLEX_COMPILE:
        return flex_attention
    if _flex_compiled is None:
        _flex_compiled = torch.compile(flex_attention, dynamic=False)
    _flex_layouts.add(layout)
    if not _flex_warned and len(_flex_layouts) > _recompile_limit():
        _flex_warned = True
        warnings.warn(f"impl='flex' has now been called with {len(_flex_layouts)} different shapes: past "
                      f"torch._dynamo's recompile limit ({_recompile_limit()}) the compiled FlexAttention "
                      f"falls back to the uncompiled one, which builds the whole (Lq, Lk) score matrix. Pad "
                      f"to a few fixed lengths, or raise torch._dynamo.config.recompile_limit",
                      RuntimeWarning, stacklevel=4)
    return _flex_compiled


def _window_mod(window: int, causal: bool, mask: torch.Tensor | None = None):
    """FlexAttention's mask_mod: True where query q_idx may attend key kv_idx (``masking.window_mask``),
    and where ``mask`` (4-D, (B or 1, H or 1, Lq, Lk), may be an expanded view) allows it."""
    def mask_mod(b, h, q_idx, kv_idx):
        offset = q_idx - kv_idx
        inside = (offset >= 0) & (offset < window) if causal else (offset < window) & (offset > -window)
        return inside if mask is None else inside & mask[b, h, q_idx, kv_idx]
    return mask_mod


@functools.lru_cache(maxsize=16)
def _window_block_mask(lq: int, lk: int, window: int, causal: bool, device: str):
    """The block mask of a plain sliding window, built once per layout (it costs O(Lq·Lk) to build)."""
    return _flex_module().create_block_mask(_window_mod(window, causal), None, None, lq, lk, device=device)


def _flex(q, k, v, window, causal, mask, scale):
    """FlexAttention (torch >= 2.5) with a sliding-window block mask: only the blocks that meet the band are
    computed. flex_attention wants (B, H, L, D): the leading dimensions become (B, H)."""
    lq, lk = q.size(-2), k.size(-2)
    window = min(window, max(lq, lk))
    flex = _flex_module()
    if q.device.type == "cpu" and torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        raise NotImplementedError(
            f"impl='flex' has no backward on the CPU in torch {torch.__version__} (FlexAttention's CPU "
            f"kernel is forward-only): use impl='blocked' for gradients, or call it under torch.no_grad()")
    if q.device.type == "cpu":  # flex_attention refuses inputs that require grad even under no_grad
        q, k, v = q.detach(), k.detach(), v.detach()
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    lead4 = (1,) * (2 - len(lead)) + tuple(lead) if len(lead) <= 2 else (math.prod(lead[:-1]), lead[-1])

    def four_d(x):  # (..., L, size) -> (B, H, L, size)
        return x.expand(*lead, *x.shape[-2:]).reshape(*lead4, *x.shape[-2:])

    batch = heads = None  # None: the block mask broadcasts over that dimension
    if mask is None:
        block_mask = _window_block_mask(lq, lk, window, causal, str(q.device))
    else:  # rebuilt every call, O(B·H·Lq·Lk): only over the dimensions where the mask really varies
        mask4 = four_d(mask[(None,) * max(0, 2 - mask.dim())].expand(*lead, lq, lk))  # (B, H, Lq, Lk) view
        batch, heads = (n if n > 1 and mask4.stride(d) else None for d, n in enumerate(lead4))
        block_mask = flex.create_block_mask(_window_mod(window, causal, mask4), batch, heads, lq, lk,
                                            device=q.device)
    q4, k4, v4 = four_d(q), four_d(k), four_d(v)
    layout = (q4.shape, k4.shape, v4.shape, q.dtype, str(q.device), mask is None, batch is None, heads is None)
    context = _flex_function(layout)(q4, k4, v4, block_mask=block_mask, scale=scale)
    return context.reshape(*lead, lq, v.size(-1))  # (..., Lq, Dv); a row with no key is 0 in flex


def _band_indices(lq: int, lk: int, window: int, causal: bool, device):
    """Indices of the blocked band. Queries are cut into blocks of w: block b holds i = b·w + a, a < w.
    Since |i - j| < w, its keys lie in j = b·w - (w - 1) + c with c < span: the previous block's tail,
    its own block and (unless causal) the next block's head. Returns i (nb, w), j (nb, span) and
    ``allowed`` (nb, w, span): inside the band and inside both sequences."""
    blocks = -(-lq // window)  # ceil(Lq / w)
    span = 2 * window - 1 if causal else 3 * window - 2
    start = torch.arange(blocks, device=device)[:, None] * window  # (nb, 1)
    i = start + torch.arange(window, device=device)  # (nb, w)
    j = start - (window - 1) + torch.arange(span, device=device)  # (nb, span)
    # Compare (nb, w, 1) bounds with (nb, 1, span) keys, as masking.window_mask does: only boolean
    # tensors of the band's size are built, never an int64 one of offsets i - j (8 bytes per entry).
    rows, keys = i[:, :, None], j[:, None, :]
    upper = keys <= rows if causal else keys < rows + window  # causal: j <= i
    allowed = (keys > rows - window) & upper & (keys >= 0) & (keys < lk) & (rows < lq)  # (nb, w, span)
    return i, j, allowed


def _banded(q, k, v, window, causal, mask, scale, return_weights):
    """Blocked band: scores (..., nb, w, span) instead of (..., Lq, Lk). See ``_band_indices``."""
    lq, lk = q.size(-2), k.size(-2)
    window = min(window, max(lq, lk))  # a wider window sees the same keys: keep the blocks small
    i, j, allowed = _band_indices(lq, lk, window, causal, q.device)
    blocks = i.size(0)
    j_safe = j.clamp(0, lk - 1)  # out-of-range keys are gathered from a real one, then masked out
    q_blocks = nn.functional.pad(q, (0, 0, 0, blocks * window - lq))  # (..., nb·w, D): pad the queries
    q_blocks = q_blocks.unflatten(-2, (blocks, window))  # (..., nb, w, D)
    k_band = k[..., j_safe, :]  # (..., nb, span, D): each block's neighbouring keys
    v_band = v[..., j_safe, :]  # (..., nb, span, Dv)
    if mask is not None:
        full = mask[(None,) * max(0, 2 - mask.dim())]  # at least 2 dimensions
        full = full.expand(*full.shape[:-2], lq, lk)  # a view: no (Lq, Lk) memory
        rows = i.clamp(max=lq - 1)[:, :, None]  # (nb, w, 1)
        allowed = allowed & full[..., rows, j_safe[:, None, :]]  # (..., nb, w, span)
    scores = q_blocks @ k_band.transpose(-2, -1) * scale  # (..., nb, w, D) @ (..., nb, D, span)
    weights = masked_softmax(scores, allowed)  # (..., nb, w, span)
    context = (weights @ v_band).flatten(-3, -2)[..., :lq, :]  # (..., nb, w, Dv) -> (..., Lq, Dv)
    if not return_weights:
        return context, None
    # Scatter the band back into a dense (Lq, Lk) matrix, only to look at it. Masked entries are exact
    # zeros, so adding them at the clamped indices changes nothing.
    index = j_safe[:, None, :].expand(weights.shape)
    dense = weights.new_zeros(*weights.shape[:-1], lk).scatter_add(-1, index, weights)
    return context, dense.flatten(-3, -2)[..., :lq, :]  # (..., Lq, Lk)
