"""Exercises on attention at scale (chapter 11): the online softmax that FlashAttention is built on, one tile
at a time and as the merge of two partial results, and the scaling exponent fitted to measured times.

The online softmax (Milakov & Gimelshein 2018; Dao et al. 2022, Algorithm 1) keeps, for each query row, three
running quantities over the keys seen so far: the largest score ``m``, the sum ``ell`` of exp(score - m), and the
accumulator ``acc``, the sum of exp(score - m) times the value. Softmax-weighted output = acc / ell, at the end.
The references live here: they are small formulas used only by these exercises and chapter 11.
Shapes: Lq queries, Bk keys in one tile, Dv value size; leading dimensions (B, H, ...) broadcast.
"""

from __future__ import annotations

import math

import torch

from .. import _checks
from . import Case, Exercise, Mistake, register
from ._grader import randn

# --- 1. one tile of the online softmax ---------------------------------------------------------------


def online_softmax_step(m: torch.Tensor, ell: torch.Tensor, acc: torch.Tensor, scores: torch.Tensor,
                        values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold one tile of keys into the running state of the online softmax (Milakov & Gimelshein 2018,
    Algorithm 3; Dao et al. 2022, Algorithm 1, lines 9-13, without the division by ell, done once at the end).

    m: (..., Lq) the largest score seen so far (-inf before the first tile); ell: (..., Lq) the sum of
    exp(score - m) so far (0 before the first tile); acc: (..., Lq, Dv) the sum of exp(score - m) · value so
    far (0 before the first tile); scores: (..., Lq, Bk) this tile's scores (finite); values: (..., Bk, Dv).

        m_new   = max(m, max_j scores_j)
        p_j     = exp(scores_j - m_new)
        ell_new   = exp(m - m_new) · ell + Σ_j p_j
        acc_new = exp(m - m_new) · acc + Σ_j p_j · values_j

    exp(m - m_new) <= 1 rescales what was summed relative to the old maximum to the new one. Returns
    (m_new, ell_new, acc_new), shaped like (m, ell, acc), in the inputs' dtype.
    """
    for name, x in (("m", m), ("ell", ell), ("acc", acc), ("scores", scores), ("values", values)):
        _checks.tensor(name, x)
    m_new = torch.maximum(m, scores.amax(dim=-1))  # (..., Lq)
    p = torch.exp(scores - m_new[..., None])  # (..., Lq, Bk)
    alpha = torch.exp(m - m_new)  # (..., Lq): 0 on the first tile, where m = -inf
    ell_new = alpha * ell + p.sum(dim=-1)
    acc_new = alpha[..., None] * acc + p @ values  # (..., Lq, Bk) @ (..., Bk, Dv) -> (..., Lq, Dv)
    return m_new, ell_new, acc_new


def _state(gen, lead, lq, dv, dtype, shift=0.0):
    """A running state as if some earlier keys had been seen: m around 1 (some rows above this tile's
    maximum, some below), ell >= 1 and acc of a plausible size."""
    m = randn(gen, *lead, lq, dtype=dtype) + 1.0 + shift
    ell = 1.0 + 3.0 * torch.rand(*lead, lq, generator=gen, dtype=torch.float64).to(dtype)
    acc = randn(gen, *lead, lq, dv, dtype=dtype, scale=2.0)
    return m, ell, acc


def _step_case(gen, label, lead, lq, bk, dv, dtype=torch.float32, first=False, shift=0.0, state_shift=0.0):
    m, ell, acc = _state(gen, lead, lq, dv, dtype, state_shift)
    if first:
        m, ell, acc = torch.full_like(m, -math.inf), torch.zeros_like(ell), torch.zeros_like(acc)
    scores = randn(gen, *lead, lq, bk, dtype=dtype) + shift
    values = randn(gen, *lead, bk, dv, dtype=dtype)
    return Case(label, (m, ell, acc, scores, values))


def _step_cases(gen):
    return [
        _step_case(gen, "a running state, 5 queries, a tile of 4 keys, Dv = 3", (2,), 5, 4, 3),
        _step_case(gen, "the first tile (m = -inf, ell = 0, acc = 0)", (1,), 4, 6, 2, first=True),
        _step_case(gen, "float64", (2,), 3, 5, 4, dtype=torch.float64),
        _step_case(gen, "a tile of one key", (1,), 6, 1, 3),
        _step_case(gen, "heads: leading shape (2, 3), one query", (2, 3), 1, 4, 2),
        _step_case(gen, "scores far above the old maximum (+12)", (1,), 5, 4, 3, shift=12.0),
        _step_case(gen, "large scores and maximum, around +100 (exp overflows float32 past 88)", (1,), 4, 5, 3,
                   shift=100.0, state_shift=100.0),
    ]


def _step(rescale_l=True, rescale_acc=True, sign=1.0, running_max=True, tile_max_p=False, divide=False):
    def variant(m, ell, acc, scores, values):
        tile = scores.amax(dim=-1)
        m_new = torch.maximum(m, tile) if running_max else tile
        p = torch.exp(scores - (tile if tile_max_p else m_new)[..., None])
        alpha = torch.exp(sign * (m - m_new))
        ell_new = (alpha * ell if rescale_l else ell) + p.sum(dim=-1)
        acc_new = (alpha[..., None] * acc if rescale_acc else acc) + p @ values
        if divide:
            acc_new = acc_new / ell_new[..., None]
        return m_new, ell_new, acc_new
    return variant


def _step_unshifted_p(m, ell, acc, scores, values):
    m_new = torch.maximum(m, scores.amax(dim=-1))
    p = torch.exp(scores) / torch.exp(m_new)[..., None]  # inf / inf = NaN once a score passes ~88
    alpha = torch.exp(m - m_new)
    return m_new, alpha * ell + p.sum(dim=-1), alpha[..., None] * acc + p @ values


def _step_unshifted_alpha(m, ell, acc, scores, values):
    m_new = torch.maximum(m, scores.amax(dim=-1))
    p = torch.exp(scores - m_new[..., None])
    alpha = torch.exp(m) / torch.exp(m_new)
    return m_new, alpha * ell + p.sum(dim=-1), alpha[..., None] * acc + p @ values


OVERFLOW = "exp of the raw scores/maxima overflows: subtract the maximum before exp"
OVERFLOW_HINT = ("exp(s) / exp(m) equals exp(s - m) on paper, but in float32 exp overflows to inf past about 88 "
                 "(inf / inf = NaN): take the difference first, exp(s - m_new) and exp(m - m_new), whose "
                 "exponents are <= 0. That is the whole point of carrying the maximum.")

RESCALE_HINT = ("ell and acc were summed relative to the old maximum m; relative to m_new every old term "
                "exp(s - m) becomes exp(s - m_new) = exp(m - m_new) · exp(s - m): multiply both ell and acc by "
                "alpha = exp(m - m_new) before adding this tile's terms.")

register(Exercise(
    id="online-softmax-step",
    title="One tile of the online softmax",
    reference=online_softmax_step,
    cases=_step_cases,
    outputs=("m", "ell", "acc"),
    diagnose_first="m",
    mistakes=(
        Mistake("the old sum and accumulator were not rescaled to the new maximum", RESCALE_HINT,
                _step(rescale_l=False, rescale_acc=False)),
        Mistake("ell was rescaled but the accumulator was not",
                "the accumulator holds the same exp(s - m) factors as ell, so it needs the same correction: "
                "acc_new = alpha · acc + p @ values, with alpha = exp(m - m_new) of shape (..., Lq, 1).",
                _step(rescale_acc=False)),
        Mistake("the accumulator was rescaled but ell was not",
                "ell holds the same exp(s - m) terms as the accumulator: ell_new = alpha · ell + p.sum(-1), with "
                "alpha = exp(m - m_new).",
                _step(rescale_l=False)),
        Mistake("the rescaling factor has the wrong sign: exp(m_new - m)",
                "m_new >= m, so the factor exp(m - m_new) is at most 1: old terms shrink when a larger score "
                "arrives. exp(m_new - m) grows them (and is inf on the first tile, where m = -inf).",
                _step(sign=-1.0)),
        Mistake("the new maximum forgot the old one (this tile's max only)",
                "m_new = torch.maximum(m, scores.amax(-1)): the maximum of every score seen so far, so that "
                "no exp(s - m_new) can overflow, whichever tile held the largest score.",
                _step(running_max=False)),
        Mistake("p was taken relative to the tile's own maximum, not to m_new",
                "every term of ell and acc must be relative to the same number, m_new: p = exp(scores - m_new), "
                "where m_new also counts the old maximum.",
                _step(tile_max_p=True)),
        Mistake("the accumulator was divided by ell (that happens once, at the end)",
                "keep acc un-normalised while the tiles stream in: the output is acc / ell after the last "
                "tile. Dividing at every step mixes normalised and un-normalised terms.",
                _step(divide=True)),
        Mistake(OVERFLOW, OVERFLOW_HINT, _step_unshifted_p, _step_unshifted_alpha),
    ),
))


# --- 2. merging two partial results ------------------------------------------------------------------


def merge_softmax_partials(m1: torch.Tensor, ell1: torch.Tensor, acc1: torch.Tensor, m2: torch.Tensor,
                           ell2: torch.Tensor, acc2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Combine the online-softmax states of two disjoint sets of keys into the state of their union, as
    split-key ("Flash-Decoding") kernels do after computing the parts in parallel (Milakov & Gimelshein
    2018, sec. 3; Dao et al. 2022, Algorithm 1, lines 11-12, with two whole parts).

    m1, ell1: (..., Lq); acc1: (..., Lq, Dv) the first part's maximum, sum and un-normalised accumulator; m2,
    ell2, acc2 the second's (a part with no keys is m = -inf, ell = 0, acc = 0; at most one part may be empty).

        m   = max(m1, m2)
        ell   = exp(m1 - m) · ell1 + exp(m2 - m) · ell2
        acc = exp(m1 - m) · acc1 + exp(m2 - m) · acc2

    Returns (m, ell, acc) shaped like (m1, ell1, acc1); acc / ell is the softmax-weighted output over all keys.
    """
    for name, x in (("m1", m1), ("ell1", ell1), ("acc1", acc1), ("m2", m2), ("ell2", ell2), ("acc2", acc2)):
        _checks.tensor(name, x)
    m = torch.maximum(m1, m2)
    a1, a2 = torch.exp(m1 - m), torch.exp(m2 - m)  # (..., Lq), each <= 1, one of them exactly 1
    return m, a1 * ell1 + a2 * ell2, a1[..., None] * acc1 + a2[..., None] * acc2


def _partial(gen, lead, lq, lk, dv, dtype, shift=0.0):
    """The state of a real set of keys: scores (..., Lq, Lk) and values (..., Lk, Dv)."""
    scores = randn(gen, *lead, lq, lk, dtype=dtype, scale=1.5) + shift
    values = randn(gen, *lead, lk, dv, dtype=dtype)
    m = scores.amax(dim=-1)
    p = torch.exp(scores - m[..., None])
    return m, p.sum(dim=-1), p @ values


def _merge_case(gen, label, lead, lq, lk1, lk2, dv, dtype=torch.float32, shift=0.0, empty=False, shift1=0.0):
    first = _partial(gen, lead, lq, lk1, dv, dtype, shift1)
    second = _partial(gen, lead, lq, lk2, dv, dtype, shift)
    if empty:
        m, ell, acc = second
        second = (torch.full_like(m, -math.inf), torch.zeros_like(ell), torch.zeros_like(acc))
    return Case(label, (*first, *second))


def _merge_cases(gen):
    return [
        _merge_case(gen, "two parts of 6 and 5 keys, 4 queries, Dv = 3", (2,), 4, 6, 5, 3),
        _merge_case(gen, "float64", (1,), 5, 3, 7, 2, dtype=torch.float64),
        _merge_case(gen, "the second part's scores far higher (+10)", (1,), 3, 4, 4, 2, shift=10.0),
        _merge_case(gen, "parts of one key each", (3,), 2, 1, 1, 4),
        _merge_case(gen, "heads: leading shape (2, 2)", (2, 2), 3, 5, 2, 3),
        _merge_case(gen, "the second part is empty (m = -inf, ell = 0)", (1,), 4, 5, 3, 2, empty=True),
        _merge_case(gen, "both parts' scores around +100 (exp overflows float32 past 88)", (1,), 3, 4, 5, 2,
                    shift=101.0, shift1=100.0),
    ]


def _merge(rescale_l=True, rescale_acc=True, sign=1.0, pick=torch.maximum, unshifted=False, divide=False):
    def variant(m1, ell1, acc1, m2, ell2, acc2):
        m = pick(m1, m2)
        if unshifted:  # inf / inf = NaN once a maximum passes ~88
            a1, a2 = torch.exp(m1) / torch.exp(m), torch.exp(m2) / torch.exp(m)
        else:
            a1, a2 = torch.exp(sign * (m1 - m)), torch.exp(sign * (m2 - m))
        ell = a1 * ell1 + a2 * ell2 if rescale_l else ell1 + ell2
        acc = a1[..., None] * acc1 + a2[..., None] * acc2 if rescale_acc else acc1 + acc2
        if divide:
            acc = acc / ell[..., None]
        return m, ell, acc
    return variant


register(Exercise(
    id="merge-softmax-partials",
    title="Merging two partial softmax results",
    reference=merge_softmax_partials,
    cases=_merge_cases,
    outputs=("m", "ell", "acc"),
    diagnose_first="m",
    mistakes=(
        Mistake("the parts were added without rescaling",
                "each part's ell and acc are relative to its own maximum; bring both to the common "
                "m = max(m1, m2): multiply part i by exp(m_i - m) before adding.",
                _merge(rescale_l=False, rescale_acc=False)),
        Mistake("only one of ell and acc was rescaled",
                "ell and acc hold the same exp(s - m_i) factors: rescale both by exp(m_i - m).",
                _merge(rescale_acc=False), _merge(rescale_l=False)),
        Mistake("the rescaling factors have the wrong sign: exp(m - m_i)",
                "m >= m_i, so the factor exp(m_i - m) is at most 1 (and exactly 1 for the part that holds "
                "the maximum); exp(m - m_i) grows the smaller part instead.",
                _merge(sign=-1.0)),
        Mistake("m is not the larger of the two maxima",
                "any common reference point gives the same acc / ell, but the convention (and overflow "
                "safety: no factor above 1) is m = torch.maximum(m1, m2).",
                _merge(pick=torch.minimum), _merge(pick=lambda m1, m2: m1)),
        Mistake("the accumulator was divided by ell (that happens once, at the end)",
                "return the merged state un-normalised, like its parts, so that it can be merged again or "
                "extended by more tiles: the output is acc / ell, taken once by whoever reads it.",
                _merge(divide=True)),
        Mistake(OVERFLOW, OVERFLOW_HINT, _merge(unshifted=True)),
    ),
))


# --- 3. a scaling exponent from measurements ---------------------------------------------------------


def scaling_exponent(sizes: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit times ≈ coefficient · sizes^exponent by least squares on a log-log scale: the straight line
    log t = exponent · log n + log(coefficient). The slope is the same in any base of logarithm; the
    coefficient comes back with the base used for the fit (exp for the natural log).

    sizes: (K,) positive sizes n (K >= 2, not all equal); times: (..., K) positive measurements, one curve
    per leading index. Returns (exponent, coefficient), each of shape (...,), in times' dtype.
    """
    _checks.tensor("sizes", sizes, ndim=1)
    _checks.tensor("times", times)
    x = sizes.to(times.dtype).log()  # (K,)
    y = times.log()  # (..., K)
    dx = x - x.mean()
    dy = y - y.mean(dim=-1, keepdim=True)
    exponent = (dx * dy).sum(dim=-1) / (dx * dx).sum()  # (...,)
    intercept = y.mean(dim=-1) - exponent * x.mean()
    return exponent, intercept.exp()


def _fit_case(gen, label, k, powers, coefficients, noise=0.08, dtype=torch.float32, ratio=2.0):
    base = float(torch.randint(16, 100, (1,), generator=gen))
    sizes = (base * ratio ** torch.arange(k, dtype=torch.float64)).round()
    powers = torch.tensor(powers, dtype=torch.float64)[..., None]
    coefficients = torch.tensor(coefficients, dtype=torch.float64)[..., None]
    wobble = torch.exp(noise * torch.randn(*powers.shape[:-1], k, generator=gen, dtype=torch.float64))
    times = coefficients * sizes**powers * wobble
    return Case(label, (sizes.to(dtype), times.to(dtype)))


def _fit_cases(gen):
    return [
        _fit_case(gen, "one curve, 6 sizes doubling, t ∝ n² (noisy)", 6, 2.0, 1e-3),
        _fit_case(gen, "three curves at once, (3, 5)", 5, [1.0, 2.0, 1.3], [0.5, 2e-4, 0.05]),
        _fit_case(gen, "float64, t ∝ n^1.5", 7, 1.5, 3e-2, dtype=torch.float64),
        _fit_case(gen, "only two sizes", 2, 2.0, 1e-2),
        _fit_case(gen, "sizes growing by 1.5x, t ∝ n", 8, 1.0, 0.2, ratio=1.5),
        _fit_case(gen, "a curve with no noise, t = 4 n²", 4, 2.0, 4.0, noise=0.0),
    ]


def _line(x, y):
    """Least squares y ≈ slope · x + intercept along the last axis (x broadcast against y)."""
    x = x.expand_as(y)
    dx, dy = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
    slope = (dx * dy).sum(-1) / (dx * dx).sum(-1)
    return slope, y.mean(-1) - slope * x.mean(-1)


def _linear_axes(sizes, times):
    return _line(sizes.to(times.dtype), times)


def _semilog(sizes, times):
    slope, intercept = _line(sizes.to(times.dtype), times.log())
    return slope, intercept.exp()


def _swapped(sizes, times):
    slope, intercept = _line(times.log(), sizes.to(times.dtype).log().expand_as(times))
    return slope, intercept.exp()


def _log_coefficient(sizes, times):
    exponent, coefficient = scaling_exponent(sizes, times)
    return exponent, coefficient.log()


def _log10_then_exp(sizes, times):
    slope, intercept = _line(sizes.to(times.dtype).log10(), times.log10())
    return slope, intercept.exp()


def _ln_then_pow10(sizes, times):
    exponent, coefficient = scaling_exponent(sizes, times)
    return exponent, 10 ** coefficient.log()


def _two_points(sizes, times):
    n = sizes.to(times.dtype)
    exponent = (times[..., -1] / times[..., 0]).log() / (n[-1] / n[0]).log()
    return exponent, times[..., 0] / n[0] ** exponent


register(Exercise(
    id="scaling-exponent",
    title="A scaling exponent from measured times",
    reference=scaling_exponent,
    cases=_fit_cases,
    outputs=("exponent", "coefficient"),
    diagnose_first="exponent",
    rtol=1e-3,
    atol=1e-9,
    mistakes=(
        Mistake("time was fitted against n on linear axes",
                "a power law t = c · n^p is a straight line only on log-log axes: fit log t against "
                "log n; the slope is p and exp(intercept) is c.",
                _linear_axes),
        Mistake("only the time was put on a log scale (a semi-log fit)",
                "log t against n fits an exponential, t = c · e^(a n); take the logarithm of the sizes "
                "too.",
                _semilog),
        Mistake("the axes are swapped: log n was fitted against log t",
                "regress the measured quantity on the one you chose: y = log t, x = log n. The swapped "
                "least-squares slope is not 1 / p when the measurements are noisy.",
                _swapped),
        Mistake("the coefficient was returned as a logarithm",
                "the intercept of the fit is log c: return c = exp(intercept).",
                _log_coefficient),
        Mistake("the logarithm's base does not match on the way back",
                "the slope is the same in any base, but the intercept is log_b c: undo it with the same "
                "base, 10 ** intercept after log10, torch.exp(intercept) after the natural log.",
                _log10_then_exp, _ln_then_pow10),
        Mistake("the exponent came from the first and last points only",
                "two points give a slope, but a noisy one; use every measurement: least squares, "
                "slope = Σ (x - x̄)(y - ȳ) / Σ (x - x̄)² with x = log n, y = log t.",
                _two_points),
    ),
))
