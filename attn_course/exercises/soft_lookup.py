"""Exercises on attention as a soft lookup: softmax with a temperature, the soft lookup itself, and
attention pooling (Nadaraya-Watson kernel regression)."""

from __future__ import annotations

import math

import torch

from .. import attention, pooling
from . import Case, Exercise, Mistake, register
from ._grader import randn

# --- 1. softmax with a temperature -------------------------------------------------------------------

def _softmax_cases(gen):
    return [
        Case("random scores", (randn(gen, 3, 5, scale=2.0), 0.5)),
        Case("a batch of rows (2, 4, 6)", (randn(gen, 2, 4, 6, scale=2.0), 2.0)),
        Case("one row", (randn(gen, 1, 7), 1.0)),
        Case("float64", (randn(gen, 4, 3, dtype=torch.float64), 0.3)),
        Case("large scores (about 1000)", (1000.0 + randn(gen, 3, 4, scale=5.0), 1.0)),
        Case("high temperature", (randn(gen, 3, 5, scale=3.0), 25.0)),
        Case("low temperature, widely spread scores", (randn(gen, 3, 6, scale=3.0), 0.05)),
        # Rows so far apart (after dividing by T) that exp of one row underflows relative to another:
        # only a per-row maximum keeps every row finite. float64, so rounding cannot decide the verdict.
        Case("low temperature, rows far apart",
             (randn(gen, 3, 6, dtype=torch.float64, scale=3.0)
              + torch.tensor([[0.0], [-40.0], [-80.0]], dtype=torch.float64), 0.05)),
    ]


def _global_max_softmax(z):
    e = torch.exp(z - z.max())
    return e / e.sum(dim=-1, keepdim=True)


def _unstable_softmax(s, t):
    e = torch.exp(s / t)
    return e / e.sum(dim=-1, keepdim=True)


register(Exercise(
    id="softmax-temperature",
    title="Softmax with a temperature",
    reference=attention.softmax,
    cases=_softmax_cases,
    outputs=("weights",),
    mistakes=(
        Mistake("the scores were multiplied by the temperature",
                "divide by it: softmax(scores / T). A high temperature should flatten the weights.",
                lambda s, t: torch.softmax(s * t, dim=-1)),
        Mistake("the temperature was ignored", "use it: softmax(scores / T), not softmax(scores).",
                lambda s, t: torch.softmax(s, dim=-1)),
        Mistake("the softmax ran over the wrong axis",
                "normalise over the last axis (dim=-1): each row of scores becomes one set of weights.",
                lambda s, t: torch.softmax(s / t, dim=0), lambda s, t: torch.softmax(s / t, dim=-2)),
        Mistake("the weights are not normalised",
                "divide exp(scores / T) by its sum over the last axis so that each row sums to 1.",
                lambda s, t: torch.exp(s / t)),
        Mistake("the weights were normalised over the whole tensor, not each row",
                "divide by the sum over the last axis only: e.sum(dim=-1, keepdim=True).",
                lambda s, t: torch.exp(s / t) / torch.exp(s / t).sum()),
        Mistake("the maximum of the whole tensor was subtracted, not each row's",
                "a row whose scores are all far below the global maximum underflows to 0/0; subtract "
                "z.max(dim=-1, keepdim=True).values instead.",
                lambda s, t: _global_max_softmax(s / t)),
        Mistake("exp overflowed on large scores (NaN)",
                "subtract each row's maximum before exp (softmax does not change), or use torch.softmax.",
                _unstable_softmax),
    ),
))


# --- 2. the soft lookup ------------------------------------------------------------------------------

def _lookup_case(gen, label, b, lq, lk, d, dv, t, dtype=torch.float32):
    return Case(label, (randn(gen, b, lq, d, dtype=dtype), randn(gen, b, lk, d, dtype=dtype),
                        randn(gen, b, lk, dv, dtype=dtype), t))


def _lookup_cases(gen):
    return [
        _lookup_case(gen, "random (B=2, Lq=3, Lk=5, D=Dv=4)", 2, 3, 5, 4, 4, 1.0),
        _lookup_case(gen, "more keys than queries (Lq=4, Lk=7, D=3, Dv=2)", 3, 4, 7, 3, 2, 0.5),
        _lookup_case(gen, "batch of one", 1, 2, 6, 4, 4, 2.0),
        _lookup_case(gen, "float64", 2, 3, 4, 5, 5, 0.7, dtype=torch.float64),
        _lookup_case(gen, "one query, low temperature", 2, 1, 5, 4, 3, 0.2),
    ]


def _hard(q, k, v, t):
    return attention.hard_lookup(q, k, v)


