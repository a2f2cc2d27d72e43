"""Exercises on masks: attention over a padded batch, causal attention, a local window, and the
numerically safe masked softmax itself.

The first three ask for attention *weights* (build the mask, then apply it with
``masking.masked_softmax``), so a wrong mask shows up where it matters: weight on keys that should get none.
"""

from __future__ import annotations

import torch

from .. import masking
from . import Case, Exercise, Mistake, register
from ._grader import randn


def _positions(scores):
    """Query indices i (Lq, 1) and key indices j (1, Lk) of scores (..., Lq, Lk), on their device."""
    lq, lk = scores.shape[-2:]
    i = torch.arange(lq, device=scores.device)[:, None]
    j = torch.arange(lk, device=scores.device)[None, :]
    return i, j


# How learners apply a (possibly wrong) mask. With the package's masked_softmax a row left with no key gets
# zeros; with their own fill it gets uniform weights (finfo.min, no zeroing) or NaN (-inf). A wrong mask is
# recognised whichever way it was applied.

def _softmax_zeros(scores, mask):
    return masking.masked_softmax(scores, mask)


def _softmax_uniform(scores, mask):
    return torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), dim=-1)


def _softmax_nan(scores, mask):
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)


def _after_softmax(scores, mask):
    return torch.softmax(scores, dim=-1) * mask


def _ignored(scores, *args):
    return torch.softmax(scores, dim=-1)


def _wrong_mask(make_mask, appliers=(_softmax_zeros, _softmax_uniform, _softmax_nan)):
    """Variants that apply the mask ``make_mask(*args)`` in each of the ways above."""
    def variant_for(apply):
        return lambda scores, *rest: apply(scores, make_mask(scores, *rest))
    return tuple(variant_for(apply) for apply in appliers)


AFTER_SOFTMAX_HINT = ("mask the scores *before* the softmax (fill the hidden ones with "
                      "torch.finfo(scores.dtype).min, or use masking.masked_softmax): zeroing weights "
                      "afterwards leaves rows that no longer sum to 1.")


# --- 1. attention over a padded batch ------------------------------------------------------------------

