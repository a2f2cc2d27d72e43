"""The functional core: attention as a soft lookup.

A dictionary lookup returns the value whose key equals the query. Attention relaxes it: score every key
against the query, turn the scores into weights that are positive and sum to 1 (a softmax), and return the
weighted average of the values. Shapes: q (..., Lq, D), k (..., Lk, D), v (..., Lk, Dv); the leading
dimensions (B, or B and H) broadcast.
"""

from __future__ import annotations

import math

import torch

from . import _checks
from .masking import masked_softmax


def softmax(scores: torch.Tensor, temperature: float = 1.0, dim: int = -1) -> torch.Tensor:
    """Softmax with a temperature: ``exp(s_i / T) / sum_j exp(s_j / T)`` over ``dim``.

    scores: any shape. Low T sharpens the weights towards the argmax (a hard choice); high T flattens them
    towards uniform. ``torch.softmax`` subtracts the row maximum first, so large scores do not overflow.
    """
    _checks.tensor("scores", scores)
    _checks.positive("temperature", temperature)
    return torch.softmax(scores / temperature, dim=dim)


def _check_qkv(q, k, v):
    for name, x in (("q", q), ("k", k), ("v", v)):
        _checks.tensor(name, x)
        if x.dim() < 2:
            raise ValueError(f"{name} must have at least 2 dimensions (..., L, size), got shape {tuple(x.shape)}")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, k and v must share one dtype, got {q.dtype}, {k.dtype} and {v.dtype}")
    _checks.same_size("q", q, -1, "k", k, -1, "feature size D (last dimension)")
    _checks.same_size("k", k, -2, "v", v, -2, "number of keys Lk (second-to-last dimension)")
    try:
        torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the leading (batch) dimensions of q, k and v must broadcast, got shapes "
                         f"{tuple(q.shape)}, {tuple(k.shape)} and {tuple(v.shape)}") from None


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
           scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention, the readable reference (Vaswani et al. 2017, eq. 1).

    ``weights = softmax(q kᵀ · scale)`` with ``scale = 1/√D`` by default; ``context = weights v``.

    q: (..., Lq, D), k: (..., Lk, D), v: (..., Lk, Dv); mask: boolean, True = may attend, broadcastable to
    (..., Lq, Lk). Returns context (..., Lq, Dv) and weights (..., Lq, Lk).
    """
    _check_qkv(q, k, v)
    if scale is None:
        scale = 1.0 / math.sqrt(q.size(-1))
    _checks.positive("scale", scale)
    scores = q @ k.transpose(-2, -1) * scale  # (..., Lq, D) @ (..., D, Lk) -> (..., Lq, Lk)
    weights = masked_softmax(scores, mask)
    return weights @ v, weights  # (..., Lq, Lk) @ (..., Lk, Dv) -> (..., Lq, Dv)


def soft_lookup(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, temperature: float = 1.0,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft dictionary lookup with dot-product similarity and a temperature.

    ``weights = softmax(query · keysᵀ / T)`` over the keys; ``context = weights · values``.
    query: (..., Lq, D), keys: (..., Lk, D), values: (..., Lk, Dv) -> context (..., Lq, Dv),
    weights (..., Lq, Lk). The same as ``attend`` with ``scale = 1/T``.
    """
    _checks.positive("temperature", temperature)
    return attend(query, keys, values, mask=mask, scale=1.0 / temperature)


def hard_lookup(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard lookup: return the value of the single best-matching key (largest dot product).

    query: (..., Lq, D), keys: (..., Lk, D), values: (..., Lk, Dv) -> context (..., Lq, Dv) and one-hot
    weights (..., Lq, Lk). The limit of ``soft_lookup`` as the temperature goes to 0; its weights have no
    useful gradient, which is why attention is usually soft.
    """
    _check_qkv(query, keys, values)
    scores = query @ keys.transpose(-2, -1)  # (..., Lq, Lk)
    best = scores.argmax(dim=-1)  # (..., Lq)
    weights = torch.nn.functional.one_hot(best, keys.size(-2)).to(values.dtype)
    return weights @ values, weights
