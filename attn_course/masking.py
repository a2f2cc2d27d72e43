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
    if mask.device != scores.device:
        raise ValueError(
            f"mask is on {mask.device} but the scores are on {scores.device}; build the mask on the scores' "
            "device, e.g. causal_mask(L, device=scores.device)"
        )
    return mask


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None = None, dim: int = -1) -> torch.Tensor:
    """Softmax of ``scores`` over ``dim``, giving weight exactly 0 where ``mask`` is False.

    ``weights_ij = m_ij exp(s_ij) / sum_k m_ik exp(s_ik)``, and 0 for a row with no allowed key (m = 0
    everywhere). Vaswani et al. (2017, section 3.2.3) set the scores of illegal connections to -inf before
    the softmax; here they are set to ``torch.finfo(scores.dtype).min`` instead, the
    most negative finite number of the dtype, so a fully-masked row cannot turn into 0/0 = NaN.

    scores: (..., Lq, Lk); mask: boolean, broadcastable to scores, on the same device, True = may attend.
    Returns weights of the scores' shape, dtype and device. Works in fp16 and bf16, and its gradient is
    finite (zero on masked scores) even for a fully-masked row.
    """
    _checks.tensor("scores", scores)
    if mask is None:
        return torch.softmax(scores, dim=dim)
    check_mask(mask, scores)
    # finfo.min, not -1e9 (becomes -inf in fp16) nor -inf (a fully-masked row would give 0/0 = NaN):
    # exp(finfo.min - max) is exactly 0 whenever the row has one allowed score.
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(filled, dim=dim)
    # A fully-masked row softmaxes to uniform weights over keys it may not see: zero it instead.
    return weights.masked_fill(~mask, 0.0)


# --- building masks ------------------------------------------------------------------------------------

def _device_of(device, *tensors):
    for t in tensors:
        if isinstance(t, torch.Tensor):
            return t.device
    return torch.device("cpu") if device is None else torch.device(device)


def padding_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Key padding mask from sequence lengths: ``mask[b, 0, j] = j < lengths[b]``.

    lengths: (B,) integers in [0, max_len]; max_len >= 0 (a Python or NumPy int, or a 0-d integer tensor such
    as ``lengths.max()``) defaults to ``lengths.max()``; pass the scores' ``Lk`` when the keys run longer than
    the longest sequence. Returns a boolean (B, 1, Lk) mask with Lk = max_len, True on real tokens, ready to
    broadcast against scores (B, Lq, Lk).
    For scores with heads, (B, H, Lq, Lk), add a head axis: ``padding_mask(lengths)[:, None]``.
    """
    _checks.tensor("lengths", lengths, ndim=1, kind="int")
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    max_len = _checks.number("max_len", max_len, integer=True, minimum=0, strict=False)  # now a Python int
    if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > max_len):
        raise ValueError(f"lengths must lie between 0 and max_len={max_len}, got {lengths.tolist()}")
    positions = torch.arange(max_len, device=lengths.device)  # (Lk,)
    return (positions[None, :] < lengths[:, None])[:, None, :]  # (B, 1, Lk)


def causal_mask(lq: int, lk: int | None = None, *, bottom_right: bool = False, device=None) -> torch.Tensor:
    """Causal mask: query i may attend key j only if ``j <= i`` (nothing from the future).

    Returns a boolean (Lq, Lk) mask (Lk defaults to Lq; either may be 0, giving an empty mask, as
    ``padding_mask`` allows max_len=0), the lower triangle, aligned top-left as in
    ``F.scaled_dot_product_attention(..., is_causal=True)``: query i sees keys 0..i also when Lq != Lk.
    With a KV cache the queries are the *last* Lq positions and the triangle must be aligned bottom-right
    instead: ``bottom_right=True`` lets query i see keys 0..i + Lk - Lq
    (``torch.nn.attention.bias.causal_lower_right``).
    The decoder's self-attention of Vaswani et al. (2017, section 3.2.3) uses it so that a position is
    predicted from the positions before it only.
    """
    lq = _checks.number("lq", lq, integer=True, minimum=0, strict=False)
    lk = lq if lk is None else _checks.number("lk", lk, integer=True, minimum=0, strict=False)
    device = _device_of(device)
    if not isinstance(bottom_right, bool):
        raise TypeError(f"bottom_right must be True or False, got {type(bottom_right).__name__}")
    i = torch.arange(lq, device=device)[:, None]
    j = torch.arange(lk, device=device)[None, :]
    return j <= i + (lk - lq if bottom_right else 0)


def window_mask(lq: int, lk: int | None = None, *, window: int, causal: bool = False,
                device=None) -> torch.Tensor:
    """Sliding-window (local) mask: query i may attend key j only if ``|i - j| < window``; with
    ``causal=True`` only if ``0 <= i - j < window``.

    So ``window`` counts the positions a query sees on each side, itself included: window=1 is "only
    yourself", and a window as long as the sequence is global (or plain causal) attention. A causal query
    sees ``window`` keys, a bidirectional one up to ``2 * window - 1``. Returns a boolean (Lq, Lk) mask
    (Lk defaults to Lq; either may be 0, giving an empty mask).
    Longformer (Beltagy et al. 2020) uses the bidirectional window, Mistral 7B (Jiang et al. 2023) a
    causal one (the paper says "positions between i - W and i"; implementations differ by one at the edge).
    """
    lq = _checks.number("lq", lq, integer=True, minimum=0, strict=False)
    lk = lq if lk is None else _checks.number("lk", lk, integer=True, minimum=0, strict=False)
    window = _checks.number("window", window, integer=True, minimum=1, strict=False)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be True or False, got {type(causal).__name__}")
    device = _device_of(device)
    # Compare (Lq, 1) bounds with a (1, Lk) row: only boolean (Lq, Lk) tensors are built, never an int64
    # matrix of offsets (8 bytes per entry, eight times the mask itself).
    i = torch.arange(lq, device=device)[:, None]
    j = torch.arange(lk, device=device)[None, :]
    upper = j <= i if causal else j < i + window
    return (j > i - window) & upper


def combine_masks(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Combine boolean masks: a key may be attended only where *every* mask allows it (logical AND).

    ``None`` entries (no mask) are skipped; the result has the masks' broadcast shape, or is None when
    every entry is None. E.g. ``combine_masks(padding_mask(lengths), causal_mask(L))`` -> (B, L, L).
    With two masks or more the result is a new tensor; with a single one it is that mask itself, not a copy
    (no memory spent on the common ``combine_masks(mask, None)``): ``.clone()`` it before writing into it.
    """
    result = None
    shapes = []
    for index, mask in enumerate(masks):
        if mask is None:
            continue
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError(f"mask {index} must be a boolean torch.Tensor (True = may attend), got {got}")
        if result is not None and mask.device != result.device:
            raise ValueError(f"masks must be on one device, got mask {index} on {mask.device} and the ones "
                             f"before it on {result.device}")
        shapes.append(tuple(mask.shape))
        try:
            result = mask if result is None else result & mask
        except RuntimeError:
            shown = ", ".join(map(str, shapes))
            raise ValueError(f"masks of shapes {shown} do not broadcast together") from None
    return result
