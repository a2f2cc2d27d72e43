"""Attention pooling: Nadaraya-Watson kernel regression (Nadaraya 1964; Watson 1964).

To predict y at a query point x, average the training targets y_i with weights that say how close x is to
each training input x_i. With a Gaussian kernel of width σ the weights are a softmax:

    α(x, x_i) = softmax_i( -(x - x_i)² / (2σ²) ),    f(x) = Σ_i α(x, x_i) y_i

so this is attention with queries x, keys x_i, values y_i and a fixed (not learned) scoring function.
"""

from __future__ import annotations

import torch

from . import _checks


def gaussian_scores(queries: torch.Tensor, keys: torch.Tensor, width: float) -> torch.Tensor:
    """Scores ``-(x - x_i)² / (2 σ²)`` for every query and key. queries: (Lq,), keys: (Lk,) -> (Lq, Lk)."""
    _checks.tensor("queries", queries, ndim=1)
    _checks.tensor("keys", keys, ndim=1)
    _checks.positive("width", width)
    diff = queries[:, None] - keys[None, :]  # (Lq, 1) - (1, Lk) -> (Lq, Lk)
    return -(diff**2) / (2 * width**2)


def kernel_regression(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                      width: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Nadaraya-Watson estimate with a Gaussian kernel of width ``width`` (σ).

    queries: (Lq,) points to predict at; keys: (Lk,) training inputs; values: (Lk,) training targets.
    Returns estimates (Lq,) and weights (Lq, Lk), each row summing to 1.
    """
    _checks.tensor("values", values, ndim=1)
    _checks.tensor("keys", keys, ndim=1)
    _checks.same_size("keys", keys, 0, "values", values, 0, "length (one value per key)")
    weights = torch.softmax(gaussian_scores(queries, keys, width), dim=-1)  # (Lq, Lk)
    return weights @ values, weights
