"""Masks and the masked softmax.

One convention everywhere, the one ``torch.nn.functional.scaled_dot_product_attention`` uses: a **boolean**
mask where ``True`` means *may attend*. Masked scores are filled with ``torch.finfo(dtype).min`` (never a
magic ``-1e9``, which overflows to ``-inf`` in fp16), and a row with nothing to attend to gets all-zero
weights instead of NaN.
"""

from __future__ import annotations

import torch

from . import _checks


def check_mask(mask, scores: torch.Tensor) -> torch.Tensor:
    """Check that ``mask`` is boolean and broadcasts to ``scores``; return it unchanged."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a boolean torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(
            f"mask must have dtype torch.bool (True = may attend), got {mask.dtype}; "
            "convert with mask.bool() if 1 means 'may attend'"
        )
    try:
        shape = torch.broadcast_shapes(mask.shape, scores.shape)
    except RuntimeError:
        shape = None
    if shape != scores.shape:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the scores' shape {tuple(scores.shape)}"
        )
    return mask


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None = None, dim: int = -1) -> torch.Tensor:
    """Softmax of ``scores`` over ``dim``, giving weight exactly 0 where ``mask`` is False.

    scores: (..., Lq, Lk); mask: boolean, broadcastable to scores, True = may attend.
    A row whose keys are all masked gets zeros, not NaN. Works in fp16 and bf16.
    """
    _checks.tensor("scores", scores)
    if mask is None:
        return torch.softmax(scores, dim=dim)
    check_mask(mask, scores)
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(filled, dim=dim)
    # A fully-masked row softmaxes to uniform weights over nothing: zero it instead.
    return weights.masked_fill(~mask, 0.0)