def padding_attention(scores: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Attention weights over a padded batch: sequence b has ``lengths[b]`` real keys, then padding.

    scores: (B, Lq, Lk), lengths: (B,) integers in [0, Lk] -> weights (B, Lq, Lk), a softmax over the real
    keys of each sequence and exactly 0 on its padding. Lk can exceed ``lengths.max()`` (every sequence of
    the batch padded), so the mask covers all Lk keys.
    """
    return masking.masked_softmax(scores, masking.padding_mask(lengths, scores.size(-1)))


def _padding_case(gen, label, b, lq, lk, dtype=torch.float32):
    lengths = torch.randint(2, lk, (b,), generator=gen)  # every sequence padded...
    if b > 1:
        lengths[int(torch.randint(b, (1,), generator=gen))] = lk  # ...but the longest one
    return Case(label, (randn(gen, b, lq, lk, dtype=dtype, scale=2.0), lengths))


def _padding_cases(gen):
    return [
        _padding_case(gen, "a padded batch (B=3, Lq=4, Lk=6)", 3, 4, 6),
        _padding_case(gen, "self-attention (B=2, Lq=Lk=5)", 2, 5, 5),
        _padding_case(gen, "batch of one (Lq=3, Lk=7)", 1, 3, 7),
        _padding_case(gen, "float64 (B=4, Lq=5, Lk=6)", 4, 5, 6, dtype=torch.float64),
        _padding_case(gen, "one query per sequence (B=3, Lq=1, Lk=8)", 3, 1, 8),
    ]


def _keys_before(shift):
    """Keys j < lengths + shift: shift 0 is right, +1 lets in the first PAD, -1 hides the last token."""
    def make(scores, lengths):
        _, j = _positions(scores)
        return (j < (lengths + shift)[:, None, None])  # (B, 1, Lk)
    return make


def _queries_masked(scores, lengths):
    i, _ = _positions(scores)
    return i < lengths[:, None, None]  # (B, Lq, 1): hides rows, not columns


def _up_to_longest(scores, lengths):
    """Keys 0 .. lengths.max() - 1 only: too short when every sequence is padded (Lk > lengths.max())."""
    return masking.padding_mask(lengths)  # (B, 1, lengths.max())


def _no_query_axis(scores, lengths):
    _, j = _positions(scores)
    return j < lengths[:, None]  # (B, Lk): broadcasts against (B, Lq, Lk) as (1, B, Lk)


PADDING_SHAPE_HINT = ("the mask must cover every key: Lk = scores.size(-1), which can exceed lengths.max(), "
                      "so use masking.padding_mask(lengths, max_len=scores.size(-1)) or "
                      "torch.arange(scores.size(-1)); and give a (B, Lk) mask its query axis with "
                      "[:, None, :].")


register(Exercise(
    id="padding-mask",
    title="Attention over a padded batch",
    reference=padding_attention,
    cases=_padding_cases,
    outputs=("weights",),
    error_hints=(("does not broadcast", PADDING_SHAPE_HINT),),
    mistakes=(
        Mistake("the padding mask is inverted: the queries attend to the padding only",
                "True means *may attend*: keep the keys j < lengths[b], i.e. "
                "positions[None, :] < lengths[:, None].",
                *_wrong_mask(lambda s, n: ~_keys_before(0)(s, n))),
        Mistake("the padding mask is one too long: the first PAD key is attended",
                "use a strict comparison, j < lengths[b]: a sequence of length 3 has real keys 0, 1, 2.",
                *_wrong_mask(_keys_before(1))),
        Mistake("the padding mask is one too short: the last real key is hidden",
                "a sequence of length n has real keys 0 .. n-1; keep j < n, not j < n - 1.",
                *_wrong_mask(_keys_before(-1))),
        Mistake("the padding was ignored", "build the mask from the lengths, positions[None, :] < "
                "lengths[:, None] with shape (B, 1, Lk), and apply it before the softmax.", _ignored),
        Mistake("the mask was applied after the softmax (not renormalised)", AFTER_SOFTMAX_HINT,
                lambda s, n: _after_softmax(s, _keys_before(0)(s, n))),
        Mistake("the padding mask hides queries instead of keys",
                "padding is a property of the keys: the mask must be (B, 1, Lk), one row broadcast to every "
                "query, so add the query axis in the middle: mask[:, None, :], not mask[:, :, None].",
                *_wrong_mask(_queries_masked)),
        Mistake("the padding mask stops at lengths.max() instead of covering all Lk keys",
                "Lk = scores.size(-1) can exceed lengths.max() (here every sequence is padded): build the "
                "mask over all the keys, masking.padding_mask(lengths, max_len=scores.size(-1)) or "
                "torch.arange(scores.size(-1)).", *_wrong_mask(_up_to_longest)),
        Mistake("the padding mask has no query axis: (B, Lk) instead of (B, 1, Lk)",
                "scores are (B, Lq, Lk), so a (B, Lk) mask lines up B with Lq; add the query axis: "
                "mask[:, None, :].", *_wrong_mask(_no_query_axis)),
    ),
))


# --- 2. causal attention -------------------------------------------------------------------------------

def causal_attention(scores: torch.Tensor) -> torch.Tensor:
    """Causal attention weights: query i may attend keys 0..i only (top-left aligned when Lq != Lk).

    scores: (..., Lq, Lk) -> weights (..., Lq, Lk), a softmax over each query's past and itself, exactly
    0 on its future.
    """
    lq, lk = scores.shape[-2:]
    return masking.masked_softmax(scores, masking.causal_mask(lq, lk, device=scores.device))


def _causal_cases(gen):
    return [
        Case("Lq=4 queries, Lk=6 keys (B=2)", (randn(gen, 2, 4, 6, scale=2.0),)),
        Case("self-attention (B=3, L=5)", (randn(gen, 3, 5, 5, scale=2.0),)),
        Case("with heads (B=2, H=3, L=4)", (randn(gen, 2, 3, 4, 4, scale=2.0),)),
        Case("float64 (B=1, L=6)", (randn(gen, 1, 6, 6, dtype=torch.float64, scale=2.0),)),
        Case("more queries than keys (Lq=5, Lk=3)", (randn(gen, 2, 5, 3, scale=2.0),)),
        Case("a single token (L=1)", (randn(gen, 2, 1, 1),)),
    ]


def _causal(relation):
    def make(scores):
        i, j = _positions(scores)
        return relation(i, j, scores.size(-1) - scores.size(-2))
    return make


register(Exercise(
    id="causal-mask",
    title="Causal attention",
    reference=causal_attention,
    cases=_causal_cases,
    outputs=("weights",),
    mistakes=(
        Mistake("the causal mask is transposed (upper triangle): each query sees the future, not the past",
                "query i may attend key j when j <= i: the lower triangle, torch.ones(Lq, Lk).tril(), "
                "not triu.", *_wrong_mask(_causal(lambda i, j, d: j >= i))),
        Mistake("the diagonal is excluded: a token may not attend to itself",
                "keep j <= i, not j < i: position i may use itself (and the first token has nothing else).",
                *_wrong_mask(_causal(lambda i, j, d: j < i))),
        Mistake("the causal mask is inverted: each query sees only its strict future",
                "True means *may attend*: keep j <= i, the past and the present. torch.ones(L, L).triu(1) "
                "is nn.MultiheadAttention's convention (True = masked, may NOT attend); here, as in SDPA, "
                "use its opposite, tril().", *_wrong_mask(_causal(lambda i, j, d: j > i))),
        Mistake("the causal mask was ignored",
                "build j <= i from torch.arange over the queries and over the keys, and apply it before "
                "the softmax.", _ignored),
        Mistake("the mask was applied after the softmax (not renormalised)", AFTER_SOFTMAX_HINT,
                lambda s: _after_softmax(s, _causal(lambda i, j, d: j <= i)(s))),
        Mistake("the causal mask is aligned bottom-right",
                "align it top-left, like masking.causal_mask and SDPA's is_causal=True: query i sees keys "
                "0..i whatever Lq and Lk are (bottom-right, j <= i + Lk - Lq, is for a query block at the "
                "end of a longer cache).", *_wrong_mask(_causal(lambda i, j, d: j <= i + d))),
    ),
))


# --- 3. a local window ---------------------------------------------------------------------------------

def window_attention(scores: torch.Tensor, window: int) -> torch.Tensor:
    """Local attention weights: query i may attend key j only if ``|i - j| < window``.

    scores: (..., Lq, Lk), window: int >= 1 (1 = only itself) -> weights (..., Lq, Lk), exactly 0 outside
    the window.
    """
    lq, lk = scores.shape[-2:]
    mask = masking.window_mask(lq, lk, window=window, device=scores.device)  # (Lq, Lk)
    return masking.masked_softmax(scores, mask)


def _window_cases(gen):
    return [
        Case("window 3, Lq=6 queries, Lk=8 keys (B=2)", (randn(gen, 2, 6, 8, scale=2.0), 3)),
        Case("window 2, self-attention (B=3, L=7)", (randn(gen, 3, 7, 7, scale=2.0), 2)),
        Case("window 1: only itself (B=2, L=4)", (randn(gen, 2, 4, 4, scale=2.0), 1)),
        Case("float64, window 4 (B=1, L=9)", (randn(gen, 1, 9, 9, dtype=torch.float64, scale=2.0), 4)),
        Case("with heads, window 3 (B=2, H=2, L=6)", (randn(gen, 2, 2, 6, 6, scale=2.0), 3)),
        Case("a window longer than the sequence (L=5, window 9)", (randn(gen, 2, 5, 5, scale=2.0), 9)),
    ]


def _window(relation):
    def make(scores, window):
        i, j = _positions(scores)
        return relation(i - j, window)
    return make


register(Exercise(
    id="window-mask",
    title="Local (sliding-window) attention",
    reference=window_attention,
    cases=_window_cases,
    outputs=("weights",),
    mistakes=(
        Mistake("the window is one too wide (|i - j| <= window)",
                "use a strict comparison, |i - j| < window: window=1 means a query sees only itself.",
                *_wrong_mask(_window(lambda d, w: d.abs() <= w))),
        Mistake("the window counts all the keys a query sees, not the positions on each side",
                "here window is the reach on each side, itself included: keep |i - j| < window (up to "
                "2·window - 1 keys), not |i - j| <= window // 2.",
                *_wrong_mask(_window(lambda d, w: d.abs() <= w // 2))),
        Mistake("the window looks at the past only (a causal window)",
                "this window is two-sided: keep keys on both sides, |i - j| < window, "
                "not 0 <= i - j < window.",
                *_wrong_mask(_window(lambda d, w: (d >= 0) & (d < w)))),
        Mistake("the window has no right edge: i - j < window without the absolute value",
                "i - j is negative for every key after i, so (i - j) < window lets in the whole future; "
                "take the distance: (i - j).abs() < window.", *_wrong_mask(_window(lambda d, w: d < w))),
        Mistake("the window mask is inverted: each query sees only the keys outside its window",
                "True means *may attend*: keep |i - j| < window.",
                *_wrong_mask(_window(lambda d, w: d.abs() >= w))),
        Mistake("the window was ignored",
                "build |i - j| < window from torch.arange over the queries and the keys, and apply it before "
                "the softmax.", _ignored),
        Mistake("the mask was applied after the softmax (not renormalised)", AFTER_SOFTMAX_HINT,
                lambda s, w: _after_softmax(s, _window(lambda d, w: d.abs() < w)(s, w))),
    ),
))


# --- 4. the masked softmax -----------------------------------------------------------------------------

def _random_mask(gen, *shape):
    """Random mask with at least one allowed and one hidden key in every row (no row fully masked)."""
    mask = torch.rand(*shape, generator=gen) < 0.5
    lk = shape[-1]
    allowed = torch.randint(lk, (*shape[:-1], 1), generator=gen)
    hidden = (allowed + torch.randint(1, lk, (*shape[:-1], 1), generator=gen)) % lk
    return mask.scatter(-1, allowed, True).scatter(-1, hidden, False)


def _with_empty_rows(mask, *rows):
    mask = mask.clone()
    for row in rows:
        mask[row] = False  # this query may attend to nothing
    return mask


def _masked_softmax_cases(gen):
    lengths = torch.tensor([3, 5]) - torch.randint(0, 2, (2,), generator=gen)  # every sequence padded
    return [
        Case("random scores and mask (B=2, Lq=3, Lk=5)",
             (randn(gen, 2, 3, 5, scale=2.0), _random_mask(gen, 2, 3, 5))),
        Case("a padding mask (B, 1, Lk) for scores (B, Lq, Lk)",
             (randn(gen, 2, 4, 6, scale=2.0), masking.padding_mask(lengths, 6))),
        Case("a causal mask (L, L) for scores (B, H, L, L)",
             (randn(gen, 2, 3, 4, 4, scale=2.0), masking.causal_mask(4))),
        Case("float64", (randn(gen, 3, 4, 5, dtype=torch.float64), _random_mask(gen, 3, 4, 5))),
        Case("a fully-masked row (float32)",
             (randn(gen, 2, 4, 5, scale=2.0), _with_empty_rows(_random_mask(gen, 2, 4, 5), (0, 2)))),
        Case("float16 with a fully-masked row",
             (randn(gen, 2, 3, 6, dtype=torch.float16, scale=2.0),
              _with_empty_rows(_random_mask(gen, 2, 3, 6), (1, 0)))),
        Case("float16, large scores (about ±100)",
             (randn(gen, 2, 3, 6, dtype=torch.float16, scale=100.0), _random_mask(gen, 2, 3, 6))),
        Case("very negative scores (about -100000)",
             (randn(gen, 2, 3, 5, scale=100.0) - 1e5, _random_mask(gen, 2, 3, 5))),
    ]


def _minus_1e9(scores, mask):
    # -1e9 does not exist in float16: torch.tensor(-1e9, dtype=torch.float16) is -inf
    return torch.softmax(torch.where(mask, scores, torch.tensor(-1e9, dtype=scores.dtype)), dim=-1)


def _filled_beyond_float16(fill, zero_after):
    """masked_fill with a fill float16 cannot hold (-1e9, float32's finfo.min): torch refuses it there."""
    def variant(scores, mask):
        weights = torch.softmax(scores.masked_fill(~mask, fill), dim=-1)
        return weights.masked_fill(~mask, 0.0) if zero_after else weights
    return variant


def _added_finfo_min(zero_after):
    """The additive form with the right dtype's finfo.min: (~mask) * finfo.min is float32 (bool times a
    Python number), where float64's finfo.min is -inf, and 0 * -inf = NaN on every allowed key."""
    def variant(scores, mask):
        weights = torch.softmax(scores + (~mask) * torch.finfo(scores.dtype).min, dim=-1)
        return weights.masked_fill(~mask, 0.0) if zero_after else weights
    return variant


def _minus_1e9_added(scores, mask):
    # the additive form: (~mask) * -1e9 is float32, so the result silently leaves float16
    return torch.softmax(scores + (~mask) * -1e9, dim=-1)


def _renormalised_after(scores, mask):
    kept = torch.softmax(scores, dim=-1) * mask
    return kept / kept.sum(dim=-1, keepdim=True)  # 0/0 on a row with nothing left


def _fixed_fill(fill, zero_after):
    """A fixed fill value such as -1e4 (BERT's -10000), with or without zeroing the masked keys after."""
    def variant(scores, mask):
        weights = torch.softmax(scores.masked_fill(~mask, fill), dim=-1)
        return weights.masked_fill(~mask, 0.0) if zero_after else weights
    return variant


ZERO_ROWS = "set the weights of masked keys to 0 after the softmax (weights.masked_fill(~mask, 0))"
FLOAT16_FILL_HINT = ("float16 ends at -65504: fill with torch.finfo(scores.dtype).min, the scores' own "
                     "dtype, not -1e9 nor torch.finfo(torch.float32).min")

register(Exercise(
    id="masked-softmax",
    title="The masked softmax",
    reference=masking.masked_softmax,
    cases=_masked_softmax_cases,
    outputs=("weights",),
    rtol=2e-3,  # float16 cases: a correct softmax computed another way differs in the last bits
    atol=1e-3,
    error_hints=(("without overflow", FLOAT16_FILL_HINT + "."),),
    mistakes=(
        Mistake("the mask is inverted", "True means *may attend*: fill the scores where the mask is False "
                "(scores.masked_fill(~mask, ...)), not where it is True.",
                *_wrong_mask(lambda s, m: ~m)),
        Mistake("the mask was ignored", "fill the scores of masked keys with a very negative number before "
                "the softmax.", _ignored),
        Mistake("the mask was applied after the softmax (not renormalised)", AFTER_SOFTMAX_HINT,
                _after_softmax),
        Mistake("masked scores were set to 0 instead of a very negative number",
                "a score of 0 still gets weight exp(0) = 1 before normalising; fill with "
                "torch.finfo(scores.dtype).min so that exp gives exactly 0.",
                lambda s, m: torch.softmax(s.masked_fill(~m, 0.0), dim=-1),
                lambda s, m: torch.softmax(s * m, dim=-1)),
        Mistake("a fully-masked row gives NaN",
                "the softmax of a row that is all -inf is 0/0 = NaN (so is renormalising a row with nothing "
                "left), and NaN spreads to everything it touches. Either keep the -inf fill and "
                f"{ZERO_ROWS}, which replaces the NaN (multiplying by the mask does not: NaN * 0 is NaN), or "
                "fill with torch.finfo(scores.dtype).min, which keeps every value finite, and zero them the "
                "same way.",
                _softmax_nan, _renormalised_after,
                lambda s, m: _softmax_nan(s, m) * m),
        Mistake("the fill value does not exist in float16 (-1e9, or float32's finfo.min)",
                f"{FLOAT16_FILL_HINT}. In float16 masked_fill refuses such a fill, torch.where turns it "
                "into -inf (NaN on a fully-masked row), and adding (~mask) * -1e9 makes the result float32. "
                f"Then {ZERO_ROWS}.",
                _minus_1e9, _minus_1e9_added,
                *(_filled_beyond_float16(fill, zero_after)
                  for fill in (-1e9, torch.finfo(torch.float32).min) for zero_after in (True, False))),
        Mistake("the additive mask (~mask) * finfo.min is float32: float64 scores become NaN",
                "a bool tensor times a Python number is float32, where float64's finfo.min is -inf, and "
                "0 * -inf = NaN on every allowed key. Replace the masked scores instead of adding to them: "
                "scores.masked_fill(~mask, torch.finfo(scores.dtype).min).",
                _added_finfo_min(True), _added_finfo_min(False)),
        Mistake("the fill value is not negative enough: masked keys outscore very negative real ones",
                "a fixed fill such as -1e4 must lie below every real score, and scores can be lower than "
                "that; torch.finfo(scores.dtype).min is below them all.",
                *(_fixed_fill(fill, zero_after) for fill in (-1e4, -6e4) for zero_after in (True, False))),
        Mistake("a fully-masked row is not zeroed: it gets uniform weights over keys it may not see",
                f"a row with nothing to attend to must give zeros: {ZERO_ROWS}.", _softmax_uniform),
    ),
))
