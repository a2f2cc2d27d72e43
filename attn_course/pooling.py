"""Attention pooling: Nadaraya-Watson kernel regression (Nadaraya 1964; Watson 1964).

To predict y at a query point x, average the training targets y_i with weights that say how close x is to
each training input x_i. With a Gaussian kernel of width σ the weights are a softmax:

    α(x, x_i) = softmax_i( -(x - x_i)² / (2σ²) ),    f(x) = Σ_i α(x, x_i) y_i

so this is attention with queries x, keys x_i, values y_i and a fixed (not learned) scoring function.
"""

from __future__ import annotations

import math

import torch

from . import _checks


def gaussian_scores(queries: torch.Tensor, keys: torch.Tensor, width: float) -> torch.Tensor:
    """Scores ``-(x - x_i)² / (2 σ²)`` for every query and key. queries: (Lq,), keys: (Lk,) -> (Lq, Lk)."""
    _checks.tensor("queries", queries, ndim=1)
    _checks.tensor("keys", keys, ndim=1)
    _checks.positive("width", width)
    if queries.dtype != keys.dtype:
        raise TypeError(f"queries and keys must share one dtype, got {queries.dtype} and {keys.dtype}")
    denominator = 2.0 * width * width  # Python float: inf or 0.0 instead of an exception at the extremes
    info = torch.finfo(queries.dtype)
    if not info.tiny <= denominator <= info.max:
        low, high = math.sqrt(info.tiny / 2), math.sqrt(info.max / 2)
        raise ValueError(f"width must be between {low:.1e} and {high:.1e} for {queries.dtype} inputs "
                         f"(2σ² must be representable), got {width}")
    diff = queries[:, None] - keys[None, :]  # (Lq, 1) - (1, Lk) -> (Lq, Lk)
    return -(diff**2) / denominator


def kernel_regression(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                      width: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Nadaraya-Watson estimate with a Gaussian kernel of width ``width`` (σ).

    queries: (Lq,) points to predict at; keys: (Lk,) training inputs; values: (Lk,) training targets.
    Returns estimates (Lq,) and weights (Lq, Lk), each row summing to 1.
    """
    _checks.tensor("values", values, ndim=1)
    _checks.tensor("keys", keys, ndim=1)
    _checks.same_size("keys", keys, 0, "values", values, 0, "length (one value per key)")
    scores = gaussian_scores(queries, keys, width)  # (Lq, Lk)
    # Shifting each row so its best score is 0 changes no weight, but keeps a very narrow kernel from
    # underflowing every score to -inf (0/0 = NaN): the nearest key then simply takes all the weight.
    scores = scores - scores.max(dim=-1, keepdim=True).values
    weights = torch.softmax(scores, dim=-1)
    return weights @ values, weights