def _lookup_variant(score_dim=-1, temp=lambda s, t: s / t, pool="values"):
    def variant(q, k, v, t):
        weights = torch.softmax(temp(q @ k.transpose(-2, -1), t), dim=score_dim)
        return weights @ (v if pool == "values" else k), weights
    return variant


def _sqrt_d_variant(with_temperature):
    def variant(q, k, v, t):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        weights = torch.softmax(scores / t if with_temperature else scores, dim=-1)
        return weights @ v, weights
    return variant


register(Exercise(
    id="soft-lookup",
    title="Soft lookup",
    reference=attention.soft_lookup,
    cases=_lookup_cases,
    outputs=("context", "weights"),
    diagnose_first="weights",
    mistakes=(
        Mistake("the softmax ran over the queries instead of the keys",
                "each query's weights must sum to 1 over the keys: softmax over the last axis (dim=-1) "
                "of the (B, Lq, Lk) scores.", _lookup_variant(score_dim=-2)),
        Mistake("the weights averaged the keys instead of the values",
                "the output is weights @ values; the keys are only for scoring.", _lookup_variant(pool="keys")),
        Mistake("the scores were multiplied by the temperature",
                "divide the scores by T before the softmax.", _lookup_variant(temp=lambda s, t: s * t)),
        Mistake("the temperature was ignored", "divide the scores by T before the softmax.",
                _lookup_variant(temp=lambda s, t: s)),
        Mistake("the scores were scaled by 1/√D",
                "this exercise divides the scores by the temperature T only; the 1/√D of scaled dot-product "
                "attention comes in the next chapter.",
                _sqrt_d_variant(with_temperature=False), _sqrt_d_variant(with_temperature=True)),
        Mistake("this is a hard lookup (one-hot weights)",
                "keep every key's softmax weight instead of picking the best key with argmax.", _hard),
    ),
))


# --- 3. attention pooling (Nadaraya-Watson) ----------------------------------------------------------

def _pool_case(gen, label, lq, lk, width, dtype=torch.float32):
    x = 5 * torch.rand(lk, generator=gen, dtype=torch.float64)
    y = torch.sin(x) + 0.3 * torch.randn(lk, generator=gen, dtype=torch.float64)
    q = 5 * torch.rand(lq, generator=gen, dtype=torch.float64)
    return Case(label, (q.to(dtype), x.to(dtype), y.to(dtype), width))


def _pool_cases(gen):
    return [
        _pool_case(gen, "random points (Lq=6, Lk=10, σ=0.7)", 6, 10, 0.7),
        _pool_case(gen, "one query", 1, 8, 1.5),
        _pool_case(gen, "more queries than keys", 9, 4, 0.5),
        _pool_case(gen, "float64", 5, 12, 0.4, dtype=torch.float64),
        _pool_case(gen, "wide kernel (σ=3)", 4, 10, 3.0),
    ]


def _pool_variant(exponent=lambda d, w: -(d**2) / (2 * w**2), normalise=True, dim=-1):
    def variant(q, k, v, w):
        scores = exponent(q[:, None] - k[None, :], w)
        weights = torch.softmax(scores, dim=dim) if normalise else torch.exp(scores)
        return weights @ v, weights
    return variant


register(Exercise(
    id="kernel-regression",
    title="Attention pooling (Nadaraya-Watson)",
    reference=pooling.kernel_regression,
    cases=_pool_cases,
    outputs=("estimates", "weights"),
    diagnose_first="weights",
    mistakes=(
        Mistake("the minus sign is missing: the farthest keys get the most weight",
                "the score is -(x - x_i)² / (2σ²): closer keys must score higher.",
                _pool_variant(exponent=lambda d, w: d**2 / (2 * w**2))),
        Mistake("the kernel width is applied wrongly",
                "divide the squared distance by 2σ² (σ squared, times 2).",
                _pool_variant(exponent=lambda d, w: -(d**2) / (2 * w)),
                _pool_variant(exponent=lambda d, w: -(d**2) / w**2),
                _pool_variant(exponent=lambda d, w: -(d**2) / w),
                _pool_variant(exponent=lambda d, w: -(d**2) / 2)),
        Mistake("the distance is not squared",
                "the Gaussian kernel uses the squared distance (x - x_i)², not |x - x_i|.",
                _pool_variant(exponent=lambda d, w: -d.abs() / (2 * w**2))),
        Mistake("the weights are not normalised",
                "divide each query's kernel values by their sum over the keys (a softmax does it for you).",
                _pool_variant(normalise=False)),
        Mistake("the softmax ran over the queries instead of the keys",
                "normalise each query's row over the keys: softmax over the last axis of the (Lq, Lk) scores.",
                _pool_variant(dim=0)),
    ),
))
