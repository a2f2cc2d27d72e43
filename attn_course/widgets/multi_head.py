"""Chapter 9's head explorer: pick a head and an input example, see where that head looks."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import ipywidgets as widgets
import torch
from matplotlib.patches import Rectangle

from .. import _checks, viz
from ._explorer import _SLIDER_STYLE, Explorer

__all__ = ["AVERAGE", "head_explorer"]

AVERAGE = "average"  # the head control's value for the mean over heads (what nn.MultiheadAttention returns)


def _labels(name: str, tokens, count: int, length: int) -> list[list[str]]:
    """One list of ``length`` labels per example: the tokens given, or the positions 0..length-1."""
    if tokens is None:
        return [[str(i) for i in range(length)] for _ in range(count)]
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.tolist()
    if len(tokens) != count:
        raise ValueError(f"{name} must hold one sequence per example ({count}), got {len(tokens)}")
    labels = [[str(t) for t in row] for row in tokens]
    for row in labels:
        if len(row) != length:
            raise ValueError(f"each sequence in {name} must have {length} tokens (the weights' size along that "
                             f"axis), got {len(row)}")
    return labels


def head_explorer(weights: torch.Tensor, tokens: Sequence | torch.Tensor | None = None,
                  key_tokens: Sequence | torch.Tensor | None = None, *, head: int = 0, example: int = 0,
                  head_names: Sequence[str] | None = None, annotate: bool | None = None) -> Explorer:
    """A head picker and an example slider over the attention weights of a multi-head layer.

    weights: (B, H, Lq, Lk), every head's weights, e.g. ``MultiHeadAttention(..., return_weights=True,
    average_weights=False)``'s; for one example's (H, Lq, Lk), pass ``weights[None]``. A 3-D tensor is
    refused, since it could be one example's heads or a batch of head-averaged weights. tokens: the query
    tokens, one sequence of Lq labels per example (a (B, Lq) tensor of ids works); key_tokens: the keys'
    (default: ``tokens``, as in self-attention). head: the head shown first, 0..H-1 or ``AVERAGE``;
    example: the example shown first; head_names: labels for the heads (default "head 0", ...); annotate:
    print the weights in the cells (default: when Lk <= 10).

    Draws the chosen head's (Lq, Lk) weights large, and every head (plus their average) small beside it,
    all on one colour scale from 0 to 1, so that the average's blur shows as paler colours.
    state: ``head`` (an int, or ``AVERAGE``), ``example``, ``weights`` (Lq, Lk) shown, ``tokens``,
    ``key_tokens``, ``focus`` (for each query, the key with the largest weight).
    """
    if isinstance(weights, torch.Tensor) and weights.dim() == 3:
        raise ValueError(
            f"weights must be every head's weights, (B, H, Lq, Lk), got 3 dimensions {tuple(weights.shape)}. "
            "Head-averaged weights (B, Lq, Lk) have no heads to pick: ask for "
            "return_weights=True, average_weights=False. One example's (H, Lq, Lk): pass weights[None].")
    _checks.tensor("weights", weights, ndim=4)
    weights = weights.detach().cpu().float()
    count, heads, lq, lk = weights.shape
    if count == 0 or lq == 0 or lk == 0:
        raise ValueError(f"weights must hold at least one example, query and key, got shape {tuple(weights.shape)}")
    queries = _labels("tokens", tokens, count, lq)
    keys = _labels("key_tokens", key_tokens if key_tokens is not None else (tokens if lq == lk else None),
                   count, lk)
    if head_names is None:
        head_names = [f"head {h}" for h in range(heads)]
    elif len(head_names) != heads:
        raise ValueError(f"head_names must name each of the {heads} heads, got {len(head_names)} names")
    if not (isinstance(head, str) and head == AVERAGE):
        if isinstance(head, bool) or not isinstance(head, Integral) or not 0 <= head < heads:
            raise ValueError(f"head must be a head number between 0 and {heads - 1}, or AVERAGE "
                             f"(widgets.AVERAGE = {AVERAGE!r}) for the mean over the heads, got {head!r}")
        head = int(head)
    _checks.number("example", example, integer=True, minimum=0, strict=False)
    if example >= count:
        raise ValueError(f"example must be between 0 and {count - 1}, got {example}")
    if annotate is None:
        annotate = lk <= 10
    names = {**dict(enumerate(head_names)), AVERAGE: "average of the heads"}

    def draw(fig, head, example):
        chosen = weights[example].mean(dim=0) if head == AVERAGE else weights[example, head]  # (Lq, Lk)
        grid = fig.add_gridspec(heads + 1, 2, width_ratios=[3.2, 1], hspace=0.35)
        ax = fig.add_subplot(grid[:, 0])
        viz.heatmap(chosen, queries[example], keys[example], ax=ax, annotate=annotate, colorbar=False,
                    title=f"{names[head]}, example {example}")
        ax.images[0].set_clim(0.0, 1.0)  # weights are in [0, 1]: one scale for every head and the average
        ax.tick_params(axis="x", labelrotation=90)
        for row, option in enumerate([*range(heads), AVERAGE]):  # every head, small, the chosen one framed
            small = fig.add_subplot(grid[row, 1])
            thumbnail = weights[example].mean(dim=0) if option == AVERAGE else weights[example, option]
            small.imshow(thumbnail.numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
            small.set_xticks([])
            small.set_yticks([])
            small.set_ylabel("avg" if option == AVERAGE else str(option), rotation=0, ha="right",
                             va="center", fontsize=8)
            if option == head:
                small.add_patch(Rectangle((-0.5, -0.5), lk, lq, fill=False, ec="tab:red", lw=3))
        return {"head": head, "example": example, "weights": chosen, "tokens": queries[example],
                "key_tokens": keys[example], "focus": chosen.argmax(dim=-1).tolist()}

    options = [(name, h) for h, name in enumerate(head_names)] + [("average of the heads", AVERAGE)]
    controls = {
        "head": widgets.Dropdown(options=options, value=head, description="head", style=_SLIDER_STYLE),
        "example": widgets.IntSlider(value=example, min=0, max=count - 1, step=1, description="example",
                                     style=_SLIDER_STYLE),
    }
    return Explorer(controls, draw, figsize=(8.0, max(3.6, 0.9 * (heads + 1))))
