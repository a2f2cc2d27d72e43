"""Chapter 3's mask editor: a padding, causal and window mask drawn beside the attention weights it leaves."""

from __future__ import annotations

import ipywidgets as widgets
import torch
from matplotlib.patches import Rectangle

from .. import _checks, viz
from ..masking import causal_mask, combine_masks, masked_softmax, padding_mask, window_mask
from ._explorer import _SLIDER_STYLE, Explorer

__all__ = ["MASK_EDITOR_WORDS", "mask_editor"]

MASK_EDITOR_WORDS = ("the", "black", "cat", "sat", "on", "the", "warm", "mat", "by", "the", "open", "door")


def editor_mask(length: int, valid_length: int, causal: bool, window: int) -> torch.Tensor:
    """The (L, L) mask the editor shows: padding after ``valid_length`` real tokens, AND causal when asked,
    AND a window of ``window`` positions on each side when ``window`` >= 1 (0 = no window)."""
    padding = padding_mask(torch.tensor([valid_length]), length)[0]  # (1, Lk): one row for every query
    return combine_masks(
        padding.expand(length, length),
        causal_mask(length) if causal else None,
        window_mask(length, window=window) if window else None,
    )


def mask_editor(length: int = 8, valid_length: int = 5, causal: bool = False, window: int = 0,
                seed: int = 0) -> Explorer:
    """Controls for a padding length, a causal toggle and a window size; draws the mask and the attention
    weights of fixed random scores under it, side by side.

    One sequence of ``length`` tokens (2 to 12): ``valid_length`` real words, then PAD. ``window`` 0 means
    no window. state: ``mask`` (L, L) bool, ``scores`` (L, L), ``weights`` (L, L), ``tokens``,
    ``empty_rows`` (queries left with no key: their weights are all 0), ``allowed`` (pairs allowed).
    """
    _checks.number("length", length, integer=True, minimum=2, strict=False)
    if length > len(MASK_EDITOR_WORDS):
        raise ValueError(f"length must be <= {len(MASK_EDITOR_WORDS)}, got {length}")
    _checks.number("valid_length", valid_length, integer=True, minimum=1, strict=False)
    if valid_length > length:
        raise ValueError(f"valid_length must be between 1 and length={length}, got {valid_length}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be True or False, got {type(causal).__name__}")
    _checks.number("window", window, integer=True, minimum=0, strict=False)
    if window > length:
        raise ValueError(f"window must be between 0 (off) and length={length}, got {window}")
    _checks.number("seed", seed, integer=True, minimum=0, strict=False)
    scores = 1.5 * torch.randn(length, length, generator=torch.Generator().manual_seed(seed))  # (Lq, Lk)

    def draw(fig, valid_length, causal, window):
        mask = editor_mask(length, valid_length, causal, window)
        weights = masked_softmax(scores, mask)
        tokens = list(MASK_EDITOR_WORDS[:valid_length]) + ["PAD"] * (length - valid_length)
        empty_rows = [i for i in range(length) if not bool(mask[i].any())]
        ax_mask, ax_weights = fig.subplots(1, 2)
        parts = ["padding"] + (["causal"] if causal else []) + ([f"window {window}"] if window else [])
        viz.heatmap(mask.float(), tokens, tokens, ax=ax_mask, cmap="Blues", colorbar=False,
                    title=f"mask: {' & '.join(parts)}\n(blue = may attend, {int(mask.sum())} of {length**2})")
        note = f"{len(empty_rows)} row(s) with no key: all 0" if empty_rows else "every row sums to 1"
        viz.heatmap(weights, tokens, tokens, ax=ax_weights, annotate=True, colorbar=False,
                    title=f"attention weights\n({note})")
        for row in empty_rows:  # outline the queries left with nothing to attend to
            ax_weights.add_patch(Rectangle((-0.5, row - 0.5), length, 1, fill=False, ec="tab:red", lw=2))
        for ax in (ax_mask, ax_weights):
            ax.tick_params(axis="x", labelrotation=90, labelsize=8)
            ax.tick_params(axis="y", labelsize=8)
        ax_mask.set_xticks([x - 0.5 for x in range(1, length)], minor=True)  # cell borders
        ax_mask.set_yticks([y - 0.5 for y in range(1, length)], minor=True)
        ax_mask.grid(which="minor", color="lightgray", lw=0.5)
        ax_mask.tick_params(which="minor", length=0)
        fig.tight_layout()
        return {"mask": mask, "scores": scores, "weights": weights, "tokens": tokens,
                "empty_rows": empty_rows, "allowed": int(mask.sum())}

    window_options = [("off", 0)] + [(str(w), w) for w in range(1, length + 1)]
    controls = {
        "valid_length": widgets.IntSlider(value=valid_length, min=1, max=length, step=1, style=_SLIDER_STYLE,
                                          description="real tokens (the rest is PAD)"),
        "causal": widgets.Checkbox(value=causal, description="causal (no peeking ahead)"),
        "window": widgets.SelectionSlider(options=window_options, value=window, style=_SLIDER_STYLE,
                                          description="window (each side)"),
    }
    return Explorer(controls, draw, figsize=(9.0, 4.4))
